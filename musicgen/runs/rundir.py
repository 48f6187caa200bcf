"""Whose folder a run directory is, and one `train` at a time in it.

A folder is musicgen's to train into when it does not exist yet, is empty, or holds musicgen's own
`config.json`; anything else (another program's files, a `config.json` that is not ours) is
refused, so a typo in `--run-dir` never replaces or deletes a user's files. While `train` runs it
holds an exclusive `flock` on `RUN/.musicgen.lock`: the kernel releases it when the process ends,
however it ends, so a second `train` into the same folder is refused with the first one's process
id, and a killed run never leaves a stale lock. `RunPaths` names the files of a run directory. No
TensorFlow here: the CLI checks the folder before it reads the corpus.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from musicgen.errors import CheckpointError

LOCK_NAME = ".musicgen.lock"
_CONFIG_KEYS = {"version", "data", "model", "train"}


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The files of one run directory (see `musicgen.runs.checkpoint` for what each holds)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "ckpt"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def card(self) -> Path:
        return self.root / "card.json"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def plot(self) -> Path:
        return self.root / "loss.png"


try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against a second process
    fcntl = None


def is_musicgen_config(path: Path) -> bool:
    """True when `path` is a JSON object with the top-level keys of musicgen's `config.json`."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and _CONFIG_KEYS <= set(raw)


def runs_under(root: Path) -> list[Path]:
    """The run directories directly under `root` (each with a config.json), newest first (by the
    directory's modification time); [] when `root` is not a folder. `generate` takes the first,
    the page offers them all."""
    if not Path(root).is_dir():
        return []
    found = (path.parent for path in Path(root).glob("*/config.json"))
    return sorted(found, key=lambda run: run.stat().st_mtime, reverse=True)


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuses a run directory that is not musicgen's (see the module's docstring).

    Raises:
        CheckpointError: `run_dir` is a file, or holds files that are not a musicgen run's, or
            (with `resume`) holds no musicgen run.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        if resume:
            raise CheckpointError(f"{run_dir}: no such run directory to resume; check --run-dir")
        return
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: is a file, not a folder; choose another --run-dir")
    config = run_dir / "config.json"
    if is_musicgen_config(config):
        return
    others = sorted(name for name in os.listdir(run_dir) if name != LOCK_NAME)
    if resume:
        raise CheckpointError(
            f"{run_dir}: holds no musicgen run (no musicgen config.json); check --run-dir"
        )
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        what = "a config.json that is not musicgen's" if config.exists() else f"files ({shown})"
        raise CheckpointError(
            f"{run_dir}: holds {what} and is not a musicgen run; musicgen will not write into "
            "it: choose a new or empty --run-dir"
        )


class RunLock:
    """An exclusive lock on a run directory for as long as it is held (a context manager).

    Raises:
        CheckpointError: on entering, another process holds the lock; the message names it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._handle = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CheckpointError(
                f"{self.path.parent}: another musicgen train (process {holder}) is writing into "
                "this run directory; wait for it to finish or choose another --run-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock
            self._handle = None
