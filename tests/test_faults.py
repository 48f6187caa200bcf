"""Faults during training, injected for real: signals, kill -9 (also in the middle of a checkpoint
write), damaged checkpoints, a full disk, NaN. After each, the run directory still holds an intact
latest checkpoint, and resuming ends with the same weights as a run that was never disturbed."""

from __future__ import annotations

import errno
import functools
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from run_checks import read_checkpoint, training_fixture  # noqa: E402

import musicgen.training.steps as steps_module  # noqa: E402
import musicgen.training.train as train_module  # noqa: E402
from musicgen.cli import main  # noqa: E402
from musicgen.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from musicgen.data.corpus import music21_corpus_folder
from musicgen.data.tune_split import split_corpus  # noqa: E402
from musicgen.errors import CheckpointError, TrainingError  # noqa: E402
from musicgen.music.abc import read_text_file, split_tunebook  # noqa: E402
from musicgen.runs.checkpoint import (  # noqa: E402
    checkpoint_candidates,
    latest_checkpoint,
    load_for_inference,
    usable_checkpoint,
    verify_checkpoint,
)
from musicgen.training.faults import StopSignals  # noqa: E402
from musicgen.training.train import train  # noqa: E402

TUNEBOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"
STEPS = 80
TINY = ["--embedding-dim", "8", "--units", "32", "--layers", "1", "--batch-size", "16"]
TINY += ["--seq-length", "64", "--eval-every", "40", "--checkpoint-every", "10"]
TINY += ["--learning-rate", "0.03", "--random-seed", "7", "--data", str(TUNEBOOK)]


def train_args(run_dir: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return ["train", "--run-dir", str(run_dir), "--steps", str(steps), *TINY, *extra]


def assert_same_checkpoint(prefix: str, reference: str) -> None:
    got, expected = read_checkpoint(prefix), read_checkpoint(reference)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert np.array_equal(got[name], value), name


def step_of(prefix: str | None) -> int | None:
    return None if prefix is None else int(prefix.rsplit("-", 1)[1])


@training_fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An undisturbed run of STEPS steps through the CLI: checkpoints 60, 70 and 80 are kept."""
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    result = CliRunner().invoke(main, train_args(run_dir))
    assert result.exit_code == 0, result.stderr
    return run_dir


def copy_run(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    return run_dir


# --- SIGINT and SIGTERM ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_reached_and_resume_ends_like_an_undisturbed_run(
    reference, tmp_path, monkeypatch, signum
):
    run_dir = tmp_path / "signalled"

    def signal_at_33(step, figures):
        if step == 33:
            os.kill(os.getpid(), signum)  # a real signal, delivered to this very process

    # The command's own call of `train`, with an observer of each step.
    monkeypatch.setattr(train_module, "train", functools.partial(train, on_step=signal_at_33))
    result = CliRunner().invoke(main, train_args(run_dir))
    name = signal.Signals(signum).name
    assert result.exit_code == 128 + signum, result.stderr
    saved = run_dir / "ckpt" / "ckpt-33"
    assert f"interrupted by {name} at step 33; saved {saved}" in result.stderr
    assert "--resume" in result.stderr and "Traceback" not in result.stderr
    assert step_of(latest_checkpoint(run_dir)) == 33
    # The handlers are gone once training stops: this process's own are back.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    monkeypatch.undo()
    resumed = CliRunner().invoke(main, train_args(run_dir, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed" in resumed.stderr and "step 33" in resumed.stderr
    assert_same_checkpoint(str(run_dir / "ckpt" / "ckpt-80"), str(reference / "ckpt" / "ckpt-80"))


# --- kill -9, at chosen and at arbitrary moments ---------------------------------------------

# Runs `musicgen train` in a child process; MUSICGEN_TEST_PAUSE="WHERE:STEP" makes it stop and
# wait (to be killed) at one moment of the checkpoint write of that step:
#   merge: the data is written under ckpt-STEP_temp/, not yet moved to its final name;
#   state: the final files are complete, the `checkpoint` index file does not name them yet;
#   sweep: the index names the new checkpoint, the oldest one is not deleted yet.
DRIVER = r"""
import os, sys, time
hook = os.environ.get("MUSICGEN_TEST_PAUSE")
if hook:
    where, step = hook.split(":")
    target = "ckpt-" + step
    from musicgen.tfsetup import import_tensorflow
    import_tensorflow()
    from tensorflow.python.checkpoint import checkpoint_management as cm
    from tensorflow.python.ops import gen_io_ops

    def pause():
        print("paused in " + where + " of " + target, file=sys.stderr, flush=True)
        time.sleep(600)

    if where == "merge":
        merge = gen_io_ops.merge_v2_checkpoints
        def merge_v2_checkpoints(prefixes, destination, *args, **kwargs):
            if destination.numpy().decode().endswith(target):
                pause()
            return merge(prefixes, destination, *args, **kwargs)
        gen_io_ops.merge_v2_checkpoints = merge_v2_checkpoints
    elif where == "state":
        update = cm.update_checkpoint_state_internal
        def update_checkpoint_state_internal(save_dir, model_checkpoint_path, *args, **kwargs):
            if model_checkpoint_path.endswith(target):
                pause()
            return update(save_dir, model_checkpoint_path, *args, **kwargs)
        cm.update_checkpoint_state_internal = update_checkpoint_state_internal
    elif where == "sweep":
        sweep = cm.CheckpointManager._sweep
        def _sweep(self):
            if self._latest_checkpoint.endswith(target):
                pause()
            return sweep(self)
        cm.CheckpointManager._sweep = _sweep
from musicgen.cli import main
main(sys.argv[1:], prog_name="musicgen")
"""


class Child:
    """`musicgen train` in a child process whose stderr is read line by line."""

    def __init__(self, args: list[str], pause: str | None = None):
        env = dict(os.environ, MUSICGEN_TEST_PAUSE=pause or "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []

    def wait_for(self, fragment: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 1.0)
            if ready:
                line = self.process.stderr.readline()
                if not line and self.process.poll() is not None:
                    break
                self.lines.append(line)
                if fragment in line:
                    return line
            elif self.process.poll() is not None:
                break
        self.process.kill()
        raise AssertionError(f"no {fragment!r} in:\n{''.join(self.lines)}")

    def kill(self, signum=signal.SIGKILL) -> int:
        self.process.send_signal(signum)
        try:
            rest = self.process.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.lines.append(rest)
        return self.process.returncode

    def finish(self) -> int:
        self.lines.append(self.process.communicate(timeout=300)[1])
        return self.process.returncode


def assert_loadable(run_dir: Path, step: int) -> None:
    """The latest checkpoint is the one of `step`, intact, and loads for generation."""
    latest = latest_checkpoint(run_dir)
    assert step_of(latest) == step
    verify_checkpoint(latest)
    warnings: list[str] = []
    load_for_inference(run_dir, warn=warnings.append)
    assert warnings == []


@pytest.mark.slow
def test_kill_9_at_six_moments_then_resume_ends_like_an_undisturbed_run(reference, tmp_path):
    run_dir = tmp_path / "killed"
    ckpt = run_dir / "ckpt"

    # 1. Killed while writing checkpoint 20: its data is still in the temporary folder.
    child = Child(train_args(run_dir), pause="merge:20")
    child.wait_for("paused in merge")
    assert child.kill() == -signal.SIGKILL
    assert (ckpt / "ckpt-20_temp").is_dir() and not (ckpt / "ckpt-20.index").exists()
    assert_loadable(run_dir, 10)

    # 2. Killed after checkpoint 30's files were complete, before the index named them.
    child = Child(train_args(run_dir, "--resume"), pause="state:30")
    child.wait_for("paused in state")
    assert child.kill() == -signal.SIGKILL
    assert (ckpt / "ckpt-30.index").exists()
    assert not (ckpt / "ckpt-20_temp").exists()  # the resumed run cleared the leftover
    assert_loadable(run_dir, 20)

    # 3. Killed after the index named checkpoint 50, before the oldest kept one was deleted.
    child = Child(train_args(run_dir, "--resume"), pause="sweep:50")
    child.wait_for("paused in sweep")
    assert child.kill() == -signal.SIGKILL
    assert_loadable(run_dir, 50)

    # 4. SIGTERM after a progress line: a checkpoint of the step reached, and exit code 143.
    child = Child(train_args(run_dir, "--resume"))
    child.wait_for(f"step 60/{STEPS}")
    assert child.kill(signal.SIGTERM) == 128 + signal.SIGTERM
    stopped = next(line for line in child.lines if "interrupted by SIGTERM" in line)
    step = int(stopped.split("at step ")[1].split(";")[0])
    assert 60 <= step < STEPS
    assert_loadable(run_dir, step)

    # 5 and 6. kill -9 at arbitrary moments of a resumed run (training, evaluating or saving).
    delays = random.Random(5).sample([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], 2)
    for delay in delays:
        child = Child(train_args(run_dir, "--resume"))
        child.wait_for("resumed")
        time.sleep(delay)
        child.kill()
        latest = latest_checkpoint(run_dir)
        assert step_of(latest) >= step
        assert_loadable(run_dir, step_of(latest))

    finished = Child(train_args(run_dir, "--resume"))
    assert finished.finish() == 0, "".join(finished.lines)
    assert_same_checkpoint(str(ckpt / f"ckpt-{STEPS}"), str(reference / "ckpt" / f"ckpt-{STEPS}"))
    assert list(ckpt.glob("*_temp")) == [] and list(ckpt.glob("checkpoint.tmp*")) == []


# --- damaged checkpoints -----------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "data file with a flipped byte": lambda prefix: flip_a_byte(data_file(prefix)),
    "truncated data file": lambda prefix: truncate(data_file(prefix)),
    "truncated index file": lambda prefix: truncate(Path(prefix + ".index")),
    "emptied index file": lambda prefix: Path(prefix + ".index").write_bytes(b""),
    "missing data file": lambda prefix: data_file(prefix).unlink(),
}


def data_file(prefix: str) -> Path:
    return Path(prefix + ".data-00000-of-00001")


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, damage):
    run_dir = copy_run(reference, tmp_path)
    ckpt = run_dir / "ckpt"
    DAMAGES[damage](str(ckpt / "ckpt-80"))

    warnings: list[str] = []
    model, _, _ = load_for_inference(run_dir, warn=warnings.append)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "ckpt-80" in warnings[0] and "using the previous checkpoint" in warnings[0]
    assert warnings[0].rstrip().endswith("skipped)") and str(ckpt / "ckpt-70") in warnings[0]
    saved = read_checkpoint(str(ckpt / "ckpt-70"))
    for variable in model.weights:
        key = variable.path.split("/", 1)[1].replace("/", ".S")
        name = f"model_weights/{key}/.ATTRIBUTES/VARIABLE_VALUE"
        assert np.array_equal(variable.numpy(), saved[name]), name

    # Resuming falls back the same way, and the redone steps end where the reference did.
    result = CliRunner().invoke(main, train_args(run_dir, "--resume"))
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "resumed" in result.stderr and "step 70" in result.stderr
    assert_same_checkpoint(str(ckpt / "ckpt-80"), str(reference / "ckpt" / "ckpt-80"))


def test_generate_warns_in_one_line_and_uses_the_previous_checkpoint(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    flip_a_byte(data_file(str(run_dir / "ckpt" / "ckpt-80")))
    out = tmp_path / "out"
    args = ["generate", "--run-dir", str(run_dir), "--num", "1", "--max-length", "80"]
    args += ["--checkpoint", "last"]  # the default, best/, is intact
    result = CliRunner().invoke(main, [*args, "--no-audio", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "ckpt-80" in warnings[0] and "ckpt-70" in warnings[0]
    assert len(list(out.glob("*.abc"))) == 1


def test_every_checkpoint_damaged_is_one_clear_error(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    for prefix in checkpoint_candidates(run_dir):
        truncate(data_file(prefix))
    with pytest.raises(CheckpointError, match="no intact checkpoint.*3 tried"):
        usable_checkpoint(run_dir)
    args = ["generate", "--run-dir", str(run_dir), "--no-audio", "--checkpoint", "last"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "no intact checkpoint" in result.stderr


def test_an_unreadable_index_file_falls_back_to_the_checkpoint_files(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    (run_dir / "ckpt" / "checkpoint").write_text("model_checkpoint_path: \x00garbage {{")
    assert latest_checkpoint(run_dir) is None  # TensorFlow alone would see no checkpoint
    assert [step_of(p) for p in checkpoint_candidates(run_dir)] == [80, 70, 60]
    load_for_inference(run_dir, warn=pytest.fail)


# --- a full disk, a folder that cannot be written ------------------------------------------------


@pytest.fixture
def half_run(reference, tmp_path) -> Path:
    """A copy of the reference run cut back to step 60, so resuming it writes new checkpoints."""
    run_dir = copy_run(reference, tmp_path)
    for step in (70, 80):
        for path in (run_dir / "ckpt").glob(f"ckpt-{step}.*"):
            path.unlink()
    tf.compat.v1.train.update_checkpoint_state(
        str(run_dir / "ckpt"), "ckpt-60", all_model_checkpoint_paths=["ckpt-60"]
    )
    assert step_of(latest_checkpoint(run_dir)) == 60
    return run_dir


def assert_intact_at(run_dir: Path, step: int) -> None:
    assert step_of(latest_checkpoint(run_dir)) == step
    for prefix in checkpoint_candidates(run_dir):
        verify_checkpoint(prefix)
    leftovers = [p.name for p in (run_dir / "ckpt").iterdir() if f"ckpt-{step + 10}" in p.name]
    assert leftovers == []  # the failed write's partial files were removed


def test_a_file_size_limit_hit_while_checkpointing_is_a_clear_error(half_run):
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG), as a full disk would: no root
    needed. The checkpoint's data file (weights and Adam slots, ~100 KB) is the largest file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, hard))
    try:
        result = CliRunner().invoke(main, train_args(half_run, "--resume"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("musicgen: error: ") and "Traceback" not in result.stderr
    assert "cannot write the checkpoint of step 70" in error and "File too large" in error
    assert "ckpt-60 is kept" in error and "--resume" in error
    assert_intact_at(half_run, 60)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real file system that fills up. Needs the right to mount."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_earlier_checkpoints_stay_intact(half_run, small_disk):
    run_dir = small_disk / "run"
    shutil.copytree(half_run, run_dir)
    # Leave less room than one more checkpoint needs.
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 48 * 1024))
    result = CliRunner().invoke(main, train_args(run_dir, "--resume"))
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("musicgen: error: ") and "Traceback" not in result.stderr
    assert "No space left on device" in error and "free some disk space" in error
    assert str(run_dir) in error  # names the file or folder that could not be written
    assert_intact_at(run_dir, 60)
    (small_disk / "filler").unlink()  # space is back: the run goes on
    result = CliRunner().invoke(main, train_args(run_dir, "--resume"))
    assert result.exit_code == 0, result.stderr


def test_generate_onto_a_full_disk_is_one_clear_line(reference, small_disk):
    (small_disk / "filler").write_bytes(b"\0" * shutil.disk_usage(small_disk).free)
    out = small_disk / "out"
    args = ["generate", "--run-dir", str(reference), "--out", str(out), "--no-audio"]
    result = CliRunner().invoke(main, [*args, "--num", "2", "--max-length", "100"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("musicgen: error: "), result.stderr
    assert str(out) in lines[0] and "No space left on device; free some disk space" in lines[0]


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        tf.errors.ResourceExhaustedError(None, None, "ckpt-70_temp: No space left on device"),
    ],
    ids=["OSError", "OpError"],
)
def test_a_failed_checkpoint_write_keeps_the_previous_one(half_run, monkeypatch, failure):
    save = tf.train.CheckpointManager.save

    def failing_save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 70:
            # What a write cut short leaves behind, then the error.
            (Path(self.directory) / "ckpt-70_temp").mkdir()
            (Path(self.directory) / "ckpt-70.data-00000-of-00001").write_bytes(b"\0" * 100)
            raise failure
        return save(self, checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", failing_save)
    result = CliRunner().invoke(main, train_args(half_run, "--resume"))
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr and "ckpt-60 is kept" in result.stderr
    assert_intact_at(half_run, 60)


def test_a_run_directory_that_cannot_be_created_is_one_clear_error(tmp_path):
    """As root, permissions do not stop a write; a regular file where a folder must go does."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    result = CliRunner().invoke(main, train_args(blocker / "run", steps=5))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 2  # the corpus summary, then the error
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("musicgen: error: ") and "not-a-folder" in error
    assert blocker.read_text() == "a file"


# --- NaN and infinity --------------------------------------------------------------------------


def tiny_config(steps: int = 40, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(seq_length=64),
        model=ModelConfig(embedding_dim=8, units=32, layers=1, dropout=0.0),
        train=TrainConfig(
            steps=steps, batch_size=16, learning_rate=3e-2, warmup_steps=5, eval_every=100,
            checkpoint_every=25, random_seed=7, **train,
        ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tunes():
    return split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]


def poison_at(monkeypatch, bad_step: int, *, after: bool):
    """Makes the first weight NaN at step `bad_step`: before its forward pass (so its loss is NaN)
    or, with `after`, once the step is done (so its loss is still finite)."""
    real = steps_module.train_step

    def poisoned(model, optimizer, step, inputs, targets, *args):
        weight = model.trainable_variables[0]

        def spoil():
            weight.assign(tf.fill(tf.shape(weight), float("nan")))
            return tf.constant(0)

        if not after:
            tf.cond(tf.equal(step, bad_step - 1), spoil, lambda: tf.constant(0))
        loss = real(model, optimizer, step, inputs, targets, *args)
        if after:
            tf.cond(tf.equal(step, bad_step), spoil, lambda: tf.constant(0))
        return loss

    monkeypatch.setattr(steps_module, "train_step", poisoned)


@pytest.mark.slow
def test_a_nan_loss_stops_naming_its_step_and_keeps_the_last_good_checkpoint(
    tunes, tmp_path, monkeypatch
):
    poison_at(monkeypatch, 34, after=False)
    run_dir = tmp_path / "nan"
    with pytest.raises(TrainingError) as caught:
        train(tiny_config(), split_corpus(tunes, tiny_config().data),
              run_dir, progress=False, log=lambda _: None)
    message = str(caught.value)
    assert "loss became nan at step 34" in message and "ckpt-25 is kept" in message
    assert "\n" not in message and "--learning-rate" in message
    assert [step_of(p) for p in checkpoint_candidates(run_dir)] == [25]
    weights = read_checkpoint(str(run_dir / "ckpt" / "ckpt-25"))
    assert all(np.isfinite(v).all() for v in weights.values() if v.dtype.kind == "f")
    monkeypatch.undo()
    result = train(tiny_config(), split_corpus(tunes, tiny_config().data),
                   run_dir, resume=True, progress=False, log=lambda _: None)
    assert result.step == 40 and np.isfinite(result.train_loss)


@pytest.mark.slow
def test_nan_weights_are_never_checkpointed(tunes, tmp_path, monkeypatch):
    poison_at(monkeypatch, 25, after=True)  # the loss of step 25 is fine, its weights are not
    run_dir = tmp_path / "nan-weights"
    with pytest.raises(TrainingError, match="weights became NaN or infinite by step 25"):
        train(tiny_config(), split_corpus(tunes, tiny_config().data),
              run_dir, progress=False, log=lambda _: None)
    assert checkpoint_candidates(run_dir) == []


@pytest.mark.slow
def test_an_absurd_learning_rate_stops_with_one_line_and_no_nan_checkpoint(tmp_path):
    run_dir = tmp_path / "diverged"
    args = train_args(run_dir, "--learning-rate", "1e38", "--checkpoint-every", "1", steps=30)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("musicgen: error: ") and "Traceback" not in result.stderr
    assert "became" in error and ("at step" in error or "by step" in error)
    for prefix in checkpoint_candidates(run_dir):
        for value in read_checkpoint(prefix).values():
            assert value.dtype.kind != "f" or np.isfinite(value).all(), prefix


def test_a_second_signal_stops_at_once():
    """The first signal waits for the step to end; a second one (an impatient Ctrl-C) does not."""
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # Python runs the handler between bytecodes
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
