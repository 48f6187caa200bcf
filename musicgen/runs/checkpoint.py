"""The run directory: everything needed to resume training or to generate, and nothing executable.

    run_dir/
      config.json     RunConfig (model shape, data and training settings)
      vocab.json      Vocabulary
      ckpt/           TensorFlow checkpoints: model weights, optimizer state, step (the last few)
      best/           one checkpoint: the weights that scored the lowest validation bits/char, with
                      that step and figure (`musicgen.training.best`); what generate and
                      evaluate load
      card.json       what the model is (`musicgen.runs.card`), updated by train and evaluate
      corpus.json     which tunes trained and validated the model, and the ingestion summary
      metrics.jsonl   one JSON object per logged step
      tensorboard/    event files
      loss.png        bits per character against step

A model is rebuilt from config.json alone and its weights restored from the checkpoint: no pickles,
no code from the directory is ever run. A bundled model's folder (`musicgen.runs.bundled`:
config.json, vocab.json and float16 weights.npz) loads through the same `load_for_inference` and
`choose_checkpoint` / `restore_model`.

This module keeps the TensorFlow checkpoints: finding, checking and writing them, and choosing the
one a model is loaded from. `musicgen.runs.runfiles` reads config.json and vocab.json back and
writes corpus.json; `musicgen.runs.weights` builds a run's model and restores its weights.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from musicgen.config import RunConfig
from musicgen.data.vocab import Vocabulary
from musicgen.errors import CheckpointError, first_line, print_to_stderr
from musicgen.runs.rundir import RunPaths
from musicgen.runs.runfiles import load_run
from musicgen.runs.weights import WEIGHTS_KEY, build_model_for, model_weights, restore_weights
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()


def latest_checkpoint(run_dir: Path) -> str | None:
    """The prefix of the newest complete checkpoint in `run_dir` (".../ckpt/ckpt-200"), or None.

    TensorFlow names a checkpoint in its `ckpt/checkpoint` index file only after the checkpoint's
    data and index files are written, and writes that file under a temporary name then renames it,
    so the prefix returned here is never half-written by a crash or a `kill -9` (a bad disk or a
    power cut can still damage it: `usable_checkpoint` checks the data too).
    """
    return tf.train.latest_checkpoint(str(RunPaths(Path(run_dir)).checkpoints))


def checkpoint_candidates(run_dir: Path) -> list[str]:
    """The checkpoints of a run, newest first, as prefixes (".../ckpt/ckpt-200").

    Taken from the `ckpt/checkpoint` index file; when that file is missing or unreadable, from
    the `ckpt-<step>.index` files present, by step.
    """
    return _candidates_in(RunPaths(Path(run_dir)).checkpoints)


def _candidates_in(directory: Path) -> list[str]:
    """`checkpoint_candidates` of one checkpoint folder (`ckpt/` or `best/`)."""
    state = tf.train.get_checkpoint_state(str(directory)) if directory.is_dir() else None
    if state is not None and state.model_checkpoint_path:
        listed = [state.model_checkpoint_path, *reversed(state.all_model_checkpoint_paths)]
        prefixes = [p if os.path.isabs(p) else str(directory / p) for p in listed]
        present = [p for p in dict.fromkeys(prefixes) if Path(p + ".index").exists()]
        if present:
            return present
    found = []
    for index_file in directory.glob("ckpt-*.index"):
        number = index_file.name[len("ckpt-") : -len(".index")]
        if number.isdigit():
            found.append((int(number), str(index_file)[: -len(".index")]))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def verify_checkpoint(prefix: str) -> None:
    """Reads every tensor of a checkpoint, which checks each one against its stored CRC32C.

    Raises:
        CheckpointError: a file is missing, truncated or damaged.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:
        # A truncated data file surfaces as IndexError ("Read less bytes than requested").
        raise CheckpointError(f"{prefix}: damaged ({first_line(exc)})") from None


def usable_checkpoint(run_dir: Path, warn: Callable[[str], object] | None = None) -> str | None:
    """The newest checkpoint of a run whose files all read back intact, or None if there is none.

    A damaged newer checkpoint (cut short, corrupted on disk) is skipped with a one-line warning.

    Args:
        run_dir: the run directory.
        warn: where the warning goes; defaults to stderr.

    Raises:
        CheckpointError: there are checkpoints but every one of them is damaged.
    """
    warn = warn or print_to_stderr
    candidates = checkpoint_candidates(run_dir)
    problems = []
    for prefix in candidates:
        try:
            verify_checkpoint(prefix)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems:
            warn(
                f"warning: {problems[0]}; using the previous checkpoint {prefix} "
                f"({len(problems)} newer one{'s' if len(problems) > 1 else ''} skipped)"
            )
        return prefix
    if problems:
        raise CheckpointError(
            f"{problems[0]}; no intact checkpoint in {RunPaths(Path(run_dir)).checkpoints} "
            f"({len(problems)} tried): train again from the start or restore them from a backup"
        )
    return None


def sync_checkpoint(prefix: str) -> None:
    """Flushes a just-written checkpoint and the `checkpoint` index file to the disk.

    TensorFlow closes its files without fsync; a kill cannot lose them (they are in the page
    cache), but a power cut could. Syncing the data, then the directory, keeps that window short.
    """
    directory = Path(prefix).parent
    for path in [*directory.glob(Path(prefix).name + ".*"), directory / "checkpoint"]:
        _fsync(path, os.O_RDONLY)
    _fsync(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # swept away meanwhile, or a platform that cannot open directories
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Deletes what a killed process leaves behind: temporary checkpoint folders and files.

    These are TensorFlow's `ckpt-<step>_temp/` folders (a checkpoint being written) and
    `checkpoint.tmp<hex>` files (the index being replaced), and `musicgen.files`' `.NAME.*.tmp`
    files. None of them is ever read.

    Returns:
        The paths removed.
    """
    paths = RunPaths(Path(run_dir))
    leftovers = []
    for folder in (paths.checkpoints, paths.best):
        leftovers += [*folder.glob("ckpt-*_temp"), *folder.glob("checkpoint.tmp*")]
    leftovers += [p for p in paths.root.glob(".*.tmp") if p.is_file()]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def prepare_run_dir(run_dir: Path, config: RunConfig, vocab: Vocabulary, *, resume: bool) -> None:
    """Creates or checks a run directory and writes `config.json` and `vocab.json` into it.

    Args:
        run_dir: the directory; created if missing.
        config: the run's settings, `config.model.vocab_size` already set to `len(vocab)`.
        vocab: the run's vocabulary.
        resume: continue the run already in `run_dir` (its model settings and vocabulary must equal
            `config.model` and `vocab`; other settings, e.g. the number of steps, may change).

    Raises:
        CheckpointError: a new run into a directory that holds a checkpoint, or a resume whose files
            are missing or do not match.
    """
    paths = RunPaths(Path(run_dir))
    if config.model.vocab_size != len(vocab):
        raise ValueError("config.model.vocab_size must equal len(vocab)")
    if paths.root.exists() and not paths.root.is_dir():
        raise CheckpointError(f"{paths.root}: not a directory; choose another --run-dir")
    if resume:
        saved_config, saved_vocab = load_run(paths.root)
        if saved_vocab.characters != vocab.characters:
            raise CheckpointError(
                f"{paths.vocab}: the saved vocabulary differs from this run's; a resumed run must "
                "keep its vocabulary"
            )
        _check_same_model(saved_config, config, paths.config)
    elif latest_checkpoint(paths.root):
        raise CheckpointError(
            f"{paths.root} already holds a run; pass --resume to continue it or choose another "
            "--run-dir"
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        # Metrics and a best checkpoint of an earlier attempt that never reached a checkpoint
        # would be mixed with ours.
        paths.metrics.unlink(missing_ok=True)
        shutil.rmtree(paths.best, ignore_errors=True)
        paths.card.unlink(missing_ok=True)
    config.save(paths.config)
    vocab.save(paths.vocab)


def _check_same_model(saved: RunConfig, config: RunConfig, source: Path) -> None:
    """Raises CheckpointError listing the model settings in which `config` differs from `saved`."""
    saved_model, model = dataclasses.asdict(saved.model), dataclasses.asdict(config.model)
    changed = [
        f"{key} {saved_model[key]!r} -> {model[key]!r}"
        for key in model
        if model[key] != saved_model.get(key)
    ]
    if changed:
        raise CheckpointError(
            f"{source}: the model settings differ from the saved run ({', '.join(changed)}); "
            "resume with the run's own model settings"
        )


def make_checkpoint(model, optimizer=None, step=None):
    """A `tf.train.Checkpoint` of the model's weights, and for training also of the optimizer, the
    step and the model's random-number state (dropout), so a resumed run continues exactly.
    """
    weights = model_weights(model)
    parts = {WEIGHTS_KEY: weights}
    if optimizer is not None:
        parts["optimizer"] = optimizer
    if step is not None:
        parts["step"] = step
        # Keras seed-generator states, in layer order (their paths are numbered per process).
        ids = {id(variable) for variable in weights.values()}
        parts["random_state"] = [v for v in model.variables if id(v) not in ids]
    return tf.train.Checkpoint(**parts)


def checkpoint_manager(run_dir: Path, checkpoint, max_to_keep: int):
    """A `tf.train.CheckpointManager` writing `checkpoint` into `run_dir/ckpt` as ckpt-<step>."""
    directory = RunPaths(Path(run_dir)).checkpoints
    return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=max(1, max_to_keep))


CHECKPOINT_CHOICES = ("best", "last")
BEST_VALUE_KEY = "val_bits_per_char"  # the best checkpoint's record of its validation figure


@dataclasses.dataclass(frozen=True)
class ChosenCheckpoint:
    """The checkpoint a run's model is loaded from.

    Attributes:
        prefix: its path prefix (".../best/ckpt-600").
        step: the training step it holds.
        which: "best" (`RUN/best/`), "last" (the newest intact one in `RUN/ckpt/`) or
            "bundled" (a bundled model's weights.npz, `musicgen.runs.bundled`).
        val_bits_per_char: the validation figure it scored (best only).
        last_step: the step of the run's newest checkpoint.
        note: why the last one is used when the best was asked for, else "".
    """

    prefix: str
    step: int
    which: str
    val_bits_per_char: float | None = None
    last_step: int | None = None
    note: str = ""

    def describe(self, run_dir: Path) -> str:
        """One line saying which step of `run_dir` was loaded, and why."""
        if self.which == "bundled":
            return (
                f"loaded the bundled model {Path(run_dir).name} (float16 weights of step "
                f"{self.step} of its training run; see musicgen info {Path(run_dir).name})"
            )
        if self.which == "best":
            text = f"loaded the best checkpoint of {run_dir}: step {self.step}"
            if self.val_bits_per_char is not None:
                text += f" (validation {self.val_bits_per_char:.3f} bits/char)"
            if self.last_step is not None and self.last_step != self.step:
                text += f"; the last is step {self.last_step} (--checkpoint last loads it)"
            return text
        text = f"loaded the last checkpoint of {run_dir}: step {self.step}"
        return f"{text} ({self.note})" if self.note else text


def step_of(prefix: str) -> int:
    """The step in a checkpoint prefix's name: ".../ckpt-600" -> 600."""
    return int(prefix.rsplit("-", 1)[1])


def best_value(prefix: str) -> float | None:
    """The validation bits/char a best checkpoint records, None if it records none."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return float(reader.get_tensor(f"{BEST_VALUE_KEY}/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError, KeyError):
        return None


def choose_checkpoint(
    run_dir: Path, which: str = "best", warn: Callable[[str], object] | None = None
) -> ChosenCheckpoint:
    """The checkpoint to load: the run's best (`RUN/best/`) or its last intact one.

    A best checkpoint that is missing (a run without validation tunes, or from an older musicgen)
    or damaged gives the last one, the damage said in a one-line warning. A bundled model has one
    set of weights, whatever `which` asks for.

    Raises:
        CheckpointError: `which` is neither "best" nor "last", or there is no intact checkpoint.
    """
    from musicgen.runs.bundled import bundled_checkpoint, is_bundled_folder

    if which not in CHECKPOINT_CHOICES:
        raise CheckpointError(f"unknown checkpoint {which!r}; use one of {CHECKPOINT_CHOICES}")
    if is_bundled_folder(run_dir):
        return bundled_checkpoint(Path(run_dir))
    warn = warn or print_to_stderr
    paths = RunPaths(Path(run_dir))
    latest = latest_checkpoint(paths.root)
    note = ""
    if which == "best":
        note = "the run has no best checkpoint: no validation tunes, or an older musicgen"
        for prefix in _candidates_in(paths.best)[:1]:
            try:
                verify_checkpoint(prefix)
            except CheckpointError as exc:
                warn(f"warning: {exc}; using the last checkpoint instead")
                note = "the best one is damaged"
                break
            last_step = None if latest is None else step_of(latest)
            return ChosenCheckpoint(prefix, step_of(prefix), "best", best_value(prefix), last_step)
    prefix = usable_checkpoint(paths.root, warn)
    if prefix is None:
        raise CheckpointError(
            f"{paths.checkpoints}: no checkpoint; train the model first (or wait for its first "
            "checkpoint)"
        )
    return ChosenCheckpoint(prefix, step_of(prefix), "last", None, step_of(prefix), note)


def load_for_inference(
    run_dir: Path,
    warn: Callable[[str], object] | None = None,
    *,
    checkpoint: str = "last",
    loaded: Callable[[str], object] | None = None,
):
    """Rebuilds the model of a run from `config.json` and restores its weights.

    Reads only JSON and TensorFlow checkpoint files; never runs code from the directory. A damaged
    latest checkpoint is skipped, with a warning, for the newest intact one before it.

    Args:
        run_dir: a directory written by `musicgen.training.train.train`.
        warn: where a one-line warning about a skipped checkpoint goes; defaults to stderr.
        checkpoint: "last" (the newest intact checkpoint) or "best" (the lowest validation
            bits/char; see `choose_checkpoint`).
        loaded: given, receives one line saying which step was loaded (`ChosenCheckpoint`).

    Returns:
        (model, vocab, config): a float32 Keras model ready for `model(ids)` or `model.step`.

    Raises:
        CheckpointError: a file is missing or bad, there is no intact checkpoint, or the weights do
            not fit the model that config.json and vocab.json describe.
    """
    config, vocab = load_run(Path(run_dir))
    chosen = choose_checkpoint(run_dir, checkpoint, warn)
    model = restore_model(config, chosen)
    if loaded is not None:
        loaded(chosen.describe(run_dir))
    return model, vocab, config


def restore_model(config: RunConfig, chosen: ChosenCheckpoint):
    """The float32 model `config` describes, with the weights of the checkpoint `chosen`.

    Raises:
        CheckpointError: the weights do not fit the model.
    """
    # float32 whatever policy the run trained under: its variables were float32 in any case.
    model = build_model_for(config, policy="float32")
    if chosen.which == "bundled":
        from musicgen.runs.bundled import restore_bundled

        restore_bundled(model, Path(chosen.prefix))
    else:
        restore_weights(model, chosen.prefix, Path(chosen.prefix).parent)
    return model
