"""The run directory: preparing, refusing, loading for inference, and every way it can be broken."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from musicgen.config import ModelConfig, RunConfig  # noqa: E402
from musicgen.data.corpus import music21_corpus_folder
from musicgen.data.vocab import Vocabulary  # noqa: E402
from musicgen.errors import CheckpointError  # noqa: E402
from musicgen.runs.checkpoint import (  # noqa: E402
    checkpoint_manager,
    latest_checkpoint,
    load_for_inference,
    make_checkpoint,
    prepare_run_dir,
    remove_leftovers,
)
from musicgen.runs.runfiles import load_run  # noqa: E402
from musicgen.runs.weights import build_model_for  # noqa: E402

TUNEBOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"


@pytest.fixture(scope="module")
def tune_texts() -> list[str]:
    text = TUNEBOOK.read_text(encoding="latin-1")
    return ["X:" + part for part in text.split("\nX:")[1:6]]


@pytest.fixture(scope="module")
def vocab(tune_texts) -> Vocabulary:
    return Vocabulary.from_texts(tune_texts)


@pytest.fixture(scope="module")
def config(vocab) -> RunConfig:
    return RunConfig(
        model=ModelConfig(vocab_size=len(vocab), embedding_dim=8, units=16, layers=2, dropout=0.0)
    )


def make_run(run_dir: Path, config: RunConfig, vocab: Vocabulary, step: int = 5):
    """A run directory holding one checkpoint of a freshly initialised model; returns the model."""
    prepare_run_dir(run_dir, config, vocab, resume=False)
    model = build_model_for(config)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    step_variable = tf.Variable(step, dtype=tf.int64)
    manager = checkpoint_manager(run_dir, make_checkpoint(model, optimizer, step_variable), 2)
    manager.save(checkpoint_number=step)
    return model


@pytest.fixture
def run(tmp_path, config, vocab):
    run_dir = tmp_path / "run"
    return run_dir, make_run(run_dir, config, vocab)


def test_loaded_model_gives_the_same_logits(run, vocab, tune_texts):
    run_dir, model = run
    loaded, loaded_vocab, loaded_config = load_for_inference(run_dir)
    assert loaded_vocab.characters == vocab.characters
    assert loaded_config.model == dataclasses.replace(loaded_config.model, vocab_size=len(vocab))
    ids = tf.constant([vocab.encode_tune(tune_texts[0])[:200]], tf.int32)
    np.testing.assert_array_equal(model(ids).numpy(), loaded(ids).numpy())
    assert len(loaded.weights) == len(model.weights)


def test_prepare_writes_config_and_vocab_that_load_back(run, config, vocab):
    run_dir, _ = run
    loaded_config, loaded_vocab = load_run(run_dir)
    assert loaded_config == config
    assert loaded_vocab.characters == vocab.characters


def test_missing_config_is_named(run):
    run_dir, _ = run
    (run_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_for_inference(run_dir)


def test_missing_vocab_is_named(run):
    run_dir, _ = run
    (run_dir / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="vocab.json"):
        load_for_inference(run_dir)


def test_missing_checkpoint_is_named(tmp_path, config, vocab):
    prepare_run_dir(tmp_path / "run", config, vocab, resume=False)
    with pytest.raises(CheckpointError, match="ckpt.*no checkpoint"):
        load_for_inference(tmp_path / "run")


def test_missing_run_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory"):
        load_for_inference(tmp_path / "nowhere")


def test_vocabulary_that_does_not_fit_the_weights_is_detected(run, config):
    run_dir, _ = run
    bigger = Vocabulary([*load_run(run_dir)[1].characters, "\u00e9"])
    bigger.save(run_dir / "vocab.json")
    # vocab.json alone disagrees with config.json ...
    with pytest.raises(CheckpointError, match="vocab.json.*different runs"):
        load_for_inference(run_dir)
    # ... and when both are changed they disagree with the weights.
    grown = dataclasses.replace(config.model, vocab_size=len(bigger))
    dataclasses.replace(config, model=grown).save(run_dir / "config.json")
    with pytest.raises(CheckpointError, match="vocabulary does not match the weights"):
        load_for_inference(run_dir)


def test_model_settings_that_do_not_fit_the_weights_are_detected(run, config):
    run_dir, _ = run
    for change in ({"layers": 3}, {"layers": 1}, {"units": 24}):
        model = dataclasses.replace(config.model, **change)
        dataclasses.replace(config, model=model).save(run_dir / "config.json")
        with pytest.raises(CheckpointError, match="config.json does not match the weights"):
            load_for_inference(run_dir)


def test_corrupt_checkpoint_is_a_checkpoint_error(run):
    run_dir, _ = run
    data_file = next((run_dir / "ckpt").glob("*.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="ckpt"):
        load_for_inference(run_dir)


def test_a_new_run_into_a_run_directory_is_refused(run, config, vocab):
    run_dir, _ = run
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        prepare_run_dir(run_dir, config, vocab, resume=False)


def test_a_new_run_may_reuse_a_directory_without_checkpoint(tmp_path, config, vocab):
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, config, vocab, resume=False)
    (run_dir / "metrics.jsonl").write_text('{"step": 10}\n')
    prepare_run_dir(run_dir, config, vocab, resume=False)
    assert not (run_dir / "metrics.jsonl").exists()


def test_resume_requires_the_same_vocabulary_and_model(run, config, vocab):
    run_dir, _ = run
    other_vocab = Vocabulary([*vocab.characters[:-1], "\u00e9"])
    with pytest.raises(CheckpointError, match="vocab.json.*differs"):
        prepare_run_dir(run_dir, config, other_vocab, resume=True)
    wider = dataclasses.replace(config, model=dataclasses.replace(config.model, units=64))
    with pytest.raises(CheckpointError, match="units 16 -> 64"):
        prepare_run_dir(run_dir, wider, vocab, resume=True)
    longer = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=99))
    prepare_run_dir(run_dir, longer, vocab, resume=True)
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 99


def test_resume_without_a_run_names_the_missing_file(tmp_path, config, vocab):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        prepare_run_dir(tmp_path / "empty", config, vocab, resume=True)


def test_a_half_written_checkpoint_is_never_the_latest(run):
    """TensorFlow names a checkpoint in ckpt/checkpoint only after writing it: files of a save cut
    short (here, faked) are ignored."""
    run_dir, _ = run
    (run_dir / "ckpt" / "ckpt-9.index").write_bytes(b"partial")
    (run_dir / "ckpt" / "ckpt-9.data-00000-of-00001").write_bytes(b"")
    assert latest_checkpoint(run_dir).endswith("ckpt-5")
    load_for_inference(run_dir)


def test_inference_model_is_float32_under_a_mixed_global_policy(run):
    run_dir, _ = run
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, _, _ = load_for_inference(run_dir)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.compute_dtype == "float32"


def test_leftovers_of_a_killed_write_are_removed_and_nothing_else(run):
    run_dir, _ = run
    ckpt = run_dir / "ckpt"
    (ckpt / "ckpt-9_temp").mkdir()
    (ckpt / "ckpt-9_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_text("x")
    (ckpt / "checkpoint.tmp0123abcd").write_text("partial")
    (run_dir / ".metrics.jsonl.x1y2.tmp").write_text("partial")
    before = {p for p in run_dir.rglob("*") if "tmp" not in p.name and "_temp" not in str(p)}
    removed = remove_leftovers(run_dir)
    names = {p.name for p in removed}
    assert names == {"ckpt-9_temp", "checkpoint.tmp0123abcd", ".metrics.jsonl.x1y2.tmp"}
    assert set(run_dir.rglob("*")) == before
    load_for_inference(run_dir)
