"""The command line in process, and the check that a user's mistake is one line on stderr."""

from __future__ import annotations

import signal
from pathlib import Path

from click.testing import CliRunner

from musicgen.cli import main


def invoke(*args):
    """`musicgen ARGS...` through click's runner; paths and numbers may be given as they are."""
    return CliRunner().invoke(main, [str(arg) for arg in args])


# `musicgen train` options for the models the tests train. MICRO_RUN: the smallest that runs, for
# tests of what train and generate do with their input, not of what the model learns;
# SMALL_RUN: trains in seconds, and a few hundred steps of it write tunes that render.
MICRO_RUN = ["--embedding-dim", "4", "--units", "8", "--layers", "1", "--batch-size", "4"]
MICRO_RUN += ["--seq-length", "32"]
SMALL_RUN = ["--embedding-dim", "8", "--units", "32", "--layers", "1", "--batch-size", "8"]
SMALL_RUN += ["--seq-length", "64"]
TINY_RUN = [*SMALL_RUN, "--eval-every", "20", "--checkpoint-every", "20"]

# What `musicgen train` prints before it can fail: the corpus summary and the cache line.
CORPUS_LINES = ("read ", "used the cached", "skipped ")


def train_tiny(data: Path, run: Path, steps: int):
    """`musicgen train` of a TINY_RUN model on `data` into `run`; asserts that it succeeded and
    returns click's result (its stderr holds what train said)."""
    result = invoke("train", "--data", data, "--run-dir", run, "--steps", steps, *TINY_RUN)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def one_line_error(result, *fragments: str, after: tuple[str, ...] = CORPUS_LINES) -> str:
    """Asserts exit code 1 (a musicgen error) or 2 (a usage error click found), and exactly one
    stderr line, `musicgen: error: ...`, holding each of `fragments`, and no traceback; returns
    the line. Lines starting with one of `after` (what `train` says before) are left out."""
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith(after)]
    assert len(lines) == 1 and lines[0].startswith("musicgen: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return lines[0]


def default_sigint() -> None:
    """A `preexec_fn` for a child that a test stops with SIGINT: a shell's background job (`cmd &`
    in a script) starts with SIGINT ignored, and Python then never installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
