"""Next-token rules and the compiled decode loop.

The design follows keras-hub's samplers: a `Sampler` owns one compiled `tf.while_loop` and drives
a `next_fn(token_ids, state, index) -> (logits, state)` function. It never touches a model, so tests
can feed it fake logits, and any model that offers a one-token step (the LSTM's `step`, a
Transformer with a key/value cache) fits.

Every setting reaches the loop as a tensor and the batch dimension of the input signature is
unknown, so one trace serves every call: other temperature, top-k, top-p, seed, length or number of
tunes.

`jit_compile=True` compiles the whole loop with XLA (one program per number of tunes, compiled on
the first call with it): the Transformer's step is many small kernels and a cache write, which XLA
fuses and writes in place. The tokens then go into a fixed buffer of MAX_CHUNK_STEPS columns (XLA
needs static shapes) and the per-step seed is `xla_step_seed`'s (XLA's stateless categorical takes
no int64 seed), so a seed draws other tokens than without XLA, as reproducibly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from musicgen.data.vocab import BOS, EOS, PAD, UNK
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

NextFn = Callable[[tf.Tensor, Any, tf.Tensor], tuple[tf.Tensor, Any]]

# Never sampled: PAD and BOS are not text, UNK would put U+FFFD into a tune.
FORBIDDEN_IDS = (PAD, BOS, UNK)

_NEG_INF = float("-inf")

# The decode loop runs in chunks of about CHUNK_SECONDS, so an interrupt is handled that soon.
FIRST_CHUNK_STEPS = 32
_SMALLEST_NORMAL = 1.1754944e-38  # float32's
MAX_CHUNK_STEPS = 4096
CHUNK_SECONDS = 0.25


def forbid_tokens(logits: tf.Tensor, token_ids: Sequence[int]) -> tf.Tensor:
    """Sets the logits of `token_ids` to -inf so they are never sampled.

    Args:
        logits: float (batch, vocab).
        token_ids: ids to forbid; may be empty.

    Returns:
        float (batch, vocab), same dtype.
    """
    if not token_ids:
        return logits
    vocab_size = tf.shape(logits)[-1]
    forbidden = tf.reduce_any(
        tf.one_hot(list(token_ids), vocab_size, dtype=tf.bool, on_value=True, off_value=False),
        axis=0,
    )  # (vocab,)
    return tf.where(forbidden, tf.constant(_NEG_INF, logits.dtype), logits)


def top_k_top_p_filter(logits: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keeps the `top_k` most likely tokens, then the nucleus of those: the smallest set of most
    likely tokens whose probability mass (renormalised over the top k) is >= `top_p`.

    Both filters share one sort of each row. Ties with the last kept logit are kept too.

    Args:
        logits: float (batch, vocab).
        top_k: int32 scalar; 0 turns top-k off, a value above the vocabulary size keeps all.
        top_p: float32 scalar in (0, 1]; 1.0 turns top-p off exactly.

    Returns:
        float (batch, vocab) with every token outside both sets at -inf.
    """
    neg_inf = tf.constant(_NEG_INF, logits.dtype)
    vocab_size = tf.shape(logits)[-1]
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")  # (batch, vocab)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
    kth_largest = tf.gather(sorted_logits, [k - 1], axis=1)  # (batch, 1); XLA takes a gather
    sorted_logits = tf.where(sorted_logits < kth_largest, neg_inf, sorted_logits)
    probs = tf.nn.softmax(sorted_logits, axis=-1)
    # A token is in the nucleus while the mass of the tokens before it is still short of top_p, so
    # the most likely token always is. At top_p = 1 rounding in the sum could drop a tiny tail.
    mass_before = tf.math.cumsum(probs, axis=-1, exclusive=True)
    in_nucleus = tf.logical_or(mass_before < tf.cast(top_p, probs.dtype), top_p >= 1.0)
    inf = tf.constant(float("inf"), logits.dtype)
    threshold = tf.reduce_min(tf.where(in_nucleus, sorted_logits, inf), axis=-1, keepdims=True)
    threshold = tf.maximum(threshold, kth_largest)
    return tf.where(logits < threshold, neg_inf, logits)


def next_token_logits(
    logits: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    top_p: tf.Tensor,
    forbidden_ids: Sequence[int] = FORBIDDEN_IDS,
) -> tf.Tensor:
    """Applies temperature, the forbidden-token mask, top-k and then top-p to raw logits.

    Args:
        logits: (batch, vocab) raw model output; cast to float32.
        temperature: float32 scalar > 0; below 1 sharpens, above 1 flattens.
        top_k: int32 scalar, 0 = off.
        top_p: float32 scalar in (0, 1], 1.0 = off. Applied to the tempered, top-k filtered
            distribution.
        forbidden_ids: ids that are never sampled.

    Returns:
        float32 (batch, vocab) logits to sample from; excluded tokens are -inf.
    """
    logits = forbid_tokens(tf.cast(logits, tf.float32), forbidden_ids)
    # Relative to each row's best allowed token, and the temperature at least float32's smallest
    # normal number (1e-300 casts to 0): a tiny temperature then gives 0 and -inf, never inf - inf
    # or 0 / 0 (NaN), which would draw an id past the end of the vocabulary.
    logits = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    logits = logits / tf.maximum(tf.cast(temperature, tf.float32), _SMALLEST_NORMAL)
    top_k = tf.cast(top_k, tf.int32)
    top_p = tf.cast(top_p, tf.float32)
    # The sort is most of the rules' cost (about 0.2 ms a step at batch 32): skip it when unused.
    return tf.cond(
        tf.logical_or(top_k > 0, top_p < 1.0),
        lambda: top_k_top_p_filter(logits, top_k, top_p),
        lambda: logits,
    )


def step_seed(random_seed: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The stateless seed for step `index`: int64 (2,), a fresh random stream per step."""
    return tf.stack([tf.cast(random_seed, tf.int64), tf.cast(index, tf.int64)])


def xla_step_seed(random_seed: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The stateless seed for step `index` inside XLA: int32 (2,). XLA's stateless categorical
    takes no int64 seed, so the 64-bit seed is split into its two 32-bit halves and the index
    folded in: every 64-bit seed keeps a stream of its own."""
    halves = tf.bitcast(tf.cast(random_seed, tf.int64), tf.int32)  # (2,)
    return tf.random.experimental.stateless_fold_in(halves, tf.cast(index, tf.int32))


def sample_tokens(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Draws one token per row of `logits` (batch, vocab) with a stateless seed (2,) -> (batch,).

    Row r's draw depends on the seed, r and its own logits only, not on the rows after it, so the
    first tunes of a batch stay the same when more tunes are asked for.
    """
    return tf.random.stateless_categorical(logits, 1, seed=seed, dtype=tf.int32)[:, 0]


class DecodeResult(NamedTuple):
    """What `Sampler.__call__` returns.

    Attributes:
        tokens: int32 (batch, max_new_tokens). A row that ends has EOS at position `lengths[row]`
            and PAD after it; a row that ran out of room has no EOS.
        lengths: int32 (batch,), the number of tokens before EOS (max_new_tokens when none).
        state: the state `next_fn` returned last (for rows that ended early it ran on past EOS).
    """

    tokens: tf.Tensor
    lengths: tf.Tensor
    state: Any


class Sampler:
    """Samples a batch of sequences in one compiled loop, one `next_fn` call per step.

    Args:
        next_fn: `next_fn(token_ids, state, index) -> (logits, state)` with token_ids int32
            (batch,), index an int32 scalar counting the new tokens from 0, and logits (batch,
            vocab). The state is any nest of tensors whose first dimension is the batch and whose
            shapes do not change from step to step.
        forbidden_ids: ids never sampled (PAD, BOS and UNK by default).
        jit_compile: compile the loop with XLA (see the module's text).

    The loop is one `tf.function`, traced on the first call and reused for every later call whose
    state has the same structure, dtypes and non-batch shapes.
    """

    def __init__(
        self,
        next_fn: NextFn,
        forbidden_ids: Sequence[int] = FORBIDDEN_IDS,
        jit_compile: bool = False,
    ):
        self.next_fn = next_fn
        self.jit_compile = bool(jit_compile)
        self.forbidden_ids = tuple(int(i) for i in forbidden_ids)
        self._decode: Any = None  # the tf.function, built on first call from the state's structure

    def also_forbidding(self, *token_ids: int) -> Sampler:
        """A new sampler like this one (same `next_fn`, same compilation) that never samples
        `token_ids` either; benchmarks use it to mask EOS so every tune runs to full length."""
        forbidden = (*self.forbidden_ids, *token_ids)
        return Sampler(self.next_fn, forbidden_ids=forbidden, jit_compile=self.jit_compile)

    @property
    def tracing_count(self) -> int:
        """How many times the decode loop has been traced (0 before the first call)."""
        return 0 if self._decode is None else self._decode.experimental_get_tracing_count()

    def __call__(
        self,
        state: Any,
        last_tokens: tf.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        random_seed: int = 0,
    ) -> DecodeResult:
        """Samples up to `max_new_tokens` tokens per row.

        Args:
            state: the start state, e.g. after the model has read the prompt.
            last_tokens: int (batch,), the last prompt token of each row (fed at step 0).
            max_new_tokens: at most this many tokens per row; the loop stops early once every row
                has produced EOS.
            temperature: > 0.
            top_k: 0 = off.
            top_p: in (0, 1], 1.0 = off.
            random_seed: the same seed gives the same tokens for the same logits.

        Returns:
            A DecodeResult.

        Raises:
            ValueError: a setting is out of range (callers check user input before this).
        """
        if max_new_tokens < 0 or not temperature > 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"bad sampling settings: max_new_tokens={max_new_tokens}, "
                f"temperature={temperature}, top_k={top_k}, top_p={top_p}"
            )
        last_tokens = tf.convert_to_tensor(last_tokens, tf.int32)
        if self._decode is None:
            self._decode = self._compile(state)
        settings = (
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(top_p, tf.float32),
            tf.constant(random_seed, tf.int64),
        )
        batch_size = int(last_tokens.shape[0])
        done = tf.zeros([batch_size], tf.bool)
        pieces, index, chunk = [], 0, FIRST_CHUNK_STEPS
        # The loop runs in chunks of steps so that Python regains control a few times a second:
        # Ctrl-C and SIGTERM are handled between chunks. Each chunk is sized from the last one's
        # speed; the index and the state carry over, so the tokens do not depend on the chunking.
        while index < max_new_tokens:
            steps = min(chunk, max_new_tokens - index)
            started = time.perf_counter()
            tokens, state, done, taken = self._decode(
                state, last_tokens, done, tf.constant(index, tf.int32),
                tf.constant(steps, tf.int32), *settings,
            )  # fmt: skip
            taken = int(taken)
            tokens = tokens[:, :taken]  # the XLA loop returns its whole buffer
            pieces.append(tokens)
            index += taken
            if taken < steps:  # every row has ended
                break
            last_tokens = tokens[:, -1]
            per_step = (time.perf_counter() - started) / max(taken, 1)
            chunk = int(min(MAX_CHUNK_STEPS, max(1, CHUNK_SECONDS / max(per_step, 1e-6))))
        pieces.append(tf.fill([batch_size, max_new_tokens - index], PAD))
        tokens = tf.concat(pieces, axis=1)  # (batch, max_new_tokens)
        return DecodeResult(tokens, _lengths(tokens), state)

    def _compile(self, state: Any):
        """The decode tf.function, with an input signature whose batch dimension is unknown."""

        def spec(tensor):
            tensor = tf.convert_to_tensor(tensor)
            return tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)

        scalars = [
            tf.TensorSpec([], dtype)
            for dtype in (tf.int32, tf.int32, tf.float32, tf.int32, tf.float32, tf.int64)
        ]
        signature = [
            tf.nest.map_structure(spec, state),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.bool),
            *scalars,
        ]
        return tf.function(
            self._decode_loop, input_signature=signature, jit_compile=self.jit_compile
        )

    def _decode_loop(self, state, last_tokens, done, start, steps, temperature, top_k, top_p, seed):
        """Up to `steps` steps from step `start`; stops early once every row is done.

        Returns:
            (tokens (batch, steps taken), state, done (batch,), steps taken).
        """
        batch_size = tf.shape(last_tokens)[0]
        pad = tf.fill([batch_size], PAD)
        end = start + steps

        def not_finished(index, tokens, state, done, written):
            return tf.logical_and(index < end, tf.logical_not(tf.reduce_all(done)))

        seed_for = xla_step_seed if self.jit_compile else step_seed

        def record(written, index, sampled):
            if self.jit_compile:  # a fixed buffer (XLA needs static shapes), column index - start
                at = tf.stack([tf.range(batch_size), tf.fill([batch_size], index - start)], axis=1)
                return tf.tensor_scatter_nd_update(written, at, sampled)
            return written.write(index - start, sampled)

        def step(index, tokens, state, done, written):
            logits, state = self.next_fn(tokens, state, index)  # (batch, vocab)
            logits = next_token_logits(logits, temperature, top_k, top_p, self.forbidden_ids)
            sampled = sample_tokens(logits, seed_for(seed, index))  # (batch,)
            sampled = tf.ensure_shape(tf.where(done, pad, sampled), last_tokens.shape)
            done = tf.logical_or(done, tf.equal(sampled, EOS))
            return index + 1, sampled, state, done, record(written, index, sampled)

        if self.jit_compile:
            written = tf.fill([batch_size, MAX_CHUNK_STEPS], PAD)
        else:
            written = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
        begin = (start, last_tokens, state, done, written)
        index, _, state, done, written = tf.while_loop(not_finished, step, begin)
        taken = index - start
        if self.jit_compile:
            return written, state, done, taken
        # (batch, taken); a list with no elements cannot be stacked while the batch size is unknown.
        tokens = tf.cond(
            taken > 0,
            # Transposed as int64: oneDNN's int32 transpose logs an error line on CPUs without
            # AVX-512 before falling back.
            lambda: tf.cast(tf.transpose(tf.cast(written.stack(), tf.int64)), tf.int32),
            lambda: tf.zeros([batch_size, 0], tf.int32),
        )
        return tokens, state, done, taken


def _lengths(tokens: tf.Tensor) -> tf.Tensor:
    """Tokens before the first EOS in each row of (batch, time) ids; time when a row has none."""
    eos_so_far = tf.math.cumsum(tf.cast(tf.equal(tokens, EOS), tf.int32), axis=1)  # (batch, time)
    return tf.reduce_sum(tf.cast(tf.equal(eos_so_far, 0), tf.int32), axis=1)
