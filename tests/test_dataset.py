"""Tunes -> id stream -> tf.data windows: split, encoding, shapes, coverage, shuffling, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from run_checks import tunes_from  # noqa: E402

from musicgen.data.corpus import music21_corpus_folder
from musicgen.data.dataset import make_dataset  # noqa: E402
from musicgen.data.split import split_tunes  # noqa: E402
from musicgen.data.tune_split import encode_stream, tune_start_positions  # noqa: E402
from musicgen.data.vocab import BOS, EOS, Vocabulary  # noqa: E402
from musicgen.errors import CorpusError  # noqa: E402
from musicgen.music.abc import Tune  # noqa: E402

ONEILLS = music21_corpus_folder() / "oneills1850"


@pytest.fixture(scope="module")
def fifty_tunes() -> list[Tune]:
    return tunes_from(ONEILLS / "0001-0050.abc")


@pytest.fixture(scope="module")
def many_tunes() -> list[Tune]:
    tunes = [tune for path in sorted(ONEILLS.glob("*.abc")) for tune in tunes_from(path)]
    assert len(tunes) > 1500
    return tunes


def test_split_is_disjoint_about_five_percent_and_deterministic(many_tunes):
    train, validation = split_tunes(many_tunes, 0.05)
    assert len(train) + len(validation) == len(many_tunes)
    assert 0.02 < len(validation) / len(many_tunes) < 0.09
    train_texts = {tune.text for tune in train}
    assert not train_texts & {tune.text for tune in validation}
    # Same split whatever the order of the tunes, and in a fresh call.
    shuffled = list(many_tunes)
    np.random.default_rng(0).shuffle(shuffled)
    _, validation_again = split_tunes(shuffled, 0.05)
    assert {t.source for t in validation_again} == {t.source for t in validation}


def test_adding_tunes_never_moves_a_validation_tune_into_training(fifty_tunes, many_tunes):
    _, small_validation = split_tunes(many_tunes[:300], 0.05)
    large_train, _ = split_tunes(many_tunes, 0.05)
    assert not {t.text for t in small_validation} & {t.text for t in large_train}


def test_split_keeps_one_tune_aside_for_small_corpora(fifty_tunes):
    for count in (2, 3, 10):
        train, validation = split_tunes(fifty_tunes[:count], 0.05)
        assert len(validation) >= 1 and len(train) >= 1
        assert len(train) + len(validation) == count
    train, validation = split_tunes(fifty_tunes[:1], 0.05)
    assert len(train) == 1 and validation == []
    train, validation = split_tunes(fifty_tunes[:10], 0.0)
    assert len(train) == 10 and validation == []


def test_encode_stream_joins_tunes_between_bos_and_eos(fifty_tunes):
    tunes = fifty_tunes[:5]
    vocab = Vocabulary.from_texts(t.text for t in tunes)
    ids = encode_stream(tunes, vocab)
    assert ids.dtype == np.int32
    assert len(ids) == sum(len(t.text) + 2 for t in tunes)
    assert ids[0] == BOS and ids[-1] == EOS
    starts = np.flatnonzero(ids == BOS)
    ends = np.flatnonzero(ids == EOS)
    assert len(starts) == len(ends) == len(tunes)
    decoded = [vocab.decode(ids[s + 1 : e]) for s, e in zip(starts, ends)]
    assert decoded == [t.text for t in tunes]


def test_batches_have_fixed_shape_int32_and_targets_shifted_by_one(fifty_tunes):
    vocab = Vocabulary.from_texts(t.text for t in fifty_tunes)
    ids = encode_stream(fifty_tunes, vocab)
    dataset = make_dataset(ids, 40, 8, shuffle=True, seed=3, repeat=True)
    for inputs, targets in dataset.take(20):
        assert inputs.dtype == targets.dtype == np.int32
        assert inputs.shape == targets.shape == (8, 40)
        np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])


def test_ordered_windows_cover_the_stream_once():
    ids = np.arange(1, 1004, dtype=np.int32)  # a stream whose values are their own positions + 1
    seq_length = 10
    batches = list(make_dataset(ids, seq_length, 7, shuffle=False))
    inputs = np.concatenate([x.numpy() for x, _ in batches])
    targets = np.concatenate([y.numpy() for _, y in batches])
    windows = (len(ids) - 1) // seq_length
    assert inputs.shape == (windows, seq_length)  # the short last batch is kept
    np.testing.assert_array_equal(inputs.ravel(), ids[: windows * seq_length])
    np.testing.assert_array_equal(targets.ravel(), ids[1 : windows * seq_length + 1])


def test_shuffled_epochs_move_window_boundaries_and_are_reproducible():
    ids = np.arange(2000, dtype=np.int32)
    seq_length, batch_size = 16, 4
    windows_per_epoch = (len(ids) - 1) // seq_length - 1  # a lower bound whatever the offset

    def starts(seed):
        dataset = make_dataset(ids, seq_length, batch_size, shuffle=True, seed=seed, repeat=True)
        firsts = [x.numpy()[:, 0] for x, _ in dataset.take(6 * windows_per_epoch // batch_size)]
        return np.concatenate(firsts)

    first = starts(seed=1)
    np.testing.assert_array_equal(first, starts(seed=1))
    assert not np.array_equal(first, starts(seed=2))
    # Window starts sit at offset + k * seq_length, each epoch with its own offset.
    assert len(set(first % seq_length)) > 2
    # Every window is a contiguous slice of the stream.
    dataset = make_dataset(ids, seq_length, batch_size, shuffle=True, seed=1, repeat=True)
    for inputs, targets in dataset.take(50):
        np.testing.assert_array_equal(np.diff(inputs.numpy(), axis=1), 1)
        np.testing.assert_array_equal(targets.numpy() - inputs.numpy(), 1)


def test_one_epoch_of_shuffled_windows_visits_each_window_once():
    ids = np.arange(1000, dtype=np.int32)
    dataset = make_dataset(ids, 10, 1, shuffle=True, seed=5, repeat=False)
    firsts = [int(x[0, 0]) for x, _ in dataset]
    offset = firsts[0] % 10
    assert sorted(firsts) == list(range(offset, len(ids) - 10, 10))


def test_a_stream_of_exactly_one_window_still_trains():
    ids = np.arange(11, dtype=np.int32)
    inputs, targets = next(iter(make_dataset(ids, 10, 3, shuffle=True, seed=0, repeat=True)))
    assert inputs.shape == (3, 10)
    np.testing.assert_array_equal(inputs[0], ids[:10])


def test_too_short_a_stream_is_a_corpus_error(fifty_tunes):
    vocab = Vocabulary.from_texts(fifty_tunes[0].text)
    ids = encode_stream(fifty_tunes[:1], vocab)
    with pytest.raises(CorpusError, match=r"only \d+ characters.*--seq-length"):
        make_dataset(ids, len(ids), 4, shuffle=True, repeat=True)


def test_training_windows_also_start_at_every_tune(fifty_tunes):
    # Generation starts a tune from a zero state and BOS, so training must show the model that.
    vocab = Vocabulary.from_texts(t.text for t in fifty_tunes)
    ids = encode_stream(fifty_tunes, vocab)
    tune_starts = tune_start_positions(ids)
    assert len(tune_starts) == len(fifty_tunes) and ids[tune_starts[0]] == BOS
    dataset = make_dataset(ids, 64, 1, shuffle=True, seed=0, tune_starts=tune_starts)
    firsts = [x.numpy()[0] for x, _ in dataset]
    starting_with_bos = [w for w in firsts if w[0] == BOS]
    usable = sum(int(s) + 65 <= len(ids) for s in tune_starts)
    assert len(starting_with_bos) >= usable
    header = vocab.encode("X:")
    assert all(list(w[1:3]) == header for w in starting_with_bos)
