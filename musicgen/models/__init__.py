"""Model families. Each model maps token ids to next-token logits and offers, for generation,

- `initial_state(batch_size)`: the state before the first token (a nest of tensors), and
- `step(token_ids, state) -> (logits, state)`: one token per sequence, (batch,) -> (batch, vocab),
- `sequence_logits(token_ids)`: (batch, time) -> (batch, time, vocab) logits for whole sequences of
  any length, read from the start-of-tune state (for scoring tunes),
- optionally `xla_decode = True`: the generator then has the sampler compile its whole loop around
  `step` with XLA (the Transformer; a model without it runs in a plain compiled loop),

so the sampler can run them inside one compiled loop without knowing which model it drives.
"""

from __future__ import annotations

from musicgen.config import ModelConfig


def build_model(config: ModelConfig):
    """Builds the Keras model that `config.kind` names (its weights are created on first call)."""
    if config.vocab_size <= 0:
        raise ValueError("ModelConfig.vocab_size must be set from the vocabulary before building")
    if config.kind == "lstm":
        from musicgen.models.lstm import LSTMLanguageModel

        return LSTMLanguageModel(config)
    if config.kind == "transformer":
        from musicgen.models.transformer import TransformerLanguageModel

        return TransformerLanguageModel(config)
    raise ValueError(f"unknown model kind {config.kind!r}")
