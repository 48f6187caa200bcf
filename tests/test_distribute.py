"""tf.distribute training: mirrored over two logical CPUs and a two-process multi-worker cluster on
127.0.0.1, each checked against one device with the same global batch and seed.

Devices and the collective runtime are fixed when TensorFlow starts, so every distributed run is a
`musicgen train` subprocess. Dropout is off in these runs: each replica draws its own dropout
masks, so with dropout on the runs agree only in distribution, not step by step.

Tolerance: training losses agree within 1e-5 relative, weights after 30 steps within 2e-5
absolute. Summing a gradient over replicas changes the order of float32 additions, nothing else.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from musicgen.data.corpus import default_corpus_files
from musicgen.data.dataset import Shard, make_dataset
from musicgen.data.tune_split import encode_stream, tune_start_positions
from musicgen.data.vocab import Vocabulary
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

LOSS_TOLERANCE = 1e-5  # relative
WEIGHT_TOLERANCE = 2e-5  # absolute
STEPS = 30
LSTM = ["--embedding-dim", "8", "--units", "32", "--layers", "1"]
TRANSFORMER = ["--model", "transformer", "--layers", "2", "--d-model", "16", "--heads", "2"]
TRANSFORMER += ["--ff-dim", "32", "--context", "64"]
COMMON = ["--batch-size", "8", "--seq-length", "64", "--dropout", "0", "--eval-every", "20"]
COMMON += ["--checkpoint-every", "20"]


@pytest.fixture(scope="module")
def data_args() -> list[str]:
    files = [p for label, p in default_corpus_files() if "oneills1850/" in label][:3]
    return [arg for path in files for arg in ("--data", str(path))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MUSICGEN_LOGICAL_CPUS")}
    # A private temporary folder, to see that no worker leaves anything behind in it.
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    env.update(TMPDIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def musicgen_train(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "musicgen", "train", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    _, stderr = process.communicate(timeout=timeout)
    text = stderr.decode("utf-8", "replace")
    assert process.returncode == 0, text
    assert "Traceback" not in text
    return text


def train_one_device(run: Path, args: list[str], tmp_path: Path, *more: str) -> str:
    env = environment(tmp_path)
    return finish(musicgen_train(["--run-dir", str(run), *args, "--strategy", "one", *more], env))


def train_mirrored(run: Path, args: list[str], tmp_path: Path, *more: str) -> str:
    env = environment(tmp_path, MUSICGEN_LOGICAL_CPUS="2")
    run_args = ["--run-dir", str(run), *args, "--strategy", "mirrored", *more]
    return finish(musicgen_train(run_args, env))


def train_cluster(run: Path, args: list[str], tmp_path: Path, *more: str) -> list[str]:
    """Two worker processes on 127.0.0.1; worker 0 is the chief."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = environment(tmp_path, TF_CONFIG=json.dumps(config))
        run_args = ["--run-dir", str(run), *args, "--strategy", "multiworker", *more]
        processes.append(musicgen_train(run_args, env))
    try:
        return [finish(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return {entry["step"]: entry["loss"] for entry in entries if "loss" in entry}


def weights(run: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(run / "ckpt" / f"ckpt-{STEPS}"))
    names = reader.get_variable_to_shape_map()
    return {name: reader.get_tensor(name) for name in names if "/.ATTRIBUTES/" in name}


def assert_same_training(run: Path, reference: Path) -> None:
    expected, got = losses(reference), losses(run)
    assert sorted(got) == sorted(expected) == [10, 20, 30]
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=LOSS_TOLERANCE), step
    reference_weights, run_weights = weights(reference), weights(run)
    assert sorted(run_weights) == sorted(reference_weights)
    floats = [name for name in reference_weights if reference_weights[name].dtype.kind == "f"]
    assert len(floats) > 5
    for name in floats:
        np.testing.assert_allclose(
            run_weights[name], reference_weights[name], atol=WEIGHT_TOLERANCE, err_msg=name
        )


@pytest.fixture(scope="module")
def one_device_runs(data_args, tmp_path_factory) -> dict[str, Path]:
    """The single-device reference of each model: 30 steps, global batch 8."""
    tmp = tmp_path_factory.mktemp("one")
    runs = {}
    for name, model in (("lstm", LSTM), ("transformer", TRANSFORMER)):
        runs[name] = tmp / name
        train_one_device(runs[name], [*data_args, *model, *COMMON, "--steps", str(STEPS)], tmp)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_mirrored_over_two_cpus_trains_as_one_device_does(
    model, data_args, one_device_runs, tmp_path
):
    model_args = LSTM if model == "lstm" else TRANSFORMER
    run = tmp_path / "mirrored"
    log = train_mirrored(run, [*data_args, *model_args, *COMMON, "--steps", str(STEPS)], tmp_path)
    assert "mirrored over 2 replicas" in log
    assert_same_training(run, one_device_runs[model])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_a_two_worker_cluster_trains_as_one_device_does_and_only_the_chief_writes(
    model, data_args, one_device_runs, tmp_path
):
    model_args = LSTM if model == "lstm" else TRANSFORMER
    run = tmp_path / "cluster"
    chief, worker = train_cluster(
        run, [*data_args, *model_args, *COMMON, "--steps", str(STEPS)], tmp_path
    )
    assert "multiworker over 2 replicas on 2 workers (this is worker 0, the chief)" in chief
    assert "(this is worker 1, the worker)" in worker
    assert "validation" in chief and "validation" not in worker
    assert_same_training(run, one_device_runs[model])
    # One set of files, written by the chief; the other worker's checkpoints went to a private
    # folder that is gone.
    assert sorted(p.name for p in (run / "ckpt").iterdir() if p.suffix == ".index") == [
        "ckpt-20.index",
        "ckpt-30.index",
    ]
    assert list((tmp_path / "scratch").iterdir()) == []


def stop_at_step_20(run: Path) -> None:
    """Leaves `run` as a run of 30 steps stopped right after its checkpoint of step 20 (the
    learning-rate schedule depends on the step target, so a 20-step run would not do)."""
    directory = run / "ckpt"
    for path in directory.glob(f"ckpt-{STEPS}.*"):
        path.unlink()
    kept = str(directory / "ckpt-20")
    tf.compat.v1.train.update_checkpoint_state(
        str(directory), kept, all_model_checkpoint_paths=[kept]
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
def test_resume_under_a_strategy_ends_where_an_uninterrupted_run_does(
    strategy, data_args, one_device_runs, tmp_path
):
    """Stopped at step 20 on one device, resumed to 30 under `strategy`."""
    run = tmp_path / "resumed"
    args = [*data_args, *LSTM, *COMMON]
    train_one_device(run, [*args, "--steps", str(STEPS)], tmp_path)
    stop_at_step_20(run)
    resume = train_mirrored if strategy == "mirrored" else train_cluster
    resume(run, [*args, "--steps", str(STEPS)], tmp_path, "--resume")
    assert_same_training(run, one_device_runs["lstm"])


@pytest.mark.slow
def test_a_mirrored_run_resumes_under_mirrored(data_args, one_device_runs, tmp_path):
    run = tmp_path / "resumed"
    args = [*data_args, *LSTM, *COMMON]
    train_mirrored(run, [*args, "--steps", str(STEPS)], tmp_path)
    stop_at_step_20(run)
    log = train_mirrored(run, [*args, "--steps", str(STEPS)], tmp_path, "--resume")
    assert "resumed" in log and "at step 20 of 30" in log
    assert_same_training(run, one_device_runs["lstm"])


def one_line_error(args: list[str], env: dict[str, str]) -> str:
    process = subprocess.run(
        [sys.executable, "-m", "musicgen", "train", *args],
        env=env,
        capture_output=True,
        timeout=120,
    )
    stderr = process.stderr.decode()
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("musicgen: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "extra_env", "expected"),
    [
        (["--strategy", "multiworker"], {}, "needs the TF_CONFIG environment variable"),
        (["--strategy", "multiworker"], {"TF_CONFIG": "{not json"}, "TF_CONFIG is not a valid"),
        (
            ["--strategy", "multiworker"],
            {
                "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", '
                '"index": 3}}'
            },
            "is not in its cluster",
        ),  # fmt: skip
        (
            ["--strategy", "mirrored", "--batch-size", "7"],
            {"MUSICGEN_LOGICAL_CPUS": "2"},
            "does not split evenly over 2 replicas",
        ),
        (["--strategy", "mirrored", "--xla"], {}, "cannot be used with --strategy mirrored"),
    ],
)
def test_a_strategy_that_cannot_work_is_one_line_error(
    options, extra_env, expected, data_args, tmp_path
):
    env = environment(tmp_path, **extra_env)
    line = one_line_error(
        ["--run-dir", str(tmp_path / "run"), *data_args, *LSTM, "--steps", "2", *options], env
    )
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_shards_of_every_batch_together_are_the_whole_batch():
    """Two pipelines (workers) of two replicas each read exactly the single-device batches."""
    files = [p for label, p in default_corpus_files() if "oneills1850/" in label][:1]
    from musicgen.data.corpus import load_corpus

    tunes, _ = load_corpus(files)
    vocab = Vocabulary.from_texts(t.text for t in tunes)
    ids = encode_stream(tunes, vocab)
    common = dict(shuffle=True, seed=7, repeat=True, tune_starts=tune_start_positions(ids), skip=3)
    whole = list(make_dataset(ids, 32, 8, **common).take(4))
    parts = []
    for pipeline in range(2):
        shard = Shard(pipeline=pipeline, pipelines=2, replicas=2, replica_batch=2)
        parts.append(list(make_dataset(ids, 32, 8, shard=shard, **common).take(8)))
    for step, (inputs, targets) in enumerate(whole):
        # Worker 0's two replica batches, then worker 1's.
        pieces = [parts[p][2 * step + r] for p in range(2) for r in range(2)]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in pieces]), inputs.numpy())
        np.testing.assert_array_equal(np.concatenate([y for _, y in pieces]), targets.numpy())
    assert len({tuple(x.numpy()[0]) for x, _ in whole}) == 4  # the batches do differ


def test_a_memory_mapped_stream_gives_the_same_windows(tmp_path):
    files = [p for label, p in default_corpus_files() if "oneills1850/" in label][:1]
    from musicgen.data.corpus import load_corpus

    tunes, _ = load_corpus(files)
    vocab = Vocabulary.from_texts(t.text for t in tunes)
    ids = encode_stream(tunes, vocab)
    np.save(tmp_path / "ids.npy", ids.astype(np.uint8))
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    for shuffle in (True, False):
        common = dict(shuffle=shuffle, seed=3, tune_starts=tune_start_positions(ids))
        expected = list(make_dataset(ids, 48, 4, **common).take(5))
        got = list(make_dataset(mapped, 48, 4, **common).take(5))
        assert len(got) == len(expected) == 5
        for (x, y), (ex, ey) in zip(got, expected):
            assert x.dtype == tf.int32 and x.shape == (4, 48)
            np.testing.assert_array_equal(x.numpy(), ex.numpy())
            np.testing.assert_array_equal(y.numpy(), ey.numpy())
