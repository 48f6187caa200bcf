"""The best checkpoint of a run, and `--patience`.

Each validation that beats every earlier one (lower bits/char) saves the model's weights into
`RUN/best/` as one TensorFlow checkpoint, `ckpt-<step>`, with that step and figure and no optimizer
state. It lives apart from `RUN/ckpt/`, so the keep-last-N rotation never deletes it, and is
written as the others are: data under a temporary name, then renamed, the folder's `checkpoint`
index replaced atomically, everything fsynced; the previous best is deleted only after the new one
is named. `generate` and `evaluate` load it (`checkpoint.choose_checkpoint`); `--resume` continues
from the last checkpoint in `ckpt/`.

The figures that decide (the best so far, evaluations since) are read back from `metrics.jsonl` on
resume, so a resumed run takes exactly the decisions an undisturbed one takes.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from musicgen.errors import CheckpointError, first_line
from musicgen.runs.checkpoint import BEST_VALUE_KEY, RunPaths, sync_checkpoint
from musicgen.runs.weights import WEIGHTS_KEY, model_weights
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What one validation means for the run.

    Attributes:
        improved: the lowest validation figure so far: save it as the best checkpoint.
        stop: `patience` validations in a row have not improved: stop the run.
        best_step: the step of the best validation so far (this one when improved).
        best_bits_per_char: its figure.
        since_best: validations since the best one.
    """

    improved: bool
    stop: bool
    best_step: int
    best_bits_per_char: float
    since_best: int

    def stop_reason(self, patience: int) -> str:
        """The sentence the log and metrics.jsonl give for a stop."""
        return (
            f"validation has not improved for {patience} evaluation{'s' * (patience != 1)} "
            f"(best {self.best_bits_per_char:.3f} bits/char at step {self.best_step})"
        )


class BestTracker:
    """Which validation is best so far and how many have passed since; no files.

    Args:
        patience: stop after this many validations in a row without improvement; 0: never.
    """

    def __init__(self, patience: int = 0):
        self.patience = patience
        self.best_step: int | None = None
        self.best_bits: float | None = None
        self.since_best = 0

    def replay(self, entries: Sequence[dict]) -> None:
        """Takes in the validations recorded in metrics.jsonl (a resumed run's history)."""
        for entry in entries:
            if entry.get("val_bits_per_char") is not None:
                self.observe(int(entry["step"]), float(entry["val_bits_per_char"]))

    def observe(self, step: int, bits_per_char: float) -> Verdict:
        """Records one validation; says whether it is the best and whether the run should stop."""
        # A NaN figure (weights gone bad) is never the best: the NaN check then stops the run.
        finite = math.isfinite(bits_per_char)
        improved = finite and (self.best_bits is None or bits_per_char < self.best_bits)
        if improved:
            self.best_step, self.best_bits, self.since_best = step, bits_per_char, 0
        else:
            self.since_best += 1
        if self.best_step is None:  # only NaN so far
            return Verdict(False, self.exhausted, step, bits_per_char, self.since_best)
        return Verdict(
            improved=improved,
            stop=self.exhausted,
            best_step=self.best_step,
            best_bits_per_char=self.best_bits,
            since_best=self.since_best,
        )

    @property
    def exhausted(self) -> bool:
        """True once `patience` validations in a row have not improved."""
        return 0 < self.patience <= self.since_best


class BestCheckpoint:
    """Writes `RUN/best/ckpt-<step>`: the model's weights, the step and its validation figure.

    Args:
        paths: the run directory this process writes.
        model: the model being trained.
    """

    def __init__(self, paths: RunPaths, model):
        self.paths = paths
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.value = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        parts = {WEIGHTS_KEY: model_weights(model), "step": self.step, BEST_VALUE_KEY: self.value}
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**parts), str(paths.best), max_to_keep=1
        )

    def save(self, step: int, bits_per_char: float) -> str:
        """Saves the current weights as the best, replacing the previous best.

        Raises:
            CheckpointError: it cannot be written (disk full, folder not writable); the previous
                best checkpoint stays intact.
        """
        self.step.assign(step)
        self.value.assign(bits_per_char)
        try:
            path = self.manager.save(checkpoint_number=step)
            sync_checkpoint(path)
        except (tf.errors.OpError, OSError) as exc:
            self._remove_partial(step)
            raise CheckpointError(
                f"{self.paths.best}: cannot write the best checkpoint of step {step} "
                f"({first_line(exc)}); free some disk space or make the folder writable, then "
                "run again with --resume"
            ) from None
        return path

    def _remove_partial(self, step: int) -> None:
        latest = self.manager.latest_checkpoint
        if latest is not None and Path(latest).name == f"ckpt-{step}":
            return  # the same step saved before: its files may still be the good ones
        folder = self.paths.best
        for path in [*folder.glob(f"ckpt-{step}.*"), *folder.glob("*_temp")]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
