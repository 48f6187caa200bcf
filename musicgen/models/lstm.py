"""Character-level LSTM language model: Embedding -> LSTM x N (dropout between) -> Dense.

With `config.bar_clock`, each character's embedding has the embedding of the bar clock added
(the bars since the last section mark, `models.barclock`), and the state carries the clock.

The LSTM layers keep Keras' cuDNN-compatible defaults (tanh / sigmoid activations, bias on, no
recurrent dropout, not unrolled), so on a GPU TensorFlow runs them with cuDNN kernels. Without a
GPU, Keras' generic loop multiplies each step's input by the input kernel inside the loop; `call`
instead projects the whole window's inputs in one matrix product and loops over the recurrent
product only (the same weights and arithmetic, about 1.25x faster to train on a CPU).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from musicgen.config import ModelConfig
from musicgen.models import barclock


class LSTMLanguageModel(keras.Model):
    """Predicts the next character of ABC text.

    Args:
        config: sizes; `config.vocab_size` must already be set.
    """

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embedding = layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")
        self.lstm_layers = [
            layers.LSTM(config.units, return_sequences=True, return_state=True, name=f"lstm_{i}")
            for i in range(config.layers)
        ]
        self.bar_clock = (
            layers.Embedding(config.bar_clock, config.embedding_dim, name="bar_clock")
            if config.bar_clock
            else None
        )
        # A config built by hand, not by train from a vocabulary, may name no ids: then no
        # character is a bar line and the clock stays at 0.
        self.bar_ids = config.bar_ids or (barclock.NO_ID,) * 3
        self.dropout = layers.Dropout(config.dropout)
        self.use_cudnn = bool(tf.config.list_physical_devices("GPU"))
        # Logits stay float32 under a mixed-precision policy so the softmax is stable.
        self.to_logits = layers.Dense(config.vocab_size, dtype="float32", name="logits")

    def build(self, input_shape):
        # Built explicitly: on a CPU `call` reads the LSTM weights without calling the layers.
        self.embedding.build(input_shape)
        if self.bar_clock is not None:
            self.bar_clock.build(input_shape)
        features = self.config.embedding_dim
        for lstm in self.lstm_layers:
            lstm.build((None, None, features))
            features = self.config.units
        self.to_logits.build((None, None, features))
        self.built = True

    def call(self, token_ids, state=None, training=False, return_state=False):
        """Logits for every position.

        Args:
            token_ids: int tensor (batch, time).
            state: None for zeros, else what `initial_state` or a previous call returned.
            training: turns dropout on.
            return_state: also return the state after the last position.

        Returns:
            logits (batch, time, vocab), and the new state when `return_state`.
        """
        if state is None:
            state = self.initial_state(ops.shape(token_ids)[0])
        x = self.embedding(token_ids)  # (batch, time, embedding)
        new_state = []
        if self.bar_clock is not None:
            count, previous = state[-1]
            counts = barclock.counts(token_ids, count, previous, self.bar_ids)
            x = x + self.bar_clock(self._clock_index(counts))
        for lstm, (h, c) in zip(self.lstm_layers, state):
            if self.use_cudnn:
                x, h, c = lstm(x, initial_state=[h, c], training=training)
            else:
                x, h, c = _lstm_sequence(lstm, x, h, c)
            x = self.dropout(x, training=training)
            new_state.append((h, c))
        if self.bar_clock is not None:
            new_state.append((counts[:, -1], tf.cast(token_ids[:, -1], tf.int32)))
        logits = self.to_logits(x)
        return (logits, tuple(new_state)) if return_state else logits

    def sequence_logits(self, token_ids):
        """Logits (batch, time, vocab) for whole sequences of any length, read from the zero
        state: how a tune is scored from its start."""
        return self(token_ids)

    def initial_state(self, batch_size):
        """Zero (h, c) for every layer: a tuple of pairs of (batch, units) tensors; with the bar
        clock, then the pair (count, previous character), int32 (batch,) each: 0 and none."""
        zeros = ops.zeros((batch_size, self.config.units), dtype=self.compute_dtype)
        state = tuple((zeros, zeros) for _ in self.lstm_layers)
        if self.bar_clock is None:
            return state
        clock = (tf.zeros([batch_size], tf.int32), tf.fill([batch_size], barclock.NO_ID))
        return (*state, clock)

    def _clock_index(self, counts):
        """Counts past the clock's last embedding row share that row."""
        return tf.minimum(counts, self.config.bar_clock - 1)

    def step(self, token_ids, state):
        """One character per sequence: (batch,) ids -> (batch, vocab) logits and the next state.

        Uses each layer's cell directly, so a decode loop pays for one matrix product per layer and
        never re-reads earlier characters.
        """
        x = self.embedding(token_ids)  # (batch, embedding)
        new_state = []
        if self.bar_clock is not None:
            count, previous = state[-1]
            count = barclock.step(count, previous, token_ids, self.bar_ids)
            x = x + self.bar_clock(self._clock_index(count))
        for lstm, (h, c) in zip(self.lstm_layers, state):
            x, (h, c) = lstm.cell(x, [h, c], training=False)
            new_state.append((h, c))
        if self.bar_clock is not None:
            new_state.append((count, tf.cast(token_ids, tf.int32)))
        return self.to_logits(x), tuple(new_state)


def _lstm_sequence(lstm: layers.LSTM, inputs, h, c):
    """Runs `lstm`'s weights over (batch, time, features) inputs from state (h, c).

    Computes what Keras' LSTM computes (gates in Keras' order i, f, c, o), with the input
    projection of every time step done up front as one matrix product.

    Returns:
        outputs (batch, time, units) and the final h and c, each (batch, units).
    """
    cell = lstm.cell
    dtype = inputs.dtype
    kernel = ops.cast(cell.kernel, dtype)
    recurrent_kernel = ops.cast(cell.recurrent_kernel, dtype)
    projected = tf.einsum("bti,ij->tbj", inputs, kernel) + ops.cast(cell.bias, dtype)
    # projected: (time, batch, 4 * units)

    def step(carry, z):
        h, c = carry
        z = z + tf.matmul(h, recurrent_kernel)
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    hs, cs = tf.scan(step, projected, initializer=(ops.cast(h, dtype), ops.cast(c, dtype)))
    return tf.transpose(hs, [1, 0, 2]), hs[-1], cs[-1]
