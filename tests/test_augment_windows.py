"""Issue 13's training candidates: transposition as data augmentation (`musicgen.data.augment`) and
windows from a tune's start that hold it whole (`dataset.make_tune_dataset`).

Augmentation on real O'Neill tunes: the training tunes multiply, the validation tunes stay as
they are, each copy renders to its tune's pitches moved by the interval, the cache key names the
intervals. Whole-tune windows: every character a target exactly once a pass, padding adds nothing
to the loss or the gradient (LSTM and Transformer), shards and memory maps give the same batches,
and resume ends bit-identical with both candidates on.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from run_checks import read_checkpoint  # noqa: E402

from musicgen.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from musicgen.data.augment import augment_tunes, parse_shifts  # noqa: E402
from musicgen.data.corpus import corpus_files, music21_corpus_folder  # noqa: E402
from musicgen.data.dataset import (  # noqa: E402
    Shard,
    bucket_widths,
    make_tune_dataset,
    tune_pieces,
    whole_tune_batches,
)
from musicgen.data.encoded import cache_key, load_encoded_corpus  # noqa: E402
from musicgen.data.split import split_tunes  # noqa: E402
from musicgen.data.tune_split import encode_stream, split_corpus, tune_start_positions  # noqa: E402
from musicgen.data.vocab import BOS, EOS, PAD, Vocabulary  # noqa: E402
from musicgen.errors import ConfigError  # noqa: E402
from musicgen.evaluation.evaluate import score_tunes  # noqa: E402
from musicgen.music import render  # noqa: E402
from musicgen.music.abc import read_text_file, split_tunebook  # noqa: E402
from musicgen.music.keyroot import movable_pairs  # noqa: E402
from musicgen.runs.checkpoint import load_for_inference  # noqa: E402
from musicgen.runs.weights import build_model_for  # noqa: E402
from musicgen.training.steps import loss_sum, train_step  # noqa: E402
from musicgen.training.train import train  # noqa: E402

TUNEBOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"
SHIFTS = (-3, 2)


@pytest.fixture(scope="module")
def tunes():
    return split_tunebook(read_text_file(TUNEBOOK), TUNEBOOK.name)[0]


def pitches(text: str) -> list[tuple[float, int]]:
    return [(note.start, note.pitch) for note in render.abc_to_performance(text).notes]


# ------------------------------------------------------------------------------------------------
# Augmentation


def test_augmentation_multiplies_training_tunes_and_leaves_validation_alone(tmp_path):
    plain = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path)
    augmented = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path, transpose=SHIFTS)
    report = augmented.augmentation
    originals = plain.tune_count("train")
    assert report.tunes == originals and report.shifts == SHIFTS
    assert report.copies + sum(report.skipped.values()) == originals * len(SHIFTS)
    assert report.copies > 0.9 * originals * len(SHIFTS)
    assert augmented.tune_count("train") == originals + report.copies
    assert list(augmented.texts("validation")) == list(plain.texts("validation"))
    assert plain.tune_count("validation") >= 1
    # Every original tune is still there, each followed by its copies.
    trained = list(augmented.texts("train"))
    assert set(plain.texts("train")) <= set(trained)
    assert trained[0] == next(plain.texts("train"))
    assert plain.augmentation is None and plain.transpose == ()


def test_tunes_in_memory_are_augmented_as_the_encoded_corpus_is(tunes, tmp_path):
    train_tunes, _ = split_tunes(tunes, 0.05)
    augmented, report = augment_tunes(train_tunes, SHIFTS)
    encoded = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path, transpose=SHIFTS)
    assert [t.text for t in augmented] == list(encoded.texts("train"))
    assert report.to_json() == encoded.augmentation.to_json()
    copy = augmented[1]
    assert copy.source == f"{train_tunes[0].source} transposed {SHIFTS[0]:+d}"
    assert f"K:{copy.key}" in copy.text and copy.key != train_tunes[0].key


def test_transposed_training_text_renders_to_the_original_pitches_shifted(tmp_path):
    encoded = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path, transpose=SHIFTS)
    texts = list(encoded.texts("train"))
    plain = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path)
    checked = 0
    position = 0
    for original in plain.texts("train"):
        assert texts[position] == original
        before = pitches(original)
        for offset, shift in enumerate(SHIFTS, start=1):
            moved = texts[position + offset]
            assert moved != original
            assert pitches(moved) == [(start, pitch + shift) for start, pitch in before]
            checked += 1
        position += 1 + len(SHIFTS)
    assert position == len(texts) and checked == len(texts) - plain.tune_count("train")


def test_a_copy_that_would_leave_midi_range_is_skipped_and_counted():
    from musicgen.music.abc import Tune

    low = Tune("X:1\nT:low\nM:4/4\nL:1/8\nK:C\nC,,,,,D,,,,E,,,,F,,,,|]\n", "low", "C", "4/4", "t#1")
    tunes, report = augment_tunes([low], (-1, 2))
    assert len(tunes) == 2 and report.copies == 1 and report.skipped == {"bad-note": 1}
    assert "1 skipped (bad-note 1)" in report.summary()


def test_the_cache_key_names_the_transpositions(tmp_path):
    files = corpus_files([TUNEBOOK])
    keys = {cache_key(files, 4, 0.05, shifts) for shifts in ((), (2,), (-2,), (-2, 2))}
    assert len(keys) == 4
    assert cache_key(files, 4, 0.05) == cache_key(files, 4, 0.05, ())
    first = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path, transpose=SHIFTS)
    plain = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path)
    again = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path, transpose=SHIFTS)
    assert not first.from_cache and not plain.from_cache and again.from_cache
    assert again.folder == first.folder != plain.folder
    assert again.augmentation.to_json() == first.augmentation.to_json()


def test_train_refuses_an_encoded_corpus_augmented_otherwise(tmp_path):
    encoded = load_encoded_corpus([TUNEBOOK], cache_dir=tmp_path, transpose=SHIFTS)
    config = RunConfig(data=DataConfig(transpose=(2,)))
    with pytest.raises(ValueError, match="transpositions"):
        train(config, encoded, tmp_path / "run", progress=False, log=lambda message: None)
    assert not (tmp_path / "run").exists()


def test_shift_options_and_config_values():
    assert parse_shifts("-5..6") == (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6)
    assert parse_shifts("2,-2, 5") == (-2, 2, 5) and parse_shifts("none") == ()
    for bad in ("a..b", "1,x", "-13..0"):
        with pytest.raises(ConfigError):
            parse_shifts(bad)
    assert DataConfig(transpose=[3, -1]).transpose == (-1, 3)
    for bad in ([0], [2, 2], [13], [1.5], [True], "12"):
        with pytest.raises(ConfigError, match="transpose"):
            DataConfig(transpose=bad)
    with pytest.raises(ConfigError, match="length_buckets"):
        DataConfig(length_buckets=0)
    config = RunConfig(data=DataConfig(transpose=(-2, 2), whole_tunes=True, length_buckets=3))
    assert RunConfig.from_json(config.to_json()) == config


# ------------------------------------------------------------------------------------------------
# Whole-tune windows


@pytest.fixture(scope="module")
def stream(tunes):
    vocab = Vocabulary.from_texts(t.text for t in tunes)
    ids = encode_stream(tunes, vocab)
    return vocab, ids, tune_start_positions(ids)


def test_pieces_start_at_tune_starts_and_make_every_character_a_target_once(stream):
    _, ids, starts = stream
    seq_length = 512  # 46 of the 50 tunes fit
    piece_starts, lengths = tune_pieces(starts, len(ids), seq_length)
    assert set(starts) <= set(piece_starts)
    assert lengths.max() == seq_length + 1 and lengths.min() >= 2
    targets = np.zeros(len(ids), int)
    for start, length in zip(piece_starts, lengths):
        targets[start + 1 : start + length] += 1
        assert EOS not in ids[start : start + length - 1]  # never runs into the next tune
    expected = np.ones(len(ids), int)
    expected[starts] = 0  # a BOS is never predicted
    np.testing.assert_array_equal(targets, expected)
    # Tunes that fit are one piece each, held whole from BOS to EOS.
    ends = np.append(starts[1:], len(ids))
    fits = ends - starts <= seq_length + 1
    assert fits.sum() == 46
    whole = dict(zip(piece_starts, lengths))
    for start, end in zip(starts[fits], ends[fits]):
        assert whole[start] == end - start and ids[start] == BOS and ids[end - 1] == EOS


def test_batches_are_reproducible_and_buckets_cut_the_padding(stream):
    _, ids, starts = stream
    _, lengths = tune_pieces(starts, len(ids), 512)
    one, widths_one = whole_tune_batches(lengths, 4, 512, 1, seed=5, epoch=2)
    again, _ = whole_tune_batches(lengths, 4, 512, 1, seed=5, epoch=2)
    other, _ = whole_tune_batches(lengths, 4, 512, 1, seed=5, epoch=3)
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)
    assert set(one.ravel()) == set(range(len(lengths))) and (widths_one == 512).all()
    bucketed, widths = whole_tune_batches(lengths, 4, 512, 4, seed=5, epoch=2)
    assert set(bucketed.ravel()) == set(range(len(lengths)))
    assert set(widths) <= set(bucket_widths(512, 4)) == {128, 256, 384, 512}
    assert (lengths[bucketed].max(axis=1) - 1 <= widths).all()
    assert widths.sum() < 0.8 * widths_one.sum()


def test_windows_are_the_tunes_padded_with_pad(stream):
    vocab, ids, starts = stream
    batches = make_tune_dataset(ids, starts, 512, 4, buckets=4, seed=1)
    seen = 0
    for inputs, targets in batches.take(6):
        inputs, targets = inputs.numpy(), targets.numpy()
        assert inputs.shape == targets.shape and inputs.shape[1] in (128, 256, 384, 512)
        for row_in, row_out in zip(inputs, targets):
            real = int((row_out != PAD).sum())
            assert (row_out[real:] == PAD).all() and (row_in[real + 1 :] == PAD).all()
            np.testing.assert_array_equal(row_in[1:real], row_out[: real - 1])
            if row_in[0] == BOS and row_out[real - 1] == EOS:
                text = vocab.decode(row_in[: real + 1])
                assert text in {t.text for t in split_tunebook(read_text_file(TUNEBOOK), "x")[0]}
                seen += 1
    assert seen >= 12  # most windows hold a tune whole


def test_shards_and_memory_maps_give_the_same_whole_tune_batches(stream, tmp_path):
    _, ids, starts = stream
    common = dict(buckets=4, seed=7, skip=3)
    whole = list(make_tune_dataset(ids, starts, 256, 8, **common).take(4))
    parts = []
    for pipeline in range(2):
        shard = Shard(pipeline=pipeline, pipelines=2, replicas=2, replica_batch=2)
        parts.append(list(make_tune_dataset(ids, starts, 256, 8, shard=shard, **common).take(8)))
    np.save(tmp_path / "ids.npy", ids.astype(np.uint8))
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    from_map = list(make_tune_dataset(mapped, starts, 256, 8, **common).take(4))
    for step, (inputs, targets) in enumerate(whole):
        pieces = [parts[p][2 * step + r] for p in range(2) for r in range(2)]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in pieces]), inputs.numpy())
        np.testing.assert_array_equal(np.concatenate([y for _, y in pieces]), targets.numpy())
        np.testing.assert_array_equal(from_map[step][0].numpy(), inputs.numpy())
        np.testing.assert_array_equal(from_map[step][1].numpy(), targets.numpy())
        assert from_map[step][0].dtype == tf.int32


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_padding_adds_nothing_to_the_loss_or_the_gradient(kind, stream):
    """One tune alone in a window of its length, and padded to 3x that: the same loss sum, count,
    logits on the tune and training step."""
    vocab, ids, starts = stream
    tune = ids[starts[0] : starts[1]].astype(np.int32)  # BOS tune EOS
    short = len(tune) - 1
    padded = np.concatenate([tune, np.full(2 * short, PAD, np.int32)])
    model_config = ModelConfig.defaults(kind)
    model_config = dataclasses.replace(
        model_config, vocab_size=len(vocab), embedding_dim=8, units=16, layers=1, d_model=16,
        heads=2, ff_dim=32, context=4 * short, dropout=0.0,
    )  # fmt: skip
    config = RunConfig(data=DataConfig(seq_length=3 * short), model=model_config)
    keras.utils.set_random_seed(3)
    models = [build_model_for(config), build_model_for(config)]
    models[1].set_weights(models[0].get_weights())
    windows = [tune[None, :], padded[None, :]]
    sums = []
    for model, window in zip(models, windows):
        inputs, targets = tf.constant(window[:, :-1]), tf.constant(window[:, 1:])
        logits = model(inputs, training=False)
        sums.append([float(v) for v in loss_sum(targets, logits)])
        np.testing.assert_allclose(logits[0, :short], models[0](windows[0][:, :-1])[0], atol=1e-5)
    assert sums[0][1] == sums[1][1] == short
    assert sums[1][0] == pytest.approx(sums[0][0], rel=1e-6)
    losses = []
    for model, window in zip(models, windows):
        optimizer = keras.optimizers.SGD(learning_rate=0.5)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64)
        inputs, targets = tf.constant(window[:, :-1]), tf.constant(window[:, 1:])
        losses.append(float(train_step(model, optimizer, step, inputs, targets, None, 1.0)))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[0] == pytest.approx(sums[0][0] / short, rel=1e-6)
    for before, after in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(after, before, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Training with both candidates


TINY = RunConfig(
    data=DataConfig(seq_length=256, transpose=(-2, 3), whole_tunes=True, length_buckets=4),
    model=ModelConfig(embedding_dim=8, units=24, layers=1, dropout=0.1),
    train=TrainConfig(
        steps=24, batch_size=8, learning_rate=2e-2, warmup_steps=4, eval_every=12,
        eval_batches=2, checkpoint_every=12, random_seed=11,
    ),
)  # fmt: skip


@pytest.mark.slow
def test_resume_ends_bit_identical_with_augmentation_and_whole_tunes(tunes, tmp_path):
    messages: list[str] = []
    reference = train(TINY, split_corpus(tunes, TINY.data),
                      tmp_path / "whole", progress=False, log=messages.append)
    augmented, report = augment_tunes(split_tunes(tunes, 0.05)[0], TINY.data.transpose)
    assert report.summary() in messages
    assert any(m.startswith(f"training on {len(augmented)} tunes") for m in messages)

    def interrupt_at_17(step, figures):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, split_corpus(tunes, TINY.data),
              tmp_path / "resumed", progress=False, log=messages.append,
              on_step=interrupt_at_17)  # fmt: skip
    result = train(TINY, split_corpus(tunes, TINY.data),
                   tmp_path / "resumed", resume=True, progress=False, log=print)
    assert result.step == 24 and result.steps_run == 7
    finished, expected = read_checkpoint(result.checkpoint), read_checkpoint(reference.checkpoint)
    assert finished.keys() == expected.keys()
    assert len(expected) > 10
    for name, value in expected.items():
        assert np.array_equal(finished[name], value), name
    assert reference.val_bits_per_char is not None and np.isfinite(reference.val_bits_per_char)


@pytest.mark.slow
def test_whole_tune_runs_validate_each_tune_from_its_start(tunes, tmp_path):
    # The logged validation of a whole-tune run is evaluate's score of the validation tunes, each
    # whole from its BOS: not stream windows that start mid-tune and run past an EOS.
    config = dataclasses.replace(
        TINY,
        # Every tune fits in 1,024; a fifth of the tunes validate.
        data=dataclasses.replace(
            TINY.data, transpose=(), seq_length=1024, validation_fraction=0.2
        ),
        train=dataclasses.replace(TINY.train, eval_batches=100),
    )
    result = train(config, split_corpus(tunes, config.data),
                   tmp_path / "run", progress=False, log=lambda message: None)
    model, vocab, _ = load_for_inference(tmp_path / "run")
    validation = split_tunes(tunes, config.data.validation_fraction)[1]
    assert config.data.common_root  # the default: the model read each tune at root C
    _, at_root = movable_pairs(tune.text for tune in validation)
    likelihood = score_tunes(model, vocab, at_root)
    assert likelihood.tunes == len(at_root) >= 5
    assert result.val_bits_per_char == pytest.approx(likelihood.bits_per_char, rel=1e-4)


@pytest.mark.slow
def test_mirrored_whole_tune_training_with_augmentation_matches_one_device(tmp_path):
    """Two replicas of padded windows: each step's loss is the global batch's sum over its own
    count of characters (summed over the replicas), as on one device."""
    import json
    import subprocess
    import sys

    args = ["--data", str(TUNEBOOK), "--embedding-dim", "8", "--units", "24", "--layers", "1"]
    args += ["--batch-size", "8", "--seq-length", "256", "--dropout", "0", "--steps", "20"]
    args += ["--whole-tunes", "--augment-transpose", "-1,2", "--eval-every", "10"]
    losses = {}
    for strategy, cpus in (("one", "1"), ("mirrored", "2")):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update(MUSICGEN_LOGICAL_CPUS=cpus, TF_CPP_MIN_LOG_LEVEL="2")
        run = tmp_path / strategy
        command = [sys.executable, "-m", "musicgen", "train", "--run-dir", str(run), *args]
        done = subprocess.run(
            [*command, "--strategy", strategy], env=env, capture_output=True, timeout=600
        )
        assert done.returncode == 0, done.stderr.decode()
        entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[strategy] = {e["step"]: e["loss"] for e in entries if "loss" in e}
    assert sorted(losses["one"]) == sorted(losses["mirrored"]) == [10, 20]
    for step, loss in losses["one"].items():
        assert losses["mirrored"][step] == pytest.approx(loss, rel=1e-5), step
