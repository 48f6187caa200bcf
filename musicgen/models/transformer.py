"""Character-level decoder-only Transformer, written so each line maps to a formula of
"Attention Is All You Need" (Vaswani et al., 2017), with the pre-norm blocks of GPT-2:

    x_0      = E[token] * sqrt(d_model) + PE(position)
    PE(p, 2i) = sin(p / 10000^(2i / d_model)),   PE(p, 2i + 1) = cos(p / 10000^(2i / d_model))
    h_l      = x_l + Dropout(MultiHead(LN(x_l)))
    x_(l+1)  = h_l + Dropout(FFN(LN(h_l))),        FFN(x) = GELU(x W_1 + b_1) W_2 + b_2
    MultiHead(X) = concat(head_1, ..., head_H) W^O
    head_j   = softmax(Q_j K_j^T / sqrt(d_k) + M) V_j,   Q_j = X W_j^Q, K_j = X W_j^K, V_j = X W_j^V
    logits   = LN(x_N) W_vocab + b_vocab

M is the causal mask: 0 where a character may look (itself and earlier ones), -inf elsewhere.

Generation keeps a key/value cache: every layer's K and V for the characters read so far, in
tensors preallocated for `context` positions. Each step writes one column at the step's position
and attends over the cache, so a new character costs the same whatever came before it. When the
cache is full the model slides its window: it re-reads the last `context // 2` characters from
position 0, as training windows start anywhere in a tune at position 0, and carries on from there.

Why XLA: outside XLA, TensorFlow runs a step as some 200 small kernels (most of the time at one
tune) and a column write copies the whole cache (most of the time at 32 tunes: 50 MB a step at the
default sizes). The sampler compiles its whole decode loop with XLA for this model (`xla_decode`),
which fuses a step into a few kernels and writes the cache in place: the loop carries the cache
from step to step, so XLA reuses its buffer.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from musicgen.config import ModelConfig

_MASKED = -1e9  # added to the scores of positions a character may not attend to


def positional_encoding(positions, d_model: int, dtype):
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(same), interleaved.

    Args:
        positions: int tensor of any shape.
        d_model: the encoding size (even).
        dtype: the result's dtype.

    Returns:
        positions.shape + (d_model,).
    """
    i = tf.range(d_model // 2, dtype=tf.float32)
    inverse_wavelength = tf.pow(10000.0, -2.0 * i / d_model)  # (d/2,)
    angles = tf.cast(positions, tf.float32)[..., None] * inverse_wavelength
    pairs = tf.stack([tf.sin(angles), tf.cos(angles)], axis=-1)  # (..., d/2, 2)
    return tf.cast(tf.reshape(pairs, tf.concat([tf.shape(positions), [d_model]], 0)), dtype)


class CausalSelfAttention(layers.Layer):
    """Multi-head self-attention with a causal mask, over a whole window or one cached step."""

    def __init__(self, d_model: int, heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.key_dim = heads, d_model // heads
        # W^Q, W^K, W^V for all heads at once: (d_model, heads * d_k) each.
        self.query = layers.Dense(d_model, name="query")
        self.key = layers.Dense(d_model, name="key")
        self.value = layers.Dense(d_model, name="value")
        self.output_projection = layers.Dense(d_model, name="output")  # W^O
        self.attention_dropout = layers.Dropout(dropout)

    def build(self, input_shape):
        for projection in (self.query, self.key, self.value, self.output_projection):
            projection.build(input_shape)
        self.built = True

    def _split_heads(self, x):
        """(batch, time, d_model) -> (batch, heads, time, d_k)."""
        batch, time = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, time, self.heads, self.key_dim])
        return tf.transpose(x, [0, 2, 1, 3])

    def _merge_heads(self, x):
        """(batch, heads, time, d_k) -> (batch, time, d_model): the concat of the heads."""
        batch, time = tf.shape(x)[0], tf.shape(x)[2]
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reshape(x, [batch, time, self.heads * self.key_dim])

    def call(self, x, training=False):
        """Attention over a window.

        Args:
            x: (batch, time, d_model), already layer-normalised.

        Returns:
            (output (batch, time, d_model), K and V (batch, heads, time, d_k) each for a cache,
            attention weights (batch, heads, time, time)).
        """
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(self.key_dim)  # (b, h, t, t)
        time = tf.shape(x)[1]
        may_attend = tf.linalg.band_part(tf.ones([time, time], tf.bool), -1, 0)  # lower triangle
        weights = _masked_softmax(scores, may_attend)
        attended = tf.matmul(self.attention_dropout(weights, training=training), v)
        return self.output_projection(self._merge_heads(attended)), k, v, weights

    def step(self, x, cache, position):
        """Attention for one new character, writing its key and value into the cache.

        Args:
            x: (batch, d_model), already layer-normalised.
            cache: (K, V), each (batch, heads, context, d_k); columns before `position` filled.
            position: int32 scalar, this character's column.

        Returns:
            (output (batch, d_model), the cache with column `position` written).
        """
        q, k, v = (self._split_heads(f(x[:, None, :])) for f in (self.query, self.key, self.value))
        cache_k, cache_v = (_write_column(c, new, position) for c, new in zip(cache, (k, v)))
        # The whole cache is read, filled or not: attending over only the filled columns (in
        # branches of a few static widths) measured slower under XLA on this CPU, which copies
        # each slice before the product.
        scores = tf.matmul(q, cache_k, transpose_b=True) / math.sqrt(self.key_dim)  # (b, h, 1, c)
        filled = tf.range(tf.shape(cache_k)[2]) <= position
        attended = tf.matmul(_masked_softmax(scores, filled), cache_v)  # (b, h, 1, d_k)
        output = self.output_projection(self._merge_heads(attended))[:, 0, :]  # (batch, d_model)
        return output, (cache_k, cache_v)


def _write_column(cache, column, position):
    """`cache` (batch, heads, context, d_k) with column `position` set to `column` (batch, heads,
    1, d_k). A scatter: inside the XLA-compiled decode loop it writes the column in place."""
    batch, heads = tf.shape(cache)[0], tf.shape(cache)[1]
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, heads])
    head_ids = tf.broadcast_to(tf.range(heads)[None, :], [batch, heads])
    at = tf.stack([rows, head_ids, tf.fill([batch, heads], position)], axis=-1)  # (b, h, 3)
    return tf.tensor_scatter_nd_update(cache, at, column[:, :, 0, :])


def _masked_softmax(scores, may_attend=None):
    """softmax(scores + M) in float32, M = 0 where `may_attend` (None: everywhere) else -inf."""
    dtype = scores.dtype
    scores = tf.cast(scores, tf.float32)
    if may_attend is not None:
        scores = tf.where(may_attend, scores, _MASKED)
    return tf.cast(tf.nn.softmax(scores, axis=-1), dtype)


class DecoderBlock(layers.Layer):
    """h = x + Dropout(MultiHead(LN(x))); out = h + Dropout(FFN(LN(h)))."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.attention_norm = layers.LayerNormalization(epsilon=1e-5, name="attention_norm")
        self.attention = CausalSelfAttention(
            config.d_model, config.heads, config.dropout, name="attention"
        )
        self.feed_forward_norm = layers.LayerNormalization(epsilon=1e-5, name="feed_forward_norm")
        self.feed_forward_in = layers.Dense(config.ff_dim, activation="gelu", name="ff_in")
        self.feed_forward_out = layers.Dense(config.d_model, name="ff_out")
        self.dropout = layers.Dropout(config.dropout)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.feed_forward_norm.build(input_shape)
        self.feed_forward_in.build(input_shape)
        self.feed_forward_out.build((*input_shape[:-1], self.feed_forward_in.units))
        self.built = True

    def feed_forward(self, h, training=False):
        """h + Dropout(FFN(LN(h)))."""
        hidden = self.feed_forward_in(self.feed_forward_norm(h))
        return h + self.dropout(self.feed_forward_out(hidden), training=training)

    def call(self, x, training=False):
        """(batch, time, d_model) -> (same, K, V, attention weights); see CausalSelfAttention."""
        attended, k, v, weights = self.attention(self.attention_norm(x), training=training)
        h = x + self.dropout(attended, training=training)
        return self.feed_forward(h, training=training), k, v, weights

    def step(self, x, cache, position):
        """(batch, d_model) for one character -> (same, cache); see CausalSelfAttention.step."""
        attended, cache = self.attention.step(self.attention_norm(x), cache, position)
        return self.feed_forward(x + attended), cache


class TransformerLanguageModel(keras.Model):
    """Predicts the next character of ABC text with causal self-attention.

    Args:
        config: sizes; `config.vocab_size` must already be set, `d_model` divisible by `heads`.

    The generation state is a tuple `(positions, window, caches)`:
        positions: int32 (batch,), how many cache columns are filled (the same in every row);
        window: int32 (batch, context), the characters those columns hold, for sliding;
        caches: per layer a pair (K, V), each (batch, heads, context, d_k).
    """

    xla_decode = True  # the sampler compiles its decode loop around `step` with XLA

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        if config.d_model % config.heads or config.d_model % 2:
            raise ValueError(
                f"d_model {config.d_model} must be even and divisible by heads {config.heads}"
            )
        self.config = config
        self.context = config.context
        self.slide_keep = max(1, config.context // 2)  # characters re-read when the window slides
        self.embedding = layers.Embedding(config.vocab_size, config.d_model, name="embedding")
        self.embedding_dropout = layers.Dropout(config.dropout)
        self.blocks = [DecoderBlock(config, name=f"block_{i}") for i in range(config.layers)]
        self.final_norm = layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        # Logits stay float32 under a mixed-precision policy so the softmax is stable.
        self.to_logits = layers.Dense(config.vocab_size, dtype="float32", name="logits")

    def build(self, input_shape):
        self.embedding.build(input_shape)
        features = (None, None, self.config.d_model)
        for block in self.blocks:
            block.build(features)
        self.final_norm.build(features)
        self.to_logits.build(features)
        self.built = True

    def _embed(self, token_ids, positions, training=False):
        """x_0 = E[token] * sqrt(d_model) + PE(position)."""
        x = self.embedding(token_ids) * math.sqrt(self.config.d_model)
        x = x + positional_encoding(positions, self.config.d_model, x.dtype)
        return self.embedding_dropout(x, training=training)

    def _forward(self, token_ids, training=False):
        """(logits (batch, time, vocab), per-layer [(K, V, attention weights)])."""
        x = self._embed(token_ids, tf.range(tf.shape(token_ids)[1]), training=training)
        per_layer = []
        for block in self.blocks:
            x, k, v, weights = block(x, training=training)
            per_layer.append((k, v, weights))
        return self.to_logits(self.final_norm(x)), per_layer

    def call(self, token_ids, training=False, return_state=False):
        """Logits for every position of windows of at most `context` characters.

        Args:
            token_ids: int tensor (batch, time).
            training: turns dropout on.
            return_state: also return the generation state after the window; a window longer
                than `context` is then cut to its last `context` characters first.

        Returns:
            logits (batch, time, vocab), and the state when `return_state`.
        """
        if return_state:
            token_ids = token_ids[:, -self.context :]
        logits, per_layer = self._forward(token_ids, training=training)
        if not return_state:
            return logits
        return logits, self._state_from(token_ids, per_layer)

    def _state_from(self, token_ids, per_layer):
        """The generation state holding the keys and values of `token_ids` (at most context)."""
        batch, time = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        room = self.context - time
        padding = [[0, 0], [0, 0], [0, room], [0, 0]]  # empty columns after the window's
        caches = tuple((tf.pad(k, padding), tf.pad(v, padding)) for k, v, _ in per_layer)
        window = tf.pad(tf.cast(token_ids, tf.int32), [[0, 0], [0, room]])
        return tf.fill([batch], time), window, caches

    def initial_state(self, batch_size):
        """An empty cache: nothing read yet."""
        heads = self.config.heads
        shape = (batch_size, heads, self.context, self.config.d_model // heads)
        empty = tf.zeros(shape, self.compute_dtype)
        return (
            tf.zeros([batch_size], tf.int32),
            tf.zeros([batch_size, self.context], tf.int32),
            tuple((empty, empty) for _ in self.blocks),
        )

    def step(self, token_ids, state):
        """One character per sequence: (batch,) ids -> (batch, vocab) logits and the next state."""
        positions, _, _ = state
        # A loop run once or not at all rather than a cond: XLA carries a loop's state in place,
        # where a cond would copy the whole cache every step.
        _, state = tf.while_loop(
            lambda full, state: full,
            lambda full, state: (tf.constant(False), self._slide(state)),
            (positions[0] >= self.context, state),
        )
        positions, window, caches = state
        position = positions[0]
        token_ids = tf.cast(token_ids, tf.int32)
        batch = tf.shape(token_ids)[0]
        at = tf.stack([tf.range(batch), tf.fill([batch], position)], axis=1)
        window = tf.tensor_scatter_nd_update(window, at, token_ids)
        x = self._embed(token_ids, positions)  # (batch, d_model)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block.step(x, cache, position)
            new_caches.append(cache)
        return self.to_logits(self.final_norm(x)), (positions + 1, window, tuple(new_caches))

    def _slide(self, state):
        """Re-reads the last `slide_keep` characters of a full window from position 0."""
        _, window, _ = state
        _, new_state = self(window[:, self.context - self.slide_keep :], return_state=True)
        return new_state

    def sequence_logits(self, token_ids):
        """Logits (batch, time, vocab) for sequences of any length, from the start-of-tune state.

        Past `context` characters each logit is computed from the same sliding window that
        generation would use at that position, so scores and samples agree.
        """
        token_ids = tf.convert_to_tensor(token_ids, tf.int32)
        total = int(token_ids.shape[1])
        if total <= self.context:
            return self(token_ids)
        stride = self.context - self.slide_keep
        pieces = [self(token_ids[:, : self.context])]
        start = stride
        while start + self.slide_keep < total:
            logits = self(token_ids[:, start : start + self.context])
            pieces.append(logits[:, self.slide_keep :])
            start += stride
        return tf.concat(pieces, axis=1)

    def attention_maps(self, token_ids):
        """Attention weights of every layer for windows of at most `context` characters.

        Returns:
            A list, one per layer, of float32 (batch, heads, time, time) arrays: row i holds how
            much character i attended to each character j <= i.
        """
        _, per_layer = self._forward(tf.convert_to_tensor(token_ids, tf.int32)[:, : self.context])
        return [tf.cast(weights, tf.float32).numpy() for _, _, weights in per_layer]
