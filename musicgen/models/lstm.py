"""Character-level LSTM language model: Embedding -> LSTM x N (dropout between) -> Dense.

The LSTM layers keep Keras' cuDNN-compatible defaults (tanh / sigmoid activations, bias on, no
recurrent dropout, not unrolled), so on a GPU TensorFlow runs them with cuDNN kernels.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from musicgen.config import ModelConfig


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
        self.dropout = layers.Dropout(config.dropout)
        # Logits stay float32 under a mixed-precision policy so the softmax is stable.
        self.to_logits = layers.Dense(config.vocab_size, dtype="float32", name="logits")

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
        x = self.embedding(token_ids)  # (batch, time, embedding)
        new_state = []
        for i, lstm in enumerate(self.lstm_layers):
            initial = None if state is None else list(state[i])
            x, h, c = lstm(x, initial_state=initial, training=training)
            x = self.dropout(x, training=training)
            new_state.append((h, c))
        logits = self.to_logits(x)
        return (logits, tuple(new_state)) if return_state else logits

    def initial_state(self, batch_size):
        """Zero (h, c) for every layer: a tuple of pairs of (batch, units) tensors."""
        zeros = ops.zeros((batch_size, self.config.units), dtype=self.compute_dtype)
        return tuple((zeros, zeros) for _ in self.lstm_layers)

    def step(self, token_ids, state):
        """One character per sequence: (batch,) ids -> (batch, vocab) logits and the next state.

        Uses each layer's cell directly, so a decode loop pays for one matrix product per layer and
        never re-reads earlier characters.
        """
        x = self.embedding(token_ids)  # (batch, embedding)
        new_state = []
        for lstm, (h, c) in zip(self.lstm_layers, state):
            x, (h, c) = lstm.cell(x, [h, c], training=False)
            new_state.append((h, c))
        return self.to_logits(x), tuple(new_state)
