"""Training: `train`, the one entry point, and the session that runs its loop.

`train` owns the run directory's checkpoints, `metrics.jsonl`, `tensorboard/` and `loss.png`;
`musicgen.runs.checkpoint` owns the directory's layout. The step, loss and schedule are in
`musicgen.training.steps`, the figures and the loss plot in `musicgen.runs.metrics`, the progress
line and its clock in `musicgen.training.progress`, signals and fault messages in
`musicgen.training.faults`.

The corpus comes split (`musicgen.data.tune_split.SplitCorpus`: tunes in memory or the encoded
cache) and `musicgen.training.streams` turns it into tf.data batches. Over 400 lines: the session
(about 320 lines) is one object's state, the loop and what it saves, records and validates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from musicgen.config import RunConfig, check_memory
from musicgen.data.tune_split import SplitCorpus
from musicgen.data.vocab import Vocabulary
from musicgen.errors import (
    CheckpointError,
    MusicgenError,
    TrainingError,
    VocabularyError,
    print_to_stderr,
)
from musicgen.evaluation.validity import ValiditySampler
from musicgen.models.barclock import clock_ids
from musicgen.runs.bundled import refuse_training_into
from musicgen.runs.checkpoint import (
    RunPaths,
    checkpoint_manager,
    latest_checkpoint,
    make_checkpoint,
    prepare_run_dir,
    remove_leftovers,
    sync_checkpoint,
    usable_checkpoint,
)
from musicgen.runs.metrics import METRICS_EVERY, MetricsLog, read_metrics, write_loss_plot
from musicgen.runs.rundir import RunLock, check_run_dir
from musicgen.runs.runfiles import load_run, write_corpus_record
from musicgen.runs.weights import build_model_for
from musicgen.tfsetup import describe_devices, import_tensorflow, set_mixed_precision
from musicgen.training.best import BestCheckpoint, BestTracker
from musicgen.training.distribute import Distribution, make_distribution
from musicgen.training.faults import (
    StopSignals,
    TrainingInterrupted,
    check_losses,
    checkpoint_error,
    kept_message,
    remove_partial_checkpoint,
    write_failure,
)
from musicgen.training.finetune import (
    ParentWeights,
    check_same_model,
    extended_vocabulary,
    find_parent,
    load_parent_weights,
    read_parent_weights,
)
from musicgen.training.progress import Progress, Timing, validation_line
from musicgen.training.steps import distributed_train_step, eval_step, make_optimizer
from musicgen.training.streams import Streams

tf = import_tensorflow()
# After import_tensorflow, which quiets TensorFlow's start-up logging.
import keras  # noqa: E402

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What one call to `train` did and where the run's files are.

    Attributes:
        step: the step the run has reached.
        steps_run: steps taken by this call (0 when the run had already reached its target).
        train_loss: mean training cross-entropy in nats per character over the last logged steps.
        train_bits_per_char: the same in bits.
        val_bits_per_char: the last validation figure, None without validation tunes.
        chars_per_sec: training throughput of this call (the first, tracing, step and the time spent
            evaluating and checkpointing left out).
        elapsed: seconds this call took.
        device: the devices trained on, as `tfsetup.describe_devices` names them.
        parameters: the model's parameter count.
    """

    step: int
    steps_run: int
    train_loss: float | None
    train_bits_per_char: float | None
    val_bits_per_char: float | None
    chars_per_sec: float | None
    elapsed: float
    device: str
    parameters: int
    run_dir: Path
    checkpoint: str | None
    metrics_path: Path
    plot_path: Path | None
    tensorboard_dir: Path
    best_step: int | None = None  # the step of the best validation, kept in RUN/best/
    best_val_bits_per_char: float | None = None
    best_checkpoint: str | None = None
    stopped: str | None = None  # why the run stopped before its target step (--patience)


def train(
    config: RunConfig,
    corpus: SplitCorpus,
    run_dir: Path,
    *,
    resume: bool = False,
    corpus_summary: str = "",
    progress: bool = True,
    log: Callable[[str], object] | None = None,
    strategy: str = "auto",
    on_step: Callable[[int, dict], object] | None = None,
) -> TrainResult:
    """Trains a model on `corpus` and keeps everything in `run_dir`.

    Args:
        config: the run's settings; `config.model.vocab_size` is filled in from the vocabulary.
        corpus: the tunes, split into training and validation as `config.data` says:
            `tune_split.split_corpus(tunes, config.data)` for tunes in memory, or
            `encoded.load_encoded_corpus(...)` with the same settings, whose memory-mapped
            streams a large corpus trains from without being held in memory.
        run_dir: the run directory (see `musicgen.runs.checkpoint`).
        resume: continue from the run's last checkpoint up to `config.train.steps` in total.
            With `config.init` (a new run), the run starts from the parent's weights, its
            vocabulary extended by the tunes' new characters (`musicgen.training.finetune`);
            config.json records the parent's step and those characters.
        corpus_summary: the corpus loader's one-line summary, recorded in corpus.json.
        progress: show a progress bar on stderr.
        log: where one-line messages go; defaults to stderr.
        strategy: one of `distribute.STRATEGIES`. Under "multiworker" every process of the
            cluster calls `train` with the same arguments; only the chief writes into `run_dir`.
        on_step: called after each step with the step reached and a copy of the latest figures
            recorded (metrics.jsonl's fields; empty before the first record). Its time does not
            count as training time. A KeyboardInterrupt it raises stops the run as Ctrl-C does,
            the step reached saved first.

    Returns:
        A TrainResult.

    Raises:
        CorpusError: too few tunes or characters for one training window.
        VocabularyError: on resume, the tunes hold characters the run's vocabulary lacks.
        CheckpointError: the run directory refuses a new run, cannot be resumed, or a checkpoint
            cannot be written (disk full, folder not writable); earlier checkpoints stay intact.
        TrainingError: the loss or the weights became NaN or infinite; nothing past the last good
            checkpoint is saved.
        TrainingInterrupted: SIGINT (Ctrl-C) or SIGTERM arrived; a checkpoint of the step reached
            was saved first, and `resume=True` continues from it.
    """
    started = time.monotonic()
    log = log or print_to_stderr
    # First: a multi-worker strategy must set up TensorFlow's runtime itself.
    distribution = make_distribution(strategy)
    _check_distribution(config, distribution)
    paths = RunPaths(Path(run_dir))
    refuse_training_into(paths.root)
    corpus.check_data(config.data)
    _check_window_fits(config)
    parent, init = _fine_tuning(config, paths, resume, log)
    vocab = _vocabulary(corpus, paths, resume, parent)
    if parent is not None and not resume:
        init = parent.init_config(vocab)
    bar_ids = clock_ids(vocab) if config.model.bar_clock else ()
    model_config = dataclasses.replace(config.model, vocab_size=len(vocab), bar_ids=bar_ids)
    config = dataclasses.replace(config, model=model_config, init=init)
    check_memory(config)
    streams = Streams.of(
        corpus,
        vocab,
        config.data.seq_length,
        whole_tunes=config.data.whole_tunes,
        length_buckets=config.data.length_buckets,
    )
    with contextlib.ExitStack() as lock:
        if distribution.is_chief:
            check_run_dir(paths.root, resume=resume)
            paths.root.mkdir(parents=True, exist_ok=True)
            lock.enter_context(RunLock(paths.root))  # held until this run ends
            prepare_run_dir(paths.root, config, vocab, resume=resume)
        return _train_in(config, corpus, streams, paths, distribution, resume, log, progress,
                         started, corpus_summary, (parent, vocab), on_step)  # fmt: skip


def _train_in(config, corpus, streams, paths, distribution, resume, log, progress, started,
              corpus_summary, parent, on_step) -> TrainResult:  # fmt: skip
    """The training run itself, once the run directory is prepared (and locked by the chief)."""
    previous_policy = keras.mixed_precision.global_policy()
    session = None
    try:
        policy = set_mixed_precision(config.train.mixed_precision)
        keras.utils.set_random_seed(config.train.random_seed)
        session = _Session(
            config, paths, log, progress, started, distribution, parent, on_step=on_step
        )
        log(
            f"device: {session.device}; {distribution.describe()}; precision {policy}; "
            f"{session.parameters:,} parameters"
        )
        start = session.restore(resume)
        if start >= config.train.steps:
            log(
                f"{paths.root} has already reached step {start} of {config.train.steps}; nothing "
                "to do (raise --steps to train further)"
            )
            return session.result(start, steps_run=0)
        if session.best.exhausted:
            log(
                f"{paths.root} was stopped at step {start} by --patience "
                f"{config.train.patience}; nothing to do (raise --patience, or --patience 0, to "
                "train further)"
            )
            return session.result(start, steps_run=0)
        if distribution.is_chief:
            write_corpus_record(
                paths.root,
                *corpus.split_records(),
                corpus_summary,
                _training_headers(corpus),
                corpus.homes.to_json() if corpus.homes is not None else None,
            )
        if corpus.augmentation:
            log(corpus.augmentation.summary())
        log(
            f"training on {corpus.tune_count('train')} tunes ({len(streams.train):,} characters), "
            f"validating on {corpus.tune_count('validation')} ({len(streams.validation):,})"
        )
        return session.run(streams, start)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if session is not None:
            session.close()


def _check_window_fits(config: RunConfig) -> None:
    model, seq_length = config.model, config.data.seq_length
    if model.kind == "transformer" and seq_length > model.context:
        raise MusicgenError(
            f"training windows of {seq_length} characters do not fit the Transformer's context "
            f"of {model.context}; lower --seq-length or raise --context"
        )


def _check_distribution(config: RunConfig, distribution: Distribution) -> None:
    distribution.check_batch(config.train.batch_size)
    if config.train.patience and distribution.workers > 1:
        raise MusicgenError(
            "--patience is decided by the chief's validation alone, which the other workers of "
            "--strategy multiworker do not see; leave out --patience"
        )
    if config.train.xla and distribution.distributed:
        raise MusicgenError(
            f"--xla compiles a one-device step; it cannot be used with --strategy "
            f"{distribution.name} (leave out --xla)"
        )


def _training_headers(corpus: SplitCorpus) -> dict:
    """corpus.json's record of the training tunes' keys, meters and types (`generate --key`...)."""
    from musicgen.data.controls import KnownHeaders

    return KnownHeaders.of_training(corpus.texts("train"), corpus.homes).to_json()


def _fine_tuning(config: RunConfig, paths: RunPaths, resume: bool, log):
    """(the parent's weights the run starts from, or None; the run's `init` record, or None).

    A resumed run keeps the record its config.json holds, and needs its parent's weights only
    when it has no checkpoint of its own yet.

    Raises:
        CheckpointError: the parent cannot be loaded, its model is not `config.model`, or
            `config.init` names another parent than the run being resumed has.
    """
    init = load_run(paths.root)[0].init if resume else config.init
    if resume and config.init is not None and config.init.parent != getattr(init, "parent", None):
        raise CheckpointError(
            f"{paths.config}: the run being resumed was not fine-tuned from {config.init.parent} "
            f"(its parent: {getattr(init, 'parent', None) or 'none, trained from scratch'}); "
            "resume it without --init, or fine-tune into a new --run-dir"
        )
    if init is None or (resume and latest_checkpoint(paths.root)):
        return None, init
    parent = find_parent(init.parent)
    check_same_model(config.model, parent)
    return read_parent_weights(parent, log), init


def _vocabulary(
    corpus: SplitCorpus,
    paths: RunPaths,
    resume: bool,
    parent: ParentWeights | None = None,
) -> Vocabulary:
    """A new run's vocabulary is built from every tune, or for a fine-tuned run is the parent's
    extended by the characters it lacks; a resumed run keeps its saved one."""
    if not resume and parent is not None:
        known = parent.parent.vocab
        return extended_vocabulary(known, corpus.unknown_characters(known))
    if not resume:
        return corpus.vocabulary()
    _, saved = load_run(paths.root)
    unknown = corpus.unknown_characters(saved)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:8])
        raise VocabularyError(
            f"these tunes hold characters the run's vocabulary ({paths.vocab}) lacks: {shown}; "
            "resume with the tunes the run was trained on, or start a new run"
        )
    return saved


class _Session:
    """One call's model, optimizer, checkpoints and logs: the state the training loop shares."""

    def __init__(
        self,
        config: RunConfig,
        paths: RunPaths,
        log,
        progress: bool,
        started: float,
        distribution: Distribution,
        parent: tuple[ParentWeights | None, Vocabulary] = (None, Vocabulary(())),
        on_step: Callable[[int, dict], object] | None = None,
    ):
        self.config, self.log, self.started = config, log, started
        # (the parent's weights or None, the run's vocabulary): what a fine-tuned run starts from.
        self.parent = parent
        self.distribution = distribution
        self.source = paths  # where the run's checkpoints are read from
        # What this process writes: the run directory, or for a worker other than the chief a
        # private folder deleted at the end (every worker must still save, as the chief does).
        self.paths = paths
        if not distribution.is_chief:
            self.paths = RunPaths(Path(tempfile.mkdtemp(prefix="musicgen-worker-")))
        self.device = describe_devices()
        with distribution.strategy.scope():
            self.model = build_model_for(config)
            loss_scale = keras.mixed_precision.global_policy().name == "mixed_float16"
            self.optimizer = make_optimizer(config.train, loss_scale=loss_scale)
            # Optimizer slots exist before any restore or tracing, so both see the same variables.
            self.optimizer.build(self.model.trainable_variables)
            # Replicas all add 1 at once; one of them counts.
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self.parameters = self.model.count_params()
        self.manager = checkpoint_manager(
            self.paths.root,
            make_checkpoint(self.model, self.optimizer, self.step),
            config.train.keep_checkpoints,
        )
        self.progress = Progress(config.train.steps, enabled=progress and distribution.is_chief)
        self.metrics = MetricsLog(self.paths.metrics, self.paths.tensorboard)
        self.chars_per_step = config.train.batch_size * config.data.seq_length
        self.last: dict = {}  # latest loss, bits per character and validation figures
        self.timing = Timing(self.chars_per_step)
        # The best validation so far and --patience; only the chief validates, keeps RUN/best/
        # and samples tunes to check (`validity`, set up in `run`).
        self.best = BestTracker(config.train.patience)
        self.best_checkpoint = None
        if distribution.is_chief:
            self.best_checkpoint = BestCheckpoint(self.paths, self.model)
        self.validity: ValiditySampler | None = None
        self.stopped: str | None = None
        self.on_step = on_step  # `train`'s observer of each step

    def restore(self, resume: bool) -> int:
        """Loads the newest intact checkpoint when resuming; returns the step to start from."""
        if self.distribution.is_chief:
            remove_leftovers(self.paths.root)
        latest = usable_checkpoint(self.source.root, self.log) if resume else None
        if not resume or latest is None:
            if resume:
                self.log(f"{self.source.checkpoints}: no checkpoint yet; starting from step 0")
            self._start_from_parent()
            self.metrics.start(after_step=0)
            return 0
        try:
            self.manager.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, IndexError, tf.errors.OpError) as exc:
            raise checkpoint_error(latest, exc) from None
        start = int(self.step.numpy())
        self.last = self.metrics.start(after_step=start)
        self.best.replay(read_metrics(self.paths.metrics))  # the decisions already taken
        self.log(f"resumed {self.source.root} at step {start} of {self.config.train.steps}")
        return start

    def _start_from_parent(self) -> None:
        """A fine-tuned run's first step starts from its parent's weights
        (`musicgen.training.finetune`)."""
        parent, vocab = self.parent
        if parent is None:
            return
        load_parent_weights(self.model, parent, vocab)
        init = self.config.init
        added = f"; new characters {init.added_characters!r}" if init.added_characters else ""
        self.log(f"fine-tuning from {init.parent} (its step {init.step}){added}")

    def close(self) -> None:
        """Removes a non-chief worker's private folder."""
        if self.paths is not self.source:
            shutil.rmtree(self.paths.root, ignore_errors=True)

    def run(self, streams: Streams, start: int) -> TrainResult:
        """Trains from `start` to the target step, recording, evaluating and checkpointing."""
        train_config = self.config.train
        self.chars_per_step = streams.characters_per_step(train_config.batch_size)
        self.timing = Timing(self.chars_per_step)
        train_batches, validation = streams.datasets(
            train_config.batch_size, seed=train_config.random_seed, start=start,
            distribution=self.distribution,
        )  # fmt: skip
        # Traced once per batch shape: one, or one per width of whole-tune windows' buckets.
        step_fn = tf.function(
            functools.partial(
                distributed_train_step,
                self.distribution.strategy,
                self.model,
                self.optimizer,
                self.step,
                # Padded windows: each batch's own count of characters.
                batch_chars=None if streams.whole_tunes else float(self.chars_per_step),
                clip_norm=train_config.clip_norm,
            ),
            jit_compile=train_config.xla or None,
        )
        # The last validation batch may be short: let TensorFlow generalise instead of retracing.
        eval_fn = tf.function(eval_step, reduce_retracing=True)
        # Validation only informs the logs, which the chief alone writes.
        evaluate = None
        if validation and self.distribution.is_chief:
            evaluate = lambda: self._evaluate(eval_fn, validation)  # noqa: E731
            if train_config.valid_sample:
                vocab = Vocabulary.load(self.paths.vocab)
                self.validity = ValiditySampler(
                    self.model, vocab, train_config.valid_sample, train_config.random_seed
                )
        self.metrics.open_writers()
        try:
            with StopSignals() as stop:
                try:
                    if start == 0 and evaluate:
                        self._record(0, [], evaluate())
                    self._loop(step_fn, iter(train_batches), evaluate, start, stop)
                except KeyboardInterrupt as exc:
                    self._stop_after_interrupt(exc)
                    raise
        finally:
            self.progress.close()
            self.metrics.close()
        self._write_plot()
        self._write_card()
        return self.result(int(self.step.numpy()), steps_run=int(self.step.numpy()) - start)

    def _loop(self, step_fn, batches, evaluate, start: int, stop: StopSignals) -> None:
        train_config = self.config.train
        losses = []  # loss tensors since the last record; read only then, so the device never waits
        step = start
        while step < train_config.steps:
            inputs, targets = next(batches)
            losses.append(step_fn(inputs, targets))
            step += 1
            if step == start + 1:
                # Reading the loss waits for the step: the clock starts after tracing.
                float(losses[-1])
                self.timing.start(step)
            last = step == train_config.steps
            with self.timing.aside():
                validation = None
                if evaluate and (step % train_config.eval_every == 0 or last):
                    validation = evaluate()
                if step % METRICS_EVERY == 0 or validation is not None or last:
                    self._record(step, losses, validation)
                    losses = []
                if step % train_config.checkpoint_every == 0 or last or self.stopped:
                    check_losses(step, losses, self.manager.latest_checkpoint)
                    self._save(step)
            self.progress.update(
                step, self.last, self.timing.seconds_left(step, train_config.steps)
            )
            if self.on_step is not None:
                with self.timing.aside():
                    self.on_step(step, dict(self.last))
            if stop.signum is not None:
                check_losses(step, losses, self.manager.latest_checkpoint)
                raise TrainingInterrupted(stop.signum)
            if self.stopped:
                self.progress.close()
                self.log(f"stopped at step {step} of {train_config.steps}: {self.stopped}")
                break
        self.timing.stop()

    def _save(self, step: int) -> str:
        """Checkpoints the step reached, unless a weight is NaN or infinite.

        Raises:
            TrainingError: a weight is not finite.
            CheckpointError: the checkpoint cannot be written; the earlier ones are intact.
        """
        previous = self.manager.latest_checkpoint
        finite = [tf.reduce_all(tf.math.is_finite(v)) for v in self.model.trainable_variables]
        if not bool(tf.reduce_all(finite)):
            raise TrainingError(
                f"the weights became NaN or infinite by step {step}; {kept_message(previous)} "
                "(resume from it with a lower --learning-rate)"
            )
        try:
            path = self.manager.save(checkpoint_number=step)
            sync_checkpoint(path)
        except (tf.errors.OpError, OSError) as exc:
            remove_partial_checkpoint(self.paths, step, previous)
            raise CheckpointError(
                f"{self.paths.checkpoints}: cannot write the checkpoint of step {step} "
                f"({write_failure(exc)}); free some disk space or make the folder writable, "
                f"then run again with --resume; {kept_message(previous)}"
            ) from None
        return path

    def _evaluate(self, eval_fn, validation) -> float:
        """Validation bits per character over up to `eval_batches` batches."""
        total = count = 0.0
        for inputs, targets in validation.take(self.config.train.eval_batches):
            batch_total, batch_count = eval_fn(self.model, inputs, targets)
            total += float(batch_total)
            count += float(batch_count)
        return total / max(count, 1.0) / LN2

    def _record(self, step: int, losses: list, validation: float | None) -> None:
        """Writes one metrics.jsonl line and TensorBoard scalars; updates the progress figures.

        Raises:
            TrainingError: one of `losses` (those of the steps up to `step`) is not finite.
        """
        entry: dict = {"step": step}
        if losses:
            check_losses(step, losses, self.manager.latest_checkpoint)
            loss = float(np.mean([float(value) for value in losses]))
            entry.update(loss=loss, bits_per_char=loss / LN2)
            rate = self.timing.interval_rate(step)
            if rate is not None:
                entry["chars_per_sec"] = rate
        if validation is not None:
            entry["val_bits_per_char"] = validation
            entry.update(self._judge(step, validation))
            if step > 0:
                self.progress.note(validation_line(entry))
        entry["lr"] = float(self.optimizer.learning_rate)
        entry["elapsed"] = self.metrics.elapsed_before + time.monotonic() - self.started
        self.last.update(entry)
        self.metrics.write(entry)

    def _judge(self, step: int, validation: float) -> dict:
        """The tunes sampled at a validation, the best checkpoint and --patience: the fields they
        add to the step's metrics.jsonl record.

        Raises:
            CheckpointError: a new best checkpoint cannot be written.
        """
        fields: dict = {}
        if self.validity is not None:
            figure = self.validity()
            fields.update(valid_share=figure.share, valid_seconds=figure.seconds)
        verdict = self.best.observe(step, validation)
        # None until a finite validation figure has been seen.
        fields["best_step"] = self.best.best_step
        fields["best_val_bits_per_char"] = self.best.best_bits
        if verdict.improved and self.best_checkpoint is not None:
            self.best_checkpoint.save(step, validation)
        if verdict.stop and step < self.config.train.steps:
            self.stopped = verdict.stop_reason(self.best.patience)
            fields.update(stopped="patience", stop_reason=self.stopped)
        return fields

    def _write_card(self) -> None:
        """card.json: what the model is (`musicgen.runs.card`); a failure is said, never fatal."""
        if not self.distribution.is_chief:
            return
        from musicgen.runs.card import write_card

        try:
            write_card(self.paths.root, device=self.device)
        except (OSError, ValueError, MusicgenError) as exc:
            self.log(f"could not write {self.paths.card}: {exc}")

    def _stop_after_interrupt(self, exc: KeyboardInterrupt) -> None:
        self.progress.close()
        step = int(self.step.numpy())
        latest = self.manager.latest_checkpoint
        if latest is not None and latest.endswith(f"-{step}"):
            path = latest  # this very step was just saved
        else:
            path = self._save(step)
        self.metrics.close()
        self._write_plot()
        self._write_card()
        cause = signal.Signals(exc.signum).name if isinstance(exc, TrainingInterrupted) else ""
        self.log(
            f"interrupted{' by ' + cause if cause else ''} at step {step}; saved {path}; "
            "run again with --resume to continue"
        )

    def _write_plot(self) -> None:
        try:
            write_loss_plot(self.paths.metrics, self.paths.plot)
        except (OSError, ValueError) as exc:
            self.log(f"could not draw {self.paths.plot}: {exc}")

    def result(self, step: int, steps_run: int) -> TrainResult:
        loss = self.last.get("loss")
        return TrainResult(
            step=step,
            steps_run=steps_run,
            train_loss=loss,
            train_bits_per_char=None if loss is None else loss / LN2,
            val_bits_per_char=self.last.get("val_bits_per_char"),
            chars_per_sec=self.timing.overall_rate(step),
            elapsed=time.monotonic() - self.started,
            device=self.device,
            parameters=self.parameters,
            run_dir=self.source.root,
            checkpoint=self.manager.latest_checkpoint,
            metrics_path=self.paths.metrics,
            plot_path=self.paths.plot if self.paths.plot.exists() else None,
            tensorboard_dir=self.paths.tensorboard,
            best_step=self.best.best_step,
            best_val_bits_per_char=self.best.best_bits,
            best_checkpoint=self.best_checkpoint and self.best_checkpoint.manager.latest_checkpoint,
            stopped=self.stopped,
        )
