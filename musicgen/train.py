"""Training: a compiled step, warmup-then-cosine schedule, checkpoints, metrics, a progress bar.

`train` is the one entry point. It owns the run directory's checkpoints, `metrics.jsonl`,
`tensorboard/` and `loss.png`; `musicgen.checkpoint` owns the directory's layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from musicgen.augment import AugmentReport, augment_tunes
from musicgen.best import BestCheckpoint, BestTracker
from musicgen.bundled import refuse_training_into
from musicgen.card import duration as _duration
from musicgen.card import read_metrics
from musicgen.checkpoint import (
    RunPaths,
    SplitRecord,
    build_model_for,
    checkpoint_manager,
    latest_checkpoint,
    load_run,
    make_checkpoint,
    prepare_run_dir,
    remove_leftovers,
    sync_checkpoint,
    usable_checkpoint,
    write_corpus_record,
)
from musicgen.config import DataConfig, RunConfig, TrainConfig, check_memory
from musicgen.dataset import (
    Shard,
    encode_stream,
    make_dataset,
    make_tune_dataset,
    require_windows,
    split_tunes,
    tune_pieces,
    tune_start_positions,
)
from musicgen.distribute import Distribution, make_distribution
from musicgen.encoded import EncodedCorpus
from musicgen.errors import (
    CheckpointError,
    CorpusError,
    MusicgenError,
    TrainingError,
    VocabularyError,
)
from musicgen.files import atomic_write_bytes, atomic_write_text
from musicgen.finetune import (
    ParentWeights,
    check_same_model,
    extended_vocabulary,
    find_parent,
    load_parent_weights,
    read_parent_weights,
)
from musicgen.rundir import RunLock, check_run_dir
from musicgen.tfsetup import describe_devices, import_tensorflow, set_mixed_precision
from musicgen.validity import ValiditySampler, draw_validity
from musicgen.vocab import PAD, Vocabulary

tf = import_tensorflow()
# After import_tensorflow, which quiets TensorFlow's start-up logging.
import keras  # noqa: E402
from tensorflow.core.framework.summary_pb2 import SummaryMetadata  # noqa: E402

LN2 = math.log(2.0)
FINAL_LR_FRACTION = 0.1  # the cosine schedule ends at this fraction of the peak learning rate
METRICS_EVERY = 10  # steps between records in metrics.jsonl and TensorBoard
MIN_PROGRESS_LINES = 50  # without a terminal, about this many progress lines per run (plus evals)


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
    """

    step: int
    steps_run: int
    train_loss: float | None
    train_bits_per_char: float | None
    val_bits_per_char: float | None
    chars_per_sec: float | None
    elapsed: float
    device: str
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
    tunes: Sequence | EncodedCorpus,
    run_dir: Path,
    *,
    resume: bool = False,
    corpus_summary: str = "",
    progress: bool = True,
    log: Callable[[str], object] | None = None,
    strategy: str = "auto",
) -> TrainResult:
    """Trains a model on `tunes` and keeps everything in `run_dir`.

    Args:
        config: the run's settings; `config.model.vocab_size` is filled in from the vocabulary.
        tunes: objects with `text` (normalised ABC) and `source` attributes, or an EncodedCorpus
            (`encoded.load_encoded_corpus`, split with `config.data.validation_fraction`), whose
            memory-mapped streams a large corpus trains from without being held in memory.
        run_dir: the run directory (see `musicgen.checkpoint`).
        resume: continue from the run's last checkpoint up to `config.train.steps` in total.
            With `config.init` (a new run), the run starts from the parent's weights, its
            vocabulary extended by the tunes' new characters (`musicgen.finetune`); config.json
            records the parent's step and those characters.
        corpus_summary: the corpus loader's one-line summary, recorded in corpus.json.
        progress: show a progress bar on stderr.
        log: where one-line messages go; defaults to stderr.
        strategy: one of `distribute.STRATEGIES`. Under "multiworker" every process of the
            cluster calls `train` with the same arguments; only the chief writes into `run_dir`.

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
    log = log or _print_to_stderr
    # First: a multi-worker strategy must set up TensorFlow's runtime itself.
    distribution = make_distribution(strategy)
    _check_distribution(config, distribution)
    paths = RunPaths(Path(run_dir))
    refuse_training_into(paths.root)
    corpus = _split(tunes, config.data)
    _check_window_fits(config)
    parent, init = _fine_tuning(config, paths, resume, log)
    vocab = _vocabulary(corpus, paths, resume, parent)
    if parent is not None and not resume:
        init = parent.init_config(vocab)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, vocab_size=len(vocab)), init=init
    )
    check_memory(config)
    streams = _Streams.of(
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
                         started, corpus_summary, (parent, vocab))  # fmt: skip


def _train_in(config, corpus, streams, paths, distribution, resume, log, progress, started,
              corpus_summary, parent) -> TrainResult:  # fmt: skip
    """The training run itself, once the run directory is prepared (and locked by the chief)."""
    previous_policy = keras.mixed_precision.global_policy()
    session = None
    try:
        policy = set_mixed_precision(config.train.mixed_precision)
        keras.utils.set_random_seed(config.train.random_seed)
        session = _Session(
            config, paths, log, progress and distribution.is_chief, started, distribution, parent
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
                paths.root, *_split_records(corpus), corpus_summary, _training_headers(corpus)
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


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _split(tunes: Sequence | EncodedCorpus, data: DataConfig) -> _TuneSplit | EncodedCorpus:
    """`tunes` split into training and validation, the training tunes then augmented by
    `data.transpose` (an EncodedCorpus comes split and augmented already)."""
    if isinstance(tunes, EncodedCorpus):
        if tunes.fraction != data.validation_fraction:
            raise ValueError("the encoded corpus was split with another validation fraction")
        if tunes.transpose != data.transpose:
            raise ValueError("the encoded corpus was augmented with other transpositions")
        return tunes
    tunes = list(tunes)
    if not tunes:
        raise CorpusError("no tunes to train on")
    train_tunes, validation = split_tunes(tunes, data.validation_fraction)
    augmentation = None
    if data.transpose:
        train_tunes, augmentation = augment_tunes(train_tunes, data.transpose)
    return _TuneSplit([*train_tunes, *validation], train_tunes, validation, augmentation)


@dataclasses.dataclass(frozen=True)
class _TuneSplit:
    """Tunes in memory, split as `split_tunes` does: `train`'s counterpart of an EncodedCorpus."""

    tunes: list  # every tune trained or validated on, transposed copies included
    train: list
    validation: list
    augmentation: AugmentReport | None = None

    def tunes_in(self, split: str) -> list:
        return self.train if split == "train" else self.validation

    def tune_count(self, split: str) -> int:
        return len(self.tunes_in(split))

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_texts(tune.text for tune in self.tunes)

    def unknown_characters(self, vocab: Vocabulary) -> list[str]:
        unknown: dict[str, None] = {}
        for tune in self.tunes:
            unknown.update(dict.fromkeys(vocab.unknown_characters(tune.text)))
        return list(unknown)


def _training_headers(corpus: _TuneSplit | EncodedCorpus) -> dict:
    """corpus.json's record of the training tunes' keys, meters and types (`generate --key`...)."""
    from musicgen.controls import KnownHeaders

    if isinstance(corpus, EncodedCorpus):
        texts = corpus.texts("train")
    else:
        texts = (tune.text for tune in corpus.train)
    return KnownHeaders.from_texts(texts).to_json()


def _split_records(corpus: _TuneSplit | EncodedCorpus) -> list[SplitRecord]:
    """corpus.json's record of the training and validation splits (a large encoded corpus names
    its source files rather than each tune)."""
    if isinstance(corpus, EncodedCorpus) and corpus.tune_sources is not None:
        return [
            SplitRecord(corpus.tune_count(s), corpus.characters_in[s], corpus.tune_sources[s])
            for s in ("train", "validation")
        ]
    if isinstance(corpus, EncodedCorpus):
        return [
            SplitRecord(
                corpus.tune_count(s), corpus.characters_in[s], corpus.sources[s], per="file"
            )
            for s in ("train", "validation")
        ]
    return [SplitRecord.of_tunes(corpus.tunes_in(s)) for s in ("train", "validation")]


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
    corpus: _TuneSplit | EncodedCorpus,
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


@dataclasses.dataclass(frozen=True)
class _Streams:
    """The training and validation tunes as id streams, checked long enough to train on."""

    train: np.ndarray  # ids, possibly a read-only memory map (an EncodedCorpus's)
    validation: np.ndarray
    seq_length: int
    train_starts: np.ndarray  # int64 position of each training tune's BOS
    whole_tunes: bool = False  # windows from tune starts (`dataset.make_tune_dataset`)
    length_buckets: int = 1

    @classmethod
    def of(cls, corpus: _TuneSplit | EncodedCorpus, vocab: Vocabulary, seq_length: int,
           **windows) -> _Streams:  # fmt: skip
        """The streams of `corpus`; `windows`: whole_tunes and length_buckets."""
        if not isinstance(corpus, EncodedCorpus):
            return cls.encode(corpus.train, corpus.validation, vocab, seq_length, **windows)
        train_ids, validation_ids = corpus.ids_in(vocab)
        require_windows(len(train_ids), seq_length)
        starts = np.asarray(corpus.train_starts)
        return cls(train_ids, validation_ids, seq_length, starts, **windows)

    @classmethod
    def encode(cls, train_tunes, validation_tunes, vocab, seq_length, **windows) -> _Streams:
        train_ids = encode_stream(train_tunes, vocab)
        require_windows(len(train_ids), seq_length)
        validation_ids = encode_stream(validation_tunes, vocab)
        starts = tune_start_positions(train_ids)
        return cls(train_ids, validation_ids, seq_length, starts, **windows)

    def characters_per_step(self, batch_size: int) -> int:
        """Characters predicted per training step: whole windows, or with whole-tune windows
        (padded) the mean over a pass."""
        if not self.whole_tunes:
            return batch_size * self.seq_length
        _, lengths = tune_pieces(self.train_starts, len(self.train), self.seq_length)
        return max(1, round(batch_size * (float(np.mean(lengths)) - 1)))

    def datasets(self, batch_size: int, seed: int, start: int, distribution: Distribution):
        """(endless shuffled training batches from batch `start` on, validation batches or None).

        Skipping the batches a resumed run has already seen makes it see exactly the batches an
        uninterrupted run would (their order depends only on the seed). Under a strategy, the
        training batches are distributed: each worker reads its share of each global batch.
        """
        tune_starts = self.train_starts

        def training_batches(shard=None):
            if self.whole_tunes:
                return make_tune_dataset(
                    self.train,
                    tune_starts,
                    self.seq_length,
                    batch_size,
                    buckets=self.length_buckets,
                    seed=seed,
                    skip=start,
                    shard=shard,
                )
            return make_dataset(
                self.train,
                self.seq_length,
                batch_size,
                shuffle=True,
                seed=seed,
                repeat=True,
                tune_starts=tune_starts,
                skip=start,
                shard=shard,
            )

        if distribution.distributed:
            train = distribution.strategy.distribute_datasets_from_function(
                lambda context: training_batches(Shard.from_context(context, batch_size))
            )
        else:
            train = training_batches()
        if len(self.validation) < 2:
            return train, None
        # A short validation split gets shorter windows rather than none: the LSTM takes any length.
        window = min(self.seq_length, len(self.validation) - 1)
        return train, make_dataset(self.validation, window, batch_size, shuffle=False)


def masked_loss(targets, logits):
    """Mean cross-entropy in nats over the targets that are not PAD.

    Args:
        targets: int (batch, time).
        logits: float (batch, time, vocab).
    """
    total, count = _loss_sum(targets, logits)
    return total / tf.maximum(count, 1.0)


def _loss_sum(targets, logits):
    """(sum of cross-entropy over non-PAD targets, number of such targets), both float32."""
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32)
    )  # (batch, time)
    mask = tf.cast(tf.not_equal(targets, PAD), tf.float32)
    return tf.reduce_sum(per_token * mask), tf.reduce_sum(mask)


def train_step(model, optimizer, step, inputs, targets, batch_chars=None, clip_norm=0.0):
    """One replica's part of one optimiser step; wrap in `tf.function` (through
    `distributed_train_step` under a strategy). Everything it touches comes in as an argument.

    Args:
        model: a musicgen model.
        optimizer: a built Keras optimizer (possibly a LossScaleOptimizer), without clipping of
            its own: Keras would clip each replica's gradients before summing them.
        step: int64 tf.Variable counting steps, incremented with the weights so the two never part.
        inputs: int32 (batch, time): this replica's windows.
        targets: int32 (batch, time).
        batch_chars: characters in the global batch (all replicas together); None: the global
            batch's own non-PAD count, summed over the replicas (padded whole-tune windows).
        clip_norm: clip the summed gradient to this global norm; 0: no clipping.

    Returns:
        This replica's share of the global batch's mean loss in nats per character: the shares
        of all replicas add up to it.
    """
    with tf.GradientTape() as tape:
        logits = model(inputs, training=True)  # (batch, time, vocab)
        total, count = _loss_sum(targets, logits)
        if batch_chars is None:
            batch_chars = tf.maximum(_summed_over_replicas(count), 1.0)
        loss = total / batch_chars
        # Multiplied by the loss scale under float16 (LossScaleOptimizer), else unchanged.
        scaled_loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    if clip_norm > 0:
        gradients = clip_summed_gradients(gradients, clip_norm * optimizer.scale_loss(1.0))
    # Sums the replicas' gradients, unscales them (if scaled) and updates the weights.
    optimizer.apply(gradients, model.trainable_variables)
    step.assign_add(1)
    return loss


def _summed_over_replicas(value):
    """`value` summed over the replicas in sync (itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(value))


def clip_summed_gradients(gradients, clip_norm):
    """Scales each replica's gradients by the one factor that clips their sum to `clip_norm`.

    The optimizer sums the replicas' gradients after this, so clipping each replica's own would
    clip the wrong vector; the sum is formed here only to measure its norm. On one device the
    sum is the gradient itself.
    """
    context = tf.distribute.get_replica_context()
    summed = gradients
    if context.num_replicas_in_sync > 1:
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    clipped, _ = tf.clip_by_global_norm(
        gradients, clip_norm, use_norm=tf.linalg.global_norm(summed)
    )
    return clipped


def distributed_train_step(
    strategy, model, optimizer, step, inputs, targets, batch_chars, clip_norm
):
    """`train_step` on every replica of `strategy`; wrap in `tf.function`.

    Args:
        inputs, targets: per-replica batches from a distributed dataset (or plain tensors under
            the default strategy).

    Returns:
        The global batch's mean loss in nats per character.
    """

    def replica_step(inputs, targets):
        return train_step(model, optimizer, step, inputs, targets, batch_chars, clip_norm)

    losses = strategy.run(replica_step, args=(inputs, targets))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)


def eval_step(model, inputs, targets):
    """(summed cross-entropy in nats, number of characters) for one batch; wrap in `tf.function`."""
    logits = model(inputs, training=False)  # (batch, time, vocab)
    return _loss_sum(targets, logits)


def learning_rate_schedule(train_config: TrainConfig):
    """Linear warmup to `learning_rate` over `warmup_steps`, then a cosine down to
    FINAL_LR_FRACTION of it at `steps`.

    Returns:
        A Keras LearningRateSchedule: call it with a step to get the rate.
    """
    peak = train_config.learning_rate
    warmup = max(0, min(train_config.warmup_steps, train_config.steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        # Starts at peak / (warmup + 1) rather than 0, so the very first step already learns.
        initial_learning_rate=peak / (warmup + 1) if warmup else peak,
        decay_steps=max(1, train_config.steps - warmup),
        alpha=FINAL_LR_FRACTION,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(train_config: TrainConfig, *, loss_scale: bool = False):
    """Adam on `learning_rate_schedule`. It does not clip: `train_step` clips the summed gradient.

    Args:
        train_config: learning rate, warmup and steps.
        loss_scale: wrap in a LossScaleOptimizer (needed for float16, not for bfloat16).
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(train_config))
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer


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
        self.progress = _Progress(config.train.steps, enabled=progress)
        self.metrics = _MetricsLog(self.paths)
        self.chars_per_step = config.train.batch_size * config.data.seq_length
        self.last: dict = {}  # latest loss, bits per character and validation figures
        self.timing = _Timing(self.chars_per_step)
        # The best validation so far and --patience; only the chief validates, keeps RUN/best/
        # and samples tunes to check (`validity`, set up in `run`).
        self.best = BestTracker(config.train.patience)
        self.best_checkpoint = None
        if distribution.is_chief:
            self.best_checkpoint = BestCheckpoint(self.paths, self.model)
        self.validity: ValiditySampler | None = None
        self.stopped: str | None = None

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
            raise _checkpoint_error(latest, exc) from None
        start = int(self.step.numpy())
        self.last = self.metrics.start(after_step=start)
        self.best.replay(read_metrics(self.paths.metrics))  # the decisions already taken
        self.log(f"resumed {self.source.root} at step {start} of {self.config.train.steps}")
        return start

    def _start_from_parent(self) -> None:
        """A fine-tuned run's first step starts from its parent's weights (`musicgen.finetune`)."""
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

    def run(self, streams: _Streams, start: int) -> TrainResult:
        """Trains from `start` to the target step, recording, evaluating and checkpointing."""
        train_config = self.config.train
        self.chars_per_step = streams.characters_per_step(train_config.batch_size)
        self.timing = _Timing(self.chars_per_step)
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
            with _StopSignals() as stop:
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

    def _loop(self, step_fn, batches, evaluate, start: int, stop: _StopSignals) -> None:
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
                    _check_losses(step, losses, self.manager.latest_checkpoint)
                    self._save(step)
            self.progress.update(
                step, self.last, self.timing.seconds_left(step, train_config.steps)
            )
            if stop.signum is not None:
                _check_losses(step, losses, self.manager.latest_checkpoint)
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
                f"the weights became NaN or infinite by step {step}; {_kept(previous)} "
                "(resume from it with a lower --learning-rate)"
            )
        try:
            path = self.manager.save(checkpoint_number=step)
            sync_checkpoint(path)
        except (tf.errors.OpError, OSError) as exc:
            _remove_partial_checkpoint(self.paths, step, previous)
            raise CheckpointError(
                f"{self.paths.checkpoints}: cannot write the checkpoint of step {step} "
                f"({_write_failure(exc)}); free some disk space or make the folder writable, "
                f"then run again with --resume; {_kept(previous)}"
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
            _check_losses(step, losses, self.manager.latest_checkpoint)
            loss = float(np.mean([float(value) for value in losses]))
            entry.update(loss=loss, bits_per_char=loss / LN2)
            rate = self.timing.interval_rate(step)
            if rate is not None:
                entry["chars_per_sec"] = rate
        if validation is not None:
            entry["val_bits_per_char"] = validation
            entry.update(self._judge(step, validation))
            if step > 0:
                self.progress.note(_validation_line(entry))
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
        """card.json: what the model is (`musicgen.card`); a failure is said, never fatal."""
        if not self.distribution.is_chief:
            return
        from musicgen.card import write_card

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


def _validation_line(entry: dict) -> str:
    """The line a validation leaves above the progress bar."""
    line = f"step {entry['step']}: validation {entry['val_bits_per_char']:.3f} bits/char"
    if "valid_share" in entry:
        line += f", {entry['valid_share']:.0%} of sampled tunes valid"
    if entry.get("best_step") == entry["step"]:
        line += " (best so far)"
    return line


def _checkpoint_error(path: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: cannot resume from this checkpoint ({_first_line(exc)})")


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a step; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step.

    The loop then saves a checkpoint and raises TrainingInterrupted. A second signal raises
    KeyboardInterrupt at once. Outside the main thread (where Python cannot catch signals) this
    does nothing and Ctrl-C raises KeyboardInterrupt as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


def _check_losses(step: int, losses: list, last_checkpoint: str | None) -> None:
    """Raises TrainingError naming the first step whose loss is NaN or infinite.

    Args:
        step: the step of the last of `losses`.
        losses: loss tensors of consecutive steps, not yet read.
        last_checkpoint: the checkpoint kept, for the message.
    """
    values = np.array([float(value) for value in losses])
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        first = step - len(values) + int(bad[0]) + 1
        raise TrainingError(
            f"the loss became {values[bad[0]]} at step {first}; stopped without saving it; "
            f"{_kept(last_checkpoint)} (resume from it with a lower --learning-rate)"
        )


def _write_failure(exc: Exception) -> str:
    """The cause of a failed write, e.g. "No space left on device", without TensorFlow's op name
    and temporary file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = _first_line(getattr(exc, "message", exc))
    # "{{function_node ...}} .../ckpt-70_temp/part-...; No space left on device [Op:SaveV2]"
    text = re.sub(r"\s*\[Op:\w+\]$", "", re.sub(r"^\{\{[^}]*\}\}\s*", "", text))
    return text.rsplit("; ", 1)[-1]


def _kept(checkpoint: str | None) -> str:
    if checkpoint is None:
        return "no checkpoint had been saved yet"
    return f"the last good checkpoint {checkpoint} is kept"


def _remove_partial_checkpoint(paths: RunPaths, step: int, previous: str | None) -> None:
    """Deletes the files of a checkpoint whose writing failed, to give back the disk space."""
    prefix = paths.checkpoints / f"ckpt-{step}"
    if previous is not None and Path(previous) == prefix:
        return  # the same step saved before: its files may still be the good ones
    for path in [*paths.checkpoints.glob(f"ckpt-{step}.*"), *paths.checkpoints.glob("*_temp")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class _Timing:
    """Wall-clock accounting for throughput and time left.

    The training clock starts after the first step of a call (which includes tracing) and stops
    inside `aside()` blocks (evaluating, recording, checkpointing).
    """

    def __init__(self, chars_per_step: int):
        self.chars_per_step = chars_per_step
        self.began: float | None = None  # when the first step of this call finished
        self.began_step = 0
        self.ended: float | None = None
        self.set_aside = 0.0  # seconds spent in finished `aside()` blocks since `began`
        self.aside_began: float | None = None  # inside an `aside()` block since then
        self.mark = (0.0, 0)  # (training seconds, step) at the previous interval_rate()

    def start(self, step: int) -> None:
        """Called once the first step's result has been read, i.e. the step has finished."""
        self.began = time.monotonic()
        self.began_step = step
        self.mark = (0.0, step)

    def stop(self) -> None:
        self.ended = time.monotonic()

    @contextlib.contextmanager
    def aside(self):
        """Time spent inside this block does not count as training time."""
        self.aside_began = time.monotonic()
        try:
            yield
        finally:
            if self.began is not None:
                self.set_aside += time.monotonic() - max(self.aside_began, self.began)
            self.aside_began = None

    def training_seconds(self) -> float:
        """Seconds of training since `start`, at this moment."""
        if self.began is None:
            return 0.0
        now = self.ended or time.monotonic()
        current_aside = 0.0 if self.aside_began is None else now - max(self.aside_began, self.began)
        return now - self.began - self.set_aside - current_aside

    def interval_rate(self, step: int) -> float | None:
        """Training characters per second since the previous call, None before `start`."""
        if self.began is None:
            return None
        seconds = self.training_seconds()
        then_seconds, then_step = self.mark
        self.mark = (seconds, step)
        return self._rate(step - then_step, seconds - then_seconds)

    def overall_rate(self, step: int) -> float | None:
        """Training characters per second over this call, None if it ran fewer than two steps."""
        return self._rate(step - self.began_step, self.training_seconds())

    def seconds_left(self, step: int, total: int) -> float | None:
        """Wall time (evaluation and checkpoints included) the remaining steps should take."""
        if self.began is None or step <= self.began_step:
            return None
        per_step = (time.monotonic() - self.began) / (step - self.began_step)
        return per_step * (total - step)

    def _rate(self, steps: int, seconds: float) -> float | None:
        return steps * self.chars_per_step / seconds if steps > 0 and seconds > 0 else None


class _MetricsLog:
    """metrics.jsonl (one JSON object per line) and the TensorBoard event files."""

    def __init__(self, paths: RunPaths):
        self.paths = paths
        self.elapsed_before = 0.0  # seconds spent by earlier calls on this run
        self.handle = None
        self.writer = None

    def start(self, after_step: int) -> dict:
        """Drops lines past `after_step` (logged after the checkpoint we resume from).

        Returns:
            The latest figures recorded up to `after_step`.
        """
        entries = read_metrics(self.paths.metrics)
        kept = [entry for entry in entries if entry.get("step", 0) <= after_step]
        if len(kept) != len(entries):
            atomic_write_text(self.paths.metrics, "".join(json.dumps(e) + "\n" for e in kept))
        latest: dict = {}
        for entry in kept:
            latest.update(entry)
        self.elapsed_before = float(latest.get("elapsed", 0.0))
        return latest

    def open_writers(self) -> None:
        self.handle = open(self.paths.metrics, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.writer = tf.summary.create_file_writer(str(self.paths.tensorboard))

    def write(self, entry: dict) -> None:
        try:
            self.handle.write(json.dumps(entry) + "\n")
            self.handle.flush()
        except OSError as exc:  # a full disk: say which file could not grow
            raise OSError(exc.errno, exc.strerror, str(self.paths.metrics)) from exc
        with self.writer.as_default(step=entry["step"]):
            for key, tag in _TENSORBOARD_TAGS.items():
                if key in entry:
                    # What tensorboard's own scalar() writes, without needing the tensorboard
                    # package (TensorFlow 2.21 no longer installs it).
                    value = tf.constant(entry[key], tf.float32)
                    tf.summary.write(tag, value, metadata=_SCALAR_METADATA)
        self.writer.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_TENSORBOARD_TAGS = {
    "bits_per_char": "train/bits_per_char",
    "val_bits_per_char": "validation/bits_per_char",
    "chars_per_sec": "speed/chars_per_sec",
    "lr": "train/learning_rate",
    "valid_share": "validation/valid_share",
}
# Marks a summary as a scalar for TensorBoard's "scalars" dashboard.
_SCALAR_METADATA = SummaryMetadata(
    plugin_data=SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def write_loss_plot(metrics_path: Path, plot_path: Path) -> None:
    """Draws training and validation bits per character against step into a PNG."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    entries = read_metrics(metrics_path)
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for key, label in (("bits_per_char", "training"), ("val_bits_per_char", "validation")):
        points = [(e["step"], e[key]) for e in entries if key in e]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("bits per character")
    axes.grid(alpha=0.3)
    if entries:
        axes.legend(loc="upper center")
    draw_validity(axes, entries)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(plot_path, buffer.getvalue())


class _Progress:
    """A progress line on stderr: redrawn in place on a terminal, printed now and then otherwise."""

    def __init__(self, total: int, *, enabled: bool, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(METRICS_EVERY, total // MIN_PROGRESS_LINES)
        self.last_draw = 0.0
        self.shown = False

    def update(self, step: int, figures: dict, seconds_left: float | None) -> None:
        if not self.enabled:
            return
        line = self._line(step, figures, seconds_left)
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw >= 0.1 or step == self.total:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                bar_width = 20
                if len(line) + bar_width + 3 <= width:
                    filled = bar_width * step // max(self.total, 1)
                    line = f"[{'#' * filled}{'.' * (bar_width - filled)}] {line}"
                self.stream.write("\r" + line[:width].ljust(width))
                self.stream.flush()
                self.last_draw, self.shown = now, True
        elif step % self.every == 0 or step == self.total:
            self.stream.write(line + "\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        """A line that stays: printed above the redrawn progress line."""
        if not self.enabled:
            return
        self.clear()
        self.stream.write(message + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.shown:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.shown = False

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False

    def _line(self, step: int, figures: dict, seconds_left: float | None) -> str:
        # Most important first: a narrow terminal cuts the end off.
        parts = [f"step {step}/{self.total}"]
        bits = figures.get("bits_per_char")
        validation = figures.get("val_bits_per_char")
        if bits is not None or validation is not None:
            text = "" if bits is None else f"{bits:.3f} bits/char"
            if validation is not None:
                text += f" (val {validation:.3f})" if text else f"val {validation:.3f} bits/char"
            parts.append(text)
        if "chars_per_sec" in figures:
            parts.append(f"{figures['chars_per_sec']:,.0f} chars/s")
        if seconds_left is not None:
            parts.append(f"{_duration(seconds_left)} left")
        return " | ".join(parts)
