"""The sampler driven by fake logits: it picks what the rules say, stops at EOS, compiles once."""

import numpy as np
import pytest

from musicgen.data.vocab import BOS, EOS, PAD, UNK
from musicgen.generation.sampling import (
    Sampler,
    forbid_tokens,
    next_token_logits,
    top_k_top_p_filter,
)
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

VOCAB_SIZE = 12


def fixed_logits_sampler(logits, **kwargs):
    """A sampler whose next_fn returns the same (vocab,) logits for every row and step."""
    logits = tf.constant(logits, tf.float32)

    def next_fn(token_ids, state, index):
        batch = tf.shape(token_ids)[0]
        return tf.tile(logits[None, :], [batch, 1]), state

    return Sampler(next_fn, **kwargs)


def draw(sampler, batch, **settings):
    """One token for each of `batch` rows: (batch,) numpy ids."""
    state = tf.zeros([batch, 1])
    result = sampler(state, tf.fill([batch], BOS), 1, **settings)
    return result.tokens.numpy()[:, 0]


def scripted_sampler(sequence, **kwargs):
    """A sampler whose next_fn makes token `sequence[index]` all but certain at step `index`.

    Its state counts the next_fn calls per row, so a test can see when the loop stopped.
    """
    script = tf.constant(sequence, tf.int32)

    def next_fn(token_ids, calls, index):
        logits = 30.0 * tf.one_hot(script[index], VOCAB_SIZE)  # (vocab,)
        return tf.tile(logits[None, :], [tf.shape(token_ids)[0], 1]), calls + 1

    return Sampler(next_fn, **kwargs)


# The loop compiled whole with XLA (the Transformer's) keeps every rule of the plain one.
BOTH_LOOPS = pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])


@BOTH_LOOPS
def test_loop_emits_the_scripted_sequence_and_stops_at_eos(jit_compile):
    sampler = scripted_sampler([5, 6, 7, EOS, 8, 9, 10, 11, 4, 4], jit_compile=jit_compile)
    result = sampler(tf.zeros([3], tf.int32), tf.fill([3], BOS), 10, random_seed=7)
    tokens = result.tokens.numpy()
    assert tokens.shape == (3, 10) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, [[5, 6, 7, EOS] + [PAD] * 6] * 3)
    np.testing.assert_array_equal(result.lengths.numpy(), [3, 3, 3])
    # Every row was done after step 3, so the loop ran 4 steps, not 10.
    np.testing.assert_array_equal(result.state.numpy(), [4, 4, 4])


def test_rows_without_eos_fill_max_new_tokens():
    sampler = scripted_sampler([5, 6, 7, 8, 9])
    result = sampler(tf.zeros([2], tf.int32), tf.fill([2], BOS), 4)
    np.testing.assert_array_equal(result.tokens.numpy(), [[5, 6, 7, 8]] * 2)
    np.testing.assert_array_equal(result.lengths.numpy(), [4, 4])


@BOTH_LOOPS
def test_rows_stop_independently(jit_compile):
    # Row 0 is told EOS at step 1, row 1 at step 3; a finished row gets PAD while the other runs on.
    script = tf.constant([[5, EOS, 6, 7], [5, 6, 7, EOS]], tf.int32)

    def next_fn(token_ids, state, index):
        return 30.0 * tf.one_hot(script[:, index], VOCAB_SIZE), state

    result = Sampler(next_fn, jit_compile=jit_compile)(tf.zeros([2]), tf.fill([2], BOS), 6)
    np.testing.assert_array_equal(
        result.tokens.numpy(), [[5, EOS, PAD, PAD, PAD, PAD], [5, 6, 7, EOS, PAD, PAD]]
    )
    np.testing.assert_array_equal(result.lengths.numpy(), [1, 3])


def test_zero_new_tokens():
    result = scripted_sampler([5])(tf.zeros([2], tf.int32), tf.fill([2], BOS), 0)
    assert result.tokens.shape == (2, 0)
    np.testing.assert_array_equal(result.lengths.numpy(), [0, 0])


@BOTH_LOOPS
def test_top_k_1_is_argmax(jit_compile):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, VOCAB_SIZE)).astype(np.float32)
    rows = tf.constant(logits)

    def next_fn(token_ids, state, index):
        return rows, state

    sampler = Sampler(next_fn, jit_compile=jit_compile)
    sampled = sampler(tf.zeros([64]), tf.fill([64], BOS), 1, top_k=1, temperature=2.0)
    expected = np.argmax(forbid_tokens(rows, [PAD, BOS, UNK]).numpy(), axis=1)
    np.testing.assert_array_equal(sampled.tokens.numpy()[:, 0], expected)


@pytest.mark.parametrize("temperature", [4.0672829899406536e-162, 1e-40, 1e-30])
def test_a_vanishing_temperature_is_argmax_not_an_id_past_the_vocabulary(temperature):
    # Found by test_fuzz_cli: logits / 4e-162 overflowed to inf - inf, and the draw was NaN.
    rng = np.random.default_rng(1)
    rows = tf.constant(rng.normal(size=(64, VOCAB_SIZE)).astype(np.float32) * 30)

    def next_fn(token_ids, state, index):
        return rows, state

    sampled = Sampler(next_fn)(tf.zeros([64]), tf.fill([64], BOS), 4, temperature=temperature)
    expected = np.argmax(forbid_tokens(rows, [PAD, BOS, UNK]).numpy(), axis=1)
    np.testing.assert_array_equal(sampled.tokens.numpy()[:, 0], expected)


def hand_made_logits():
    """Tokens 4..7 with probabilities 0.5, 0.3, 0.15, 0.05; every other token impossible."""
    probs = np.zeros(VOCAB_SIZE)
    probs[4:8] = [0.5, 0.3, 0.15, 0.05]
    with np.errstate(divide="ignore"):
        return np.log(probs).astype(np.float32)


@pytest.mark.parametrize(("top_p", "nucleus"), [(0.4, {4}), (0.7, {4, 5}), (0.9, {4, 5, 6})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, nucleus):
    logits = tf.constant([hand_made_logits()])
    kept = np.flatnonzero(
        np.isfinite(top_k_top_p_filter(logits, tf.constant(0), tf.constant(top_p)).numpy()[0])
    )
    assert set(kept) == nucleus
    counts = np.bincount(
        draw(fixed_logits_sampler(hand_made_logits()), 2000, top_p=top_p), minlength=VOCAB_SIZE
    )
    assert set(np.flatnonzero(counts)) == nucleus  # every kept token shows up, no other does


def test_top_p_1_and_top_k_0_are_off():
    logits = tf.constant([hand_made_logits()])
    off = top_k_top_p_filter(logits, tf.constant(0), tf.constant(1.0))
    np.testing.assert_array_equal(off.numpy(), logits.numpy())
    counts = np.bincount(draw(fixed_logits_sampler(hand_made_logits()), 2000), minlength=VOCAB_SIZE)
    assert set(np.flatnonzero(counts)) == {4, 5, 6, 7}
    # 0.05 of 2,000 draws is 100; the plain distribution is sampled, not a filtered one.
    assert 60 < counts[7] < 140


def test_top_k_keeps_k_most_likely():
    counts = np.bincount(
        draw(fixed_logits_sampler(hand_made_logits()), 2000, top_k=2), minlength=VOCAB_SIZE
    )
    assert set(np.flatnonzero(counts)) == {4, 5}


def test_low_temperature_is_argmax():
    logits = np.zeros(VOCAB_SIZE, np.float32)
    logits[4:8] = [1.0, 1.2, 0.9, 1.1]  # the best beats the next by 0.1: e^-10 apart at T=0.01
    assert set(draw(fixed_logits_sampler(logits), 2000, temperature=0.01)) == {5}
    assert len(set(draw(fixed_logits_sampler(logits), 2000, temperature=1.0))) > 4


def test_also_forbidding_keeps_the_loop_and_adds_the_ids():
    logits = np.zeros(VOCAB_SIZE, np.float32)
    logits[[EOS, 7]] = 50.0
    sampler = fixed_logits_sampler(logits, jit_compile=True).also_forbidding(EOS)
    assert sampler.jit_compile and sampler.forbidden_ids == (PAD, BOS, UNK, EOS)
    assert set(draw(sampler, 64)) == {7}


def test_pad_bos_unk_never_sampled_even_when_largest():
    logits = np.zeros(VOCAB_SIZE, np.float32)
    logits[[PAD, BOS, UNK]] = 50.0
    drawn = set(draw(fixed_logits_sampler(logits), 2000))
    assert drawn.isdisjoint({PAD, BOS, UNK})
    assert drawn == {EOS, *range(4, VOCAB_SIZE)}


def test_next_token_logits_order_of_rules():
    logits = tf.constant([hand_made_logits()])
    # Top-p applies to the top-k tokens renormalised: 0.5 + 0.3 is 0.84 of the top 3's 0.95, so
    # p = 0.82 needs two tokens after top-k = 3, but three without it.
    filtered = next_token_logits(logits, tf.constant(1.0), tf.constant(3), tf.constant(0.82))
    assert set(np.flatnonzero(np.isfinite(filtered.numpy()[0]))) == {4, 5}
    filtered = next_token_logits(logits, tf.constant(1.0), tf.constant(0), tf.constant(0.82))
    assert set(np.flatnonzero(np.isfinite(filtered.numpy()[0]))) == {4, 5, 6}
    # A high temperature flattens the distribution, so the nucleus for the same p grows.
    filtered = next_token_logits(logits, tf.constant(10.0), tf.constant(0), tf.constant(0.7))
    assert set(np.flatnonzero(np.isfinite(filtered.numpy()[0]))) == {4, 5, 6}


@BOTH_LOOPS
def test_same_seed_same_tokens_and_rows_do_not_depend_on_batch_size(jit_compile):
    logits = np.zeros(VOCAB_SIZE, np.float32)
    logits[EOS] = -5.0  # long rows
    sampler = fixed_logits_sampler(logits, jit_compile=jit_compile)

    def run(batch, seed):
        return sampler(
            tf.zeros([batch]), tf.fill([batch], BOS), 40, random_seed=seed
        ).tokens.numpy()

    first = run(4, seed=11)
    np.testing.assert_array_equal(first, run(4, seed=11))
    np.testing.assert_array_equal(first[:2], run(2, seed=11))
    assert not np.array_equal(first, run(4, seed=12))
    # Seeds 2^32 apart draw apart too: XLA's loop folds both halves of the 64-bit seed in.
    assert not np.array_equal(first, run(4, seed=11 + 2**32))


@BOTH_LOOPS
def test_traced_once_for_any_settings_and_batch_size(jit_compile):
    sampler = scripted_sampler([5, 6, 7, EOS], jit_compile=jit_compile)
    assert sampler.tracing_count == 0
    settings = [
        dict(temperature=1.0, top_k=0, top_p=1.0, random_seed=0),
        dict(temperature=0.3, top_k=5, top_p=0.9, random_seed=99),
        dict(temperature=2.0, top_k=1, top_p=0.5, random_seed=-3),
    ]
    for batch, max_new, kwargs in zip([1, 8, 3], [4, 20, 7], settings):
        sampler(tf.zeros([batch], tf.int32), tf.fill([batch], BOS), max_new, **kwargs)
    assert sampler.tracing_count == 1


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.01), dict(max_new=-1)],
)
def test_bad_settings_are_a_value_error(settings):
    max_new = settings.pop("max_new", 3)
    with pytest.raises(ValueError, match="bad sampling settings"):
        scripted_sampler([5])(tf.zeros([1], tf.int32), tf.fill([1], BOS), max_new, **settings)
