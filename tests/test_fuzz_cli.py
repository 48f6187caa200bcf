"""Hypothesis drives every command's options with values of every kind: negative, zero, huge,
`nan`, `inf`, strings, and paths to files, folders, FIFOs, symlink loops and missing paths.

Each invocation must either succeed or exit non-zero with exactly one `musicgen: error:` line on
stderr (its last line), never a traceback, and never run past 30 seconds (hypothesis' deadline).
Most run in process through click's CliRunner; a few through the real program. `INVOCATIONS`
counts them; the last test checks that a run made at least 500.

Values that are valid but costly by design (`--steps 100000000` trains for days) are left out of
the draws: sizes are drawn from small valid values and from values past their bounds, which must be
refused at once. `serve` is fuzzed only with bad values: a valid one serves until stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cli_checks import MICRO_RUN
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicgen.cli import main
from musicgen.data.corpus import default_corpus_files

pytestmark = pytest.mark.slow

INVOCATIONS = {"in_process": 0, "subprocess": 0}
TINY = [*MICRO_RUN, "--steps", "1", "--eval-every", "1", "--checkpoint-every", "1"]

NUMBERS = [
    "-1", "0", "1", "2", "3", "-5", "nan", "inf", "-inf", "1e308", "-0.0", "0.5", "1.5",
    "2147483648", "4294967296", "9223372036854775808", "99999999999999999999", "1e6",
    "abc", "", " ", "0x10", "1_000", "½", "--", "-", "\x00",
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Paths of every kind, a tiny trained run and a tunebook."""
    root = tmp_path_factory.mktemp("fuzz")
    source = next(p for label, p in default_corpus_files() if "oneills1850/0001-0050" in label)
    tunes = root / "tunes.abc"
    tunes.write_bytes(source.read_bytes()[:12000])
    run = root / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(tunes), "--run-dir", str(run), *TINY])
    assert result.exit_code == 0, result.stderr
    folder = root / "folder"
    folder.mkdir()
    (folder / "a.abc").write_bytes(tunes.read_bytes())
    os.mkfifo(root / "pipe.abc")
    os.symlink("loop-b.abc", root / "loop-a.abc")
    os.symlink("loop-a.abc", root / "loop-b.abc")
    (root / "binary.abc").write_bytes(bytes(range(256)) * 4)
    (root / "empty.abc").write_bytes(b"")
    (root / "noise.wav").write_bytes(os.urandom(256))
    (root / "noise.mid").write_bytes(os.urandom(256))
    (root / "notes.txt").write_text("not a tune at all\n")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"name": "my app"}')
    render = CliRunner().invoke(main, ["render", str(folder / "a.abc"), "--no-score"])
    assert render.exit_code == 0, render.stderr
    wav = next(folder.glob("*.wav"))
    paths = {
        "tunes": tunes, "folder": folder, "fifo": root / "pipe.abc", "loop": root / "loop-a.abc",
        "binary": root / "binary.abc", "empty": root / "empty.abc", "noise_wav": root / "noise.wav",
        "noise_mid": root / "noise.mid", "text": root / "notes.txt", "missing": root / "nowhere",
        "missing_abc": root / "nowhere.abc", "run": run, "foreign": foreign, "wav": wav,
        "mid": wav.with_suffix(".mid"), "proc": Path("/proc"),
    }  # fmt: skip
    return {"root": root, "paths": paths, "run": run, "tunes": tunes, "counter": iter(range(10**9))}


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NUMBERS),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=6),
    )


def small_or_bad() -> st.SearchStrategy[str]:
    """A size: small and valid, or out of its bounds in some way (never valid and costly)."""
    return st.one_of(st.integers(-3, 6).map(str), st.sampled_from(NUMBERS), st.text(max_size=4))


def a_path(world, names=None) -> st.SearchStrategy[str]:
    names = names or sorted(world["paths"])
    return st.sampled_from(names).map(lambda name: str(world["paths"][name]))


def check(result) -> None:
    """Success, or a non-zero exit whose stderr ends in its one error line; never a traceback."""
    INVOCATIONS["in_process"] += 1
    everything = result.output + result.stderr
    assert "Traceback" not in everything, everything
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code == 0:
        return
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("musicgen: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=timedelta(seconds=30),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def options(draw, table: dict) -> list[str]:
    """One to three options of `table` (name -> strategy, None for a flag), drawn with values."""
    chosen = draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True))
    args = []
    for name in chosen:
        args += [name] if table[name] is None else [name, draw(table[name])]
    return args


@fuzz(110)
@given(data=st.data())
def test_train_options(world, data):
    table = {
        "--steps": small_or_bad(), "--batch-size": small_or_bad(), "--seq-length": small_or_bad(),
        "--learning-rate": numbers(), "--embedding-dim": small_or_bad(), "--units": small_or_bad(),
        "--layers": small_or_bad(), "--d-model": small_or_bad(), "--heads": small_or_bad(),
        "--ff-dim": small_or_bad(), "--context": small_or_bad(), "--dropout": numbers(),
        "--eval-every": small_or_bad(), "--checkpoint-every": small_or_bad(),
        "--random-seed": numbers(), "--model": st.sampled_from(["lstm", "transformer", "gru", ""]),
        "--strategy": st.sampled_from(["auto", "one", "mirrored", "nope"]),
        "--data": a_path(world), "--run-dir": a_path(world), "--resume": None, "--no-cache": None,
    }  # fmt: skip
    run_dir = world["root"] / f"train-{next(world['counter'])}"
    base = ["train", "--data", str(world["tunes"]), "--run-dir", str(run_dir), *TINY]
    check(CliRunner().invoke(main, [*base, *options(data.draw, table)]))


@fuzz(150)
@given(data=st.data())
def test_generate_options(world, data):
    table = {
        "--num": small_or_bad(), "--temperature": numbers(), "--top-k": numbers(),
        "--top-p": numbers(), "--max-length": small_or_bad().map(lambda v: v + "0"),
        "--random-seed": numbers(), "--seed": st.one_of(a_path(world), st.text(max_size=20)),
        "--out": a_path(world), "--soundfont": a_path(world), "--run-dir": a_path(world),
        "--no-audio": None, "--force": None, "--json": None, "--attention": a_path(world),
    }  # fmt: skip
    out = world["root"] / f"generate-{next(world['counter'])}"
    base = ["generate", "--run-dir", str(world["run"]), "--out", str(out), "--num", "2"]
    base += ["--max-length", "80", "--no-audio"]
    check(CliRunner().invoke(main, [*base, *options(data.draw, table)]))


@fuzz(40)
@given(data=st.data())
def test_evaluate_options(world, data):
    table = {
        "--num": small_or_bad(), "--temperature": numbers(), "--top-p": numbers(),
        "--max-length": small_or_bad().map(lambda v: v + "0"), "--data": a_path(world),
        "--out": a_path(world), "--run-dir": a_path(world), "--json": None,
    }  # fmt: skip
    out = world["root"] / f"evaluate-{next(world['counter'])}"
    base = ["evaluate", "--run-dir", str(world["run"]), "--out", str(out), "--num", "2"]
    base += ["--max-length", "80"]
    check(CliRunner().invoke(main, [*base, *options(data.draw, table)]))


@fuzz(90)
@given(data=st.data())
def test_render_play_and_ingest(world, data):
    out = world["root"] / f"files-{next(world['counter'])}"
    command = data.draw(st.sampled_from(["render", "play", "ingest"]))
    target = data.draw(a_path(world, [n for n in world["paths"] if n not in ("proc", "folder")]))
    if command == "render":
        table = {"--out": a_path(world), "--soundfont": a_path(world), "--no-audio": None,
                 "--force": None, "--transpose": numbers()}  # fmt: skip
        args = ["render", target, "--out", str(out), *options(data.draw, table)]
    elif command == "play":
        args = ["play", target]
    else:
        table = {"--out": a_path(world), "--force": None,
                 "--grid": st.sampled_from(["8", "16", "32", "7", "x"])}  # fmt: skip
        args = ["ingest", target, "--out", str(out) + ".abc", *options(data.draw, table)]
    check(CliRunner().invoke(main, args))


@fuzz(120)
@given(command=st.sampled_from(["train", "generate", "evaluate", "render", "serve"]),
       option=st.sampled_from(["--steps", "--num", "--port", "--host", "--nope", "-x", "--out"]),
       value=numbers())  # fmt: skip
def test_unknown_and_misplaced_options(world, command, option, value):
    """Options a command lacks, or values its options cannot take: one usage line, exit 2."""
    check(CliRunner().invoke(main, [command, option, value, "--port", "-1"]))


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--max-length", "2147483648"],
        ["train", "--batch-size", "2147483648"],
        ["train", "--dropout", "nan"],
        ["play", "{tunes}"],
        ["render", "{fifo}"],
        ["train", "--data", "{fifo}"],
    ],
)
def test_real_processes(world, args):
    """The real program: C libraries' output on file descriptor 2 would show here."""
    args = [a.format(**{k: str(v) for k, v in world["paths"].items()}) for a in args]
    command = [sys.executable, "-m", "musicgen", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    INVOCATIONS["subprocess"] += 1
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("musicgen: error: ")


def test_at_least_500_invocations_ran():
    """Runs last in this module (pytest keeps file order); the note quotes the count it prints."""
    total = sum(INVOCATIONS.values())
    print(f"fuzzed invocations: {INVOCATIONS} = {total}")
    assert total >= 500, INVOCATIONS
