"""The Transformer decoder: cached decoding equals the full pass, the mask hides the future, the
sliding window agrees with scoring, the decode loop is traced once, training and attention maps
work on real tunes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib.image  # noqa: E402
import tensorflow as tf  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from musicgen.cli import main  # noqa: E402
from musicgen.config import DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig  # noqa: E402
from musicgen.data.tune_split import split_corpus  # noqa: E402
from musicgen.data.vocab import BOS, Vocabulary  # noqa: E402
from musicgen.errors import MusicgenError  # noqa: E402
from musicgen.generation.attention import write_attention_maps  # noqa: E402
from musicgen.generation.generate import Generator  # noqa: E402
from musicgen.models import build_model  # noqa: E402
from musicgen.music.abc import read_text_file, split_tunebook  # noqa: E402
from musicgen.runs.checkpoint import load_for_inference  # noqa: E402
from musicgen.runs.metrics import read_metrics  # noqa: E402
from musicgen.training.train import train  # noqa: E402

TUNEBOOK = Path(__file__).parent / "data" / "abc" / "tunebook.abc"
TINY = ModelConfig(
    kind="transformer", vocab_size=40, layers=2, d_model=16, heads=2, ff_dim=32, context=12,
    dropout=0.0,
)  # fmt: skip


def tiny_model(config: ModelConfig = TINY):
    tf.keras.utils.set_random_seed(3)
    model = build_model(config)
    model(tf.zeros((1, 1), tf.int32))
    return model


def random_ids(batch: int, time: int, seed: int = 0):
    return tf.constant(np.random.default_rng(seed).integers(4, 40, (batch, time)), tf.int32)


def stepwise_logits(model, ids):
    """Logits from feeding `ids` one character at a time through the key/value cache."""
    state = model.initial_state(ids.shape[0])
    logits = []
    for t in range(ids.shape[1]):
        step_logits, state = model.step(ids[:, t], state)
        logits.append(step_logits)
    return tf.stack(logits, axis=1).numpy()


def test_cached_steps_equal_the_full_forward_pass():
    model = tiny_model()
    ids = random_ids(3, TINY.context)
    full = model(ids).numpy()
    assert np.abs(stepwise_logits(model, ids) - full).max() < 1e-4


def test_cache_primed_from_a_prompt_continues_like_the_full_pass():
    model = tiny_model()
    ids = random_ids(2, TINY.context)
    _, state = model(ids[:, :5], return_state=True)
    logits = []
    for t in range(5, TINY.context):
        step_logits, state = model.step(ids[:, t], state)
        logits.append(step_logits)
    full = model(ids).numpy()[:, 5:]
    assert np.abs(np.stack(logits, axis=1) - full).max() < 1e-4


def test_causal_mask_hides_later_characters():
    model = tiny_model()
    ids = random_ids(1, TINY.context).numpy()
    changed = ids.copy()
    changed[0, 7:] = (changed[0, 7:] - 4 + 11) % 36 + 4  # other characters from position 7 on
    before, after = model(ids).numpy(), model(changed).numpy()
    assert np.abs(before[0, :7] - after[0, :7]).max() == 0.0
    assert np.abs(before[0, 7:] - after[0, 7:]).max() > 1e-3  # and the later ones do change


def test_attention_weights_are_causal_distributions():
    model = tiny_model()
    maps = model.attention_maps(random_ids(1, 9))
    assert len(maps) == TINY.layers
    for weights in maps:
        assert weights.shape == (1, TINY.heads, 9, 9)
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
        assert np.abs(np.triu(weights[0, 0], k=1)).max() == 0.0


def test_sliding_window_steps_equal_sequence_scoring():
    # Past the context the cache slides; scoring a long sequence must see the same windows.
    model = tiny_model()
    ids = random_ids(2, 4 * TINY.context + 3, seed=1)
    np.testing.assert_allclose(
        stepwise_logits(model, ids), model.sequence_logits(ids).numpy(), atol=1e-4
    )


def test_steps_compiled_with_xla_equal_the_full_pass():
    # Generation runs the steps inside one XLA program, where the cache is written in place.
    model = tiny_model()
    ids = random_ids(2, 2 * TINY.context + 5, seed=2)

    @tf.function(jit_compile=True)
    def compiled_steps(ids):
        state, logits = model.initial_state(2), []
        for t in range(ids.shape[1]):
            step_logits, state = model.step(ids[:, t], state)
            logits.append(step_logits)
        return tf.stack(logits, axis=1)

    np.testing.assert_allclose(
        compiled_steps(ids).numpy(), model.sequence_logits(ids).numpy(), atol=1e-4
    )


def test_sequence_logits_within_the_context_is_the_plain_call():
    model = tiny_model()
    ids = random_ids(2, 10)
    np.testing.assert_array_equal(model.sequence_logits(ids).numpy(), model(ids).numpy())


def test_width_must_split_into_heads():
    # ModelConfig refuses it first (a ConfigError naming the field); the model checks again.
    with pytest.raises(MusicgenError, match="multiple of heads"):
        build_model(dataclasses.replace(TINY, d_model=18, heads=4))


@pytest.fixture(scope="module")
def vocab_and_model():
    tunes = split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]
    vocab = Vocabulary.from_texts([t.text for t in tunes])
    config = dataclasses.replace(TINY, vocab_size=len(vocab), context=32)
    return vocab, tiny_model(config)


def test_generation_beyond_the_context_follows_the_scored_argmax(vocab_and_model):
    # top_k=1 takes the likeliest character each step inside the compiled loop, sliding the window
    # twice; scoring the result afresh must find each character was the argmax at its position.
    vocab, model = vocab_and_model
    seed = "X:1\nT:A\n"  # with a title: a seed without one gets a model-written title first
    config = SampleConfig(num=2, top_k=1, top_p=1.0, max_length=96, temperature=1.0)
    texts = Generator(model, vocab).generate(seed, config)
    for text in texts:
        ids = [BOS, *vocab.encode(text)]
        logits = model.sequence_logits(tf.constant([ids], tf.int32)).numpy()[0]
        forbidden = [0, 1, 3]  # PAD, BOS, UNK are never sampled
        logits[:, forbidden] = -np.inf
        predicted = logits.argmax(axis=-1)
        generated = slice(len(seed), len(ids) - 1)
        np.testing.assert_array_equal(predicted[generated], ids[generated.start + 1 :])
        assert len(ids) - 1 > 64  # the window slid at least once


def test_decode_loop_is_traced_once_for_any_setting(vocab_and_model):
    vocab, model = vocab_and_model
    generator = Generator(model, vocab)
    generator.generate("", SampleConfig(num=2, max_length=40))
    generator.generate("X:1\nT:A\n", SampleConfig(num=5, max_length=70, temperature=1.3, top_k=5))
    generator.generate("X:2\n", SampleConfig(num=1, max_length=20, top_p=0.5, random_seed=9))
    assert generator.tracing_counts["decode"] == 1


def test_a_seed_longer_than_the_context_is_read_through_its_last_window(vocab_and_model):
    vocab, model = vocab_and_model
    seed = "X:1\nT:Long\nM:6/8\nL:1/8\nK:D\n" + "ABc dBA|" * 8
    assert len(seed) > model.context
    texts = Generator(model, vocab).generate(seed, SampleConfig(num=2, max_length=len(seed) + 20))
    assert all(text.startswith(seed) and len(text) > len(seed) for text in texts)


def test_attention_maps_are_written_one_png_per_layer_and_head(vocab_and_model, tmp_path):
    vocab, model = vocab_and_model
    text = split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0][0].text
    summaries = write_attention_maps(model, vocab, text, tmp_path, "The Tune/../x")
    assert len(summaries) == TINY.layers * TINY.heads
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == sorted(Path(s.path).name for s in summaries)
    assert all(f.name.startswith("The_Tune_x-layer") for f in files)
    image = matplotlib.image.imread(files[0])
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert all(0 < s.mean_distance < model.context for s in summaries)


def tiny_run_config(steps: int = 30) -> RunConfig:
    return RunConfig(
        data=DataConfig(seq_length=48),
        model=dataclasses.replace(TINY, vocab_size=0, context=48),
        train=TrainConfig(
            steps=steps, batch_size=16, learning_rate=1e-2, warmup_steps=5, eval_every=15,
            eval_batches=2, checkpoint_every=15, random_seed=5,
        ),
    )  # fmt: skip


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_run_generates(tmp_path):
    tunes = split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]
    result = train(tiny_run_config(), split_corpus(tunes, tiny_run_config().data),
                   tmp_path / "run", progress=False, log=lambda m: None)
    logged = [e["bits_per_char"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl")
              if "bits_per_char" in e]  # fmt: skip
    assert result.step == 30 and logged[-1] < logged[0] - 0.5
    model, vocab, config = load_for_inference(tmp_path / "run")
    assert config.model.kind == "transformer" and model.context == 48
    texts = Generator(model, vocab).generate("X:1\n", SampleConfig(num=3, max_length=120))
    assert len(texts) == 3 and all(t.startswith("X:1\n") for t in texts)


def test_windows_longer_than_the_context_are_refused(tmp_path):
    tunes = split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]
    config = tiny_run_config()
    config = dataclasses.replace(config, data=DataConfig(seq_length=100))
    with pytest.raises(MusicgenError, match="--context"):
        train(config, split_corpus(tunes, config.data),
              tmp_path / "run", progress=False, log=lambda m: None)


@pytest.mark.slow
def test_cli_trains_a_transformer_and_draws_its_attention(tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    trained = runner.invoke(main, [
        "train", "--data", str(TUNEBOOK), "--run-dir", str(run_dir), "--model", "transformer",
        "--layers", "1", "--d-model", "16", "--heads", "2", "--ff-dim", "32", "--context", "40",
        "--steps", "12", "--batch-size", "8", "--eval-every", "6",
    ])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    config = RunConfig.load(run_dir / "config.json")
    assert (config.model.kind, config.model.context, config.data.seq_length) == (
        "transformer", 40, 40,
    )  # fmt: skip
    maps = tmp_path / "maps"
    generated = runner.invoke(main, [
        "generate", "--run-dir", str(run_dir), "--num", "2", "--out", str(tmp_path / "out"),
        "--no-audio", "--max-length", "200", "--attention", str(maps),
    ])  # fmt: skip
    assert generated.exit_code == 0, generated.output
    assert len(list(maps.glob("*-layer1-head*.png"))) == 2
    assert "looks farthest back" in generated.output
    # evaluate scores whole tunes (longer than the 40-character context) through the window.
    evaluated = runner.invoke(main, [
        "evaluate", "--run-dir", str(run_dir), "--num", "2", "--max-length", "120",
        "--out", str(tmp_path / "evaluation"), "--json",
    ])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert 0 < result["likelihood"]["bits_per_char"] < 10


@pytest.mark.slow
def test_cli_refuses_attention_maps_for_an_lstm(tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    trained = runner.invoke(main, [
        "train", "--data", str(TUNEBOOK), "--run-dir", str(run_dir), "--units", "8",
        "--embedding-dim", "4", "--layers", "1", "--steps", "3", "--batch-size", "4",
    ])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(main, [
        "generate", "--run-dir", str(run_dir), "--out", str(tmp_path / "out"),
        "--attention", str(tmp_path / "maps"),
    ])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("musicgen: error: attention maps")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["mixed_precision", "xla"])
def test_precision_and_xla_flags_train_the_transformer(tmp_path, flag):
    # bfloat16 on this CPU (float16 with loss scaling on a GPU); XLA compiles the same train step.
    tunes = split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]
    plain = tiny_run_config(steps=10)
    flagged = dataclasses.replace(plain, train=dataclasses.replace(plain.train, **{flag: True}))
    quiet = {"progress": False, "log": lambda m: None}
    expected = train(plain, split_corpus(tunes, plain.data), tmp_path / "plain", **quiet)
    result = train(flagged, split_corpus(tunes, flagged.data), tmp_path / flag, **quiet)
    # XLA reorders float32 arithmetic a little; bfloat16 keeps about 3 significant digits.
    tolerance = 0.02 if flag == "xla" else 0.15
    assert result.train_loss == pytest.approx(expected.train_loss, abs=tolerance)
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    model, vocab, _ = load_for_inference(tmp_path / flag)
    ids = tf.constant([[BOS, *vocab.encode(tunes[0].text[:40])]], tf.int32)
    assert np.abs(stepwise_logits(model, ids) - model(ids).numpy()).max() < 1e-4


@pytest.mark.slow
def test_resumed_transformer_run_ends_with_the_uninterrupted_weights(tmp_path):
    # Every block's weights and the optimizer's slots must be in the checkpoint for this to hold.
    tunes = split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]
    quiet = {"progress": False, "log": lambda m: None}
    whole = train(tiny_run_config(), split_corpus(tunes, tiny_run_config().data),
                  tmp_path / "whole", **quiet)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole", resumed_dir)
    ckpt_dir = resumed_dir / "ckpt"
    for path in ckpt_dir.glob("ckpt-30.*"):
        path.unlink()
    # The index TensorFlow's CheckpointManager reads, as it was right after step 15.
    index = 'model_checkpoint_path: "ckpt-15"\nall_model_checkpoint_paths: "ckpt-15"\n'
    (ckpt_dir / "checkpoint").write_text(index)
    resumed = train(tiny_run_config(), split_corpus(tunes, tiny_run_config().data),
                    resumed_dir, resume=True, **quiet)
    assert (resumed.step, resumed.steps_run) == (30, 15)
    expected = tf.train.load_checkpoint(whole.checkpoint)
    actual = tf.train.load_checkpoint(resumed.checkpoint)
    names = [n for n in expected.get_variable_to_shape_map() if n.startswith("model_weights/")]
    assert any("block_1" in n for n in names)
    for name in names:
        np.testing.assert_array_equal(actual.get_tensor(name), expected.get_tensor(name), name)
