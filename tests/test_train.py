"""Training on real tunes with a tiny model: loss falls, files appear, resume is exact."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib.image  # noqa: E402
import tensorflow as tf  # noqa: E402
from run_checks import read_checkpoint, training_fixture, tunes_from  # noqa: E402
from tensorflow.core.util import event_pb2  # noqa: E402

import musicgen.training.train as train_module  # noqa: E402
from musicgen.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from musicgen.data.corpus import music21_corpus_folder
from musicgen.data.tune_split import split_corpus  # noqa: E402
from musicgen.data.vocab import PAD  # noqa: E402
from musicgen.errors import CheckpointError, CorpusError, VocabularyError  # noqa: E402
from musicgen.music.abc import Tune  # noqa: E402
from musicgen.runs.checkpoint import load_for_inference  # noqa: E402
from musicgen.training.steps import learning_rate_schedule, loss_sum, make_optimizer, train_step  # noqa: E402
from musicgen.training.train import train  # noqa: E402

TUNEBOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"
STEPS = 60


TINY = RunConfig(
    data=DataConfig(seq_length=64),
    model=ModelConfig(embedding_dim=8, units=32, layers=1, dropout=0.1),
    train=TrainConfig(
        steps=STEPS,
        batch_size=32,
        learning_rate=3e-2,
        warmup_steps=5,
        eval_every=20,
        eval_batches=4,
        checkpoint_every=25,
        keep_checkpoints=3,
        random_seed=7,
    ),
)


@pytest.fixture(scope="module")
def tunes() -> list[Tune]:
    tunes = tunes_from(TUNEBOOK)
    assert len(tunes) == 50
    return tunes


@training_fixture(scope="module")
def trained(tunes, tmp_path_factory):
    """One tiny run of STEPS steps: (result, run_dir, log messages)."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    messages: list[str] = []
    corpus = split_corpus(tunes, TINY.data)
    summary = "50 O'Neill tunes"
    result = train(
        TINY, corpus, run_dir, corpus_summary=summary, progress=False, log=messages.append
    )
    return result, run_dir, messages


@pytest.mark.slow
def test_validation_loss_falls_within_sixty_steps(trained):
    result, run_dir, _ = trained
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    validation = [(e["step"], e["val_bits_per_char"]) for e in entries if "val_bits_per_char" in e]
    assert [step for step, _ in validation] == [0, 20, 40, 60]
    first, last = validation[0][1], validation[-1][1]
    # Untrained: about log2(vocabulary size) bits; a model that has learnt the letter frequencies
    # and some ABC syntax is well over a bit per character better (about 1.9 when written).
    assert first > 6.0
    assert last < first - 1.2
    assert result.val_bits_per_char == pytest.approx(last)
    assert result.step == STEPS and result.steps_run == STEPS
    assert result.chars_per_sec > 0 and math.isfinite(result.train_loss)


def test_metrics_tensorboard_plot_and_corpus_record_are_written(trained, tunes):
    result, run_dir, messages = trained
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == list(range(0, STEPS + 1, 10))
    for entry in entries[1:]:
        assert {"loss", "bits_per_char", "chars_per_sec", "lr", "elapsed"} <= set(entry)
        assert entry["bits_per_char"] == pytest.approx(entry["loss"] / math.log(2))
    peak = TINY.train.learning_rate
    assert max(e["lr"] for e in entries) == pytest.approx(peak, rel=0.05)
    assert entries[-1]["lr"] == pytest.approx(peak / 10, rel=0.05)  # cosine down to 10%

    tags = set()
    for event_file in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = event_pb2.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {"train/bits_per_char", "validation/bits_per_char", "train/learning_rate"} <= tags

    image = matplotlib.image.imread(result.plot_path)
    assert image.shape[0] >= 300 and image.shape[1] >= 500

    corpus = json.loads((run_dir / "corpus.json").read_text())
    assert corpus["summary"] == "50 O'Neill tunes"
    assert corpus["train_tunes"] + corpus["validation_tunes"] == len(tunes)
    assert corpus["validation_tunes"] >= 1
    assert not set(corpus["train_sources"]) & set(corpus["validation_sources"])
    assert any("CPU" in m or "GPU" in m for m in messages)
    model, _, _ = load_for_inference(run_dir)
    assert result.parameters == model.count_params() > 0
    assert any(f"; {result.parameters:,} parameters" in m for m in messages)


def test_checkpoints_are_kept_at_the_interval_and_at_the_end(trained):
    result, run_dir, _ = trained
    assert result.checkpoint.endswith("ckpt-60")
    for step in (25, 50, 60):
        assert (run_dir / "ckpt" / f"ckpt-{step}.index").exists()
    assert read_checkpoint(result.checkpoint)["step/.ATTRIBUTES/VARIABLE_VALUE"] == STEPS


@pytest.mark.slow
def test_interrupted_then_resumed_run_equals_the_uninterrupted_one(trained, tunes, tmp_path):
    """Checkpoint, resume and the data pipeline together: the weights end bit-for-bit the same."""
    _, reference_dir, _ = trained
    run_dir = tmp_path / "interrupted"
    seen = []

    def interrupt_at_33(step, figures):
        seen.append((step, figures))
        if step == 33:
            raise KeyboardInterrupt

    messages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train(TINY, split_corpus(tunes, TINY.data),
              run_dir, progress=False, log=messages.append, on_step=interrupt_at_33)
    assert [step for step, _ in seen] == list(range(1, 34))
    assert seen[-1][1]["step"] == 30 and "bits_per_char" in seen[-1][1]  # the latest record
    assert "interrupted at step 33" in messages[-1] and "--resume" in messages[-1]
    saved = read_checkpoint(str(run_dir / "ckpt" / "ckpt-33"))
    assert saved["step/.ATTRIBUTES/VARIABLE_VALUE"] == 33

    # Loading restores the weights exactly.
    model, _, _ = load_for_inference(run_dir)
    for key, variable in {v.path.split("/", 1)[1]: v for v in model.weights}.items():
        name = "model_weights/" + key.replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"
        assert np.array_equal(variable.numpy(), saved[name]), key

    result = train(TINY, split_corpus(tunes, TINY.data),
                   run_dir, resume=True, progress=False, log=messages.append)
    assert result.step == STEPS and result.steps_run == STEPS - 33
    assert any("resumed" in m and "step 33" in m for m in messages)

    finished = read_checkpoint(result.checkpoint)
    reference = read_checkpoint(str(reference_dir / "ckpt" / "ckpt-60"))
    assert finished.keys() == reference.keys()
    for name, value in reference.items():
        assert np.array_equal(finished[name], value), name
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


def test_resuming_a_finished_run_does_nothing_and_more_steps_continue(trained, tunes, tmp_path):
    _, reference_dir, _ = trained
    run_dir = tmp_path / "copy"
    shutil.copytree(reference_dir, run_dir)
    messages: list[str] = []
    result = train(TINY, split_corpus(tunes, TINY.data),
                   run_dir, resume=True, progress=False, log=messages.append)
    assert result.steps_run == 0 and result.step == STEPS
    assert any("nothing to do" in m for m in messages)
    assert result.val_bits_per_char is not None

    longer = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=STEPS + 5))
    result = train(longer, split_corpus(tunes, longer.data),
                   run_dir, resume=True, progress=False, log=messages.append)
    assert result.step == STEPS + 5 and result.steps_run == 5
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == STEPS + 5


def test_a_new_run_into_an_existing_run_is_refused(trained, tunes):
    _, run_dir, _ = trained
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(TINY, split_corpus(tunes, TINY.data), run_dir, progress=False, log=lambda _: None)


def test_resume_refuses_tunes_with_characters_outside_the_vocabulary(trained, tunes, tmp_path):
    _, reference_dir, _ = trained
    run_dir = tmp_path / "copy"
    shutil.copytree(reference_dir, run_dir)
    strange = [
        *tunes,
        dataclasses.replace(
            tunes[0], text=tunes[0].text.replace("T:", "T:\u00e9\u00df", 1), source="made-up"
        ),
    ]
    with pytest.raises(VocabularyError, match="lacks"):
        train(TINY, split_corpus(strange, TINY.data),
              run_dir, resume=True, progress=False, log=lambda _: None)


def test_too_few_characters_is_a_corpus_error_before_the_run_dir_is_made(tunes, tmp_path):
    config = dataclasses.replace(TINY, data=DataConfig(seq_length=8192))
    with pytest.raises(CorpusError, match="--seq-length"):
        train(config, split_corpus(tunes[:3], config.data),
              tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_float16_training_uses_loss_scaling_and_restores_the_policy(tunes, tmp_path, monkeypatch):
    """CPUs get bfloat16; the float16 path (a GPU's) is forced here to exercise loss scaling."""

    def float16(enabled):
        keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")
        return keras.mixed_precision.global_policy().name

    monkeypatch.setattr(train_module, "set_mixed_precision", float16)
    config = dataclasses.replace(
        TINY, train=dataclasses.replace(TINY.train, steps=6, mixed_precision=True)
    )
    result = train(config, split_corpus(tunes, config.data),
                   tmp_path / "f16", progress=False, log=lambda _: None)
    assert math.isfinite(result.train_loss)
    assert keras.mixed_precision.global_policy().name == "float32"
    names = read_checkpoint(result.checkpoint)
    assert any("dynamic_scale" in name for name in names)
    model, _, _ = load_for_inference(tmp_path / "f16")
    assert model.compute_dtype == "float32"


def test_the_loss_ignores_pad_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(4, 7, size=(2, 5)).astype(np.int32)
    targets[0, 3:] = PAD
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    expected = picked[targets != PAD].mean()
    total, count = loss_sum(tf.constant(targets), tf.constant(logits))
    assert float(count) == np.count_nonzero(targets != PAD)
    assert float(total / count) == pytest.approx(expected, rel=1e-5)


def test_train_step_is_traced_once_for_many_batches():
    from musicgen.runs.weights import build_model_for

    config = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, vocab_size=20))
    model = build_model_for(config)
    optimizer = make_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    compiled = tf.function(train_step)
    rng = np.random.default_rng(1)
    for _ in range(3):
        batch = tf.constant(rng.integers(4, 20, size=(4, 9)), tf.int32)
        compiled(model, optimizer, step, batch, batch)
    assert compiled.experimental_get_tracing_count() == 1
    assert int(step.numpy()) == 3 and int(optimizer.iterations.numpy()) == 3


def test_schedule_warms_up_then_decays_to_a_tenth():
    schedule = learning_rate_schedule(TrainConfig(steps=1000, warmup_steps=100, learning_rate=2e-3))
    values = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert 0 < values[0] < values[1] < values[2]
    assert values[2] == pytest.approx(2e-3)
    assert values[3] == pytest.approx(2e-3 * 0.55, rel=0.02)  # half way down the cosine
    assert values[4] == pytest.approx(2e-4, rel=0.01)
