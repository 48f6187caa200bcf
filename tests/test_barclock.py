"""The bar clock (`musicgen.models.barclock`) and the LSTM that reads it."""

import json

import numpy as np
import pytest
from cli_checks import one_line_error
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.config import ModelConfig, RunConfig
from musicgen.data.corpus import load_corpus
from musicgen.data.vocab import Vocabulary
from musicgen.models import build_model
from musicgen.models.barclock import NO_ID, clock_ids, counts, step
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

REEL = "X:1\nT:R\nM:4/4\nK:D\n|:DFAd fdAF|GBdg|1 fedc:|2 d4||\n|:a2|b2|c2|]\n"


def clock_by_hand(text: str) -> list[int]:
    """The count after each character, read as the module's rule says, one character at a time."""
    out, count, previous = [], 0, ""
    for c in text:
        if (
            c == ":"
            or (c == "|" and previous in "|:" and previous)
            or (c == "]" and previous == "|")
        ):
            count = 0
        elif c == "|":
            count += 1
        out.append(count)
        previous = c
    return out


def clock_of(text: str, vocab: Vocabulary) -> list[int]:
    ids = tf.constant([vocab.encode(text)], tf.int32)
    start = (tf.zeros([1], tf.int32), tf.fill([1], NO_ID))
    return counts(ids, *start, clock_ids(vocab)).numpy()[0].tolist()


def test_counts_bars_and_restarts_at_every_section_mark():
    vocab = Vocabulary.from_texts([REEL])
    clock = dict(zip(range(len(REEL)), clock_of(REEL, vocab)))
    body = REEL.index("|:")
    # At each | after the opening one: 1, 2 (the first ending's bar line counts), 0 (:|), 1 and
    # 0 (||), 1 (the | of |:, whose : then brings it to 0), 1, 2, 3 in the B part.
    at_bars = [clock[i] for i, c in enumerate(REEL) if c == "|" and i > body]
    assert at_bars == [1, 2, 0, 1, 0, 1, 1, 2, 3]
    assert clock[REEL.index("|:a2") + 1] == 0 and clock[len(REEL) - 2] == 0  # |: and |]
    assert all(clock[i] == 0 for i in range(body))  # the header's colons hold it at 0


def test_a_chord_bracket_is_not_a_section_mark():
    text = "K:G\n|G2 [DG]B|[GB]d|]\n"
    clock = clock_of(text, Vocabulary.from_texts([text]))
    assert clock[text.index("B|") + 1] == 2 and clock[text.index("]B")] == 1
    assert clock[-2] == 0  # the final |]


def test_the_vectorised_clock_reads_every_bundled_tune_as_one_character_at_a_time():
    tunes, _ = load_corpus(None)
    texts = [tune.text for tune in tunes]
    vocab = Vocabulary.from_texts(texts)
    ids = clock_ids(vocab)
    width = max(len(t) for t in texts)
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        rows = np.zeros((len(batch), width), np.int32)
        for r, text in enumerate(batch):
            rows[r, : len(text)] = vocab.encode(text)
        got = counts(tf.constant(rows), tf.zeros([len(batch)], tf.int32),
                     tf.fill([len(batch)], NO_ID), ids).numpy()  # fmt: skip
        for r, text in enumerate(batch):
            assert got[r, : len(text)].tolist() == clock_by_hand(text), text[:60]


def test_step_gives_what_counts_gives_and_continues_from_any_state():
    vocab = Vocabulary.from_texts([REEL])
    ids, row = clock_ids(vocab), vocab.encode(REEL)
    count, previous, stepped = tf.zeros([1], tf.int32), tf.fill([1], NO_ID), []
    for token in row:
        count = step(count, previous, tf.constant([token]), ids)
        previous = tf.constant([token], tf.int32)
        stepped.append(int(count[0]))
    assert stepped == clock_by_hand(REEL)
    # From the middle of a section: the count and the character before carry in.
    cut = REEL.index("GBdg") - 1  # right after a bar line
    rest = counts(tf.constant([row[cut:]]), tf.constant([stepped[cut - 1]]),
                  tf.constant([row[cut - 1]]), ids).numpy()[0].tolist()  # fmt: skip
    assert rest == stepped[cut:]


@pytest.fixture(scope="module")
def clocked():
    vocab = Vocabulary.from_texts([REEL])
    config = ModelConfig(vocab_size=len(vocab), embedding_dim=8, units=16, layers=2,
                         bar_clock=4, bar_ids=clock_ids(vocab))  # fmt: skip
    tf.keras.utils.set_random_seed(3)
    model = build_model(config)
    ids = tf.constant([vocab.encode_tune(REEL)], tf.int32)
    model(ids[:, :1])
    # Make the clock's embedding rows differ clearly, so that a wrong count changes the logits.
    model.bar_clock.embeddings.assign(tf.random.normal([4, 8], stddev=3.0))
    return model, ids


def test_the_clock_changes_what_the_model_predicts(clocked):
    model, ids = clocked
    blind = build_model(ModelConfig(**{**model.config.__dict__, "bar_ids": (NO_ID,) * 3}))
    blind(ids[:, :1])
    blind.set_weights(model.get_weights())
    assert np.abs(model(ids).numpy() - blind(ids).numpy()).max() > 1e-3


def test_stepping_and_priming_with_the_clock_equal_the_full_pass(clocked):
    model, ids = clocked
    full = model(ids).numpy()[0]
    state, stepped = model.initial_state(1), []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        stepped.append(logits.numpy()[0])
    np.testing.assert_allclose(np.array(stepped), full, atol=1e-5)
    cut = REEL.index("GBdg")
    _, primed = model(ids[:, :cut], return_state=True)
    logits, _ = model.step(ids[:, cut], primed)
    np.testing.assert_allclose(logits.numpy()[0], full[cut], atol=1e-5)


def test_counts_past_the_last_row_share_it(clocked):
    model, _ = clocked
    rows = model.bar_clock.embeddings.numpy()
    text = "K:D\n|D|F|A|d|f|A|\n"
    vocab = Vocabulary.from_texts([REEL])
    assert max(clock_of(text, vocab)) == 7  # beyond bar_clock - 1 = 3
    np.testing.assert_array_equal(
        model.bar_clock(model._clock_index(tf.constant([3, 7]))).numpy(), rows[[3, 3]]
    )


def test_a_config_written_before_the_clock_reads_as_without_it():
    raw = json.loads(RunConfig().to_json())
    del raw["model"]["bar_clock"], raw["model"]["bar_ids"]
    assert RunConfig.from_json(json.dumps(raw)).model.bar_clock == 0
    assert ModelConfig().bar_clock == 32 and ModelConfig(kind="transformer").bar_clock == 0


def test_bar_clock_with_a_transformer_is_one_line(tmp_path):
    result = CliRunner().invoke(
        main,
        ["train", "--model", "transformer", "--bar-clock", "8", "--run-dir", str(tmp_path / "r")],
    )
    line = one_line_error(result)
    assert "--bar-clock" in line and "LSTM" in line
    assert not (tmp_path / "r").exists()
