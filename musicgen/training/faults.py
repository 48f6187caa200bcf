"""How a run stops before its end, and the one line each way says: SIGINT and SIGTERM between
steps, a loss or weights gone NaN, a checkpoint that cannot be written or read back.

No TensorFlow here: `musicgen.training.train` catches TensorFlow's errors and hands them over.
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
from pathlib import Path

import numpy as np

from musicgen.errors import CheckpointError, TrainingError, first_line
from musicgen.runs.rundir import RunPaths


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a step; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step.

    The loop then saves a checkpoint and raises TrainingInterrupted. A second signal raises
    KeyboardInterrupt at once. Outside the main thread (where Python cannot catch signals) this
    does nothing and Ctrl-C raises KeyboardInterrupt as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
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


def check_losses(step: int, losses: list, last_checkpoint: str | None) -> None:
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
            f"{kept_message(last_checkpoint)} (resume from it with a lower --learning-rate)"
        )


def write_failure(exc: Exception) -> str:
    """The cause of a failed write, e.g. "No space left on device", without TensorFlow's op name
    and temporary file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = first_line(getattr(exc, "message", exc))
    # "{{function_node ...}} .../ckpt-70_temp/part-...; No space left on device [Op:SaveV2]"
    text = re.sub(r"\s*\[Op:\w+\]$", "", re.sub(r"^\{\{[^}]*\}\}\s*", "", text))
    return text.rsplit("; ", 1)[-1]


def kept_message(checkpoint: str | None) -> str:
    if checkpoint is None:
        return "no checkpoint had been saved yet"
    return f"the last good checkpoint {checkpoint} is kept"


def remove_partial_checkpoint(paths: RunPaths, step: int, previous: str | None) -> None:
    """Deletes the files of a checkpoint whose writing failed, to give back the disk space."""
    prefix = paths.checkpoints / f"ckpt-{step}"
    if previous is not None and Path(previous) == prefix:
        return  # the same step saved before: its files may still be the good ones
    for path in [*paths.checkpoints.glob(f"ckpt-{step}.*"), *paths.checkpoints.glob("*_temp")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def checkpoint_error(path: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: cannot resume from this checkpoint ({first_line(exc)})")
