"""The reference recipe musicgen must beat, rebuilt from its description for speed comparisons.

MIT 6.S191 Lab 1 "Music Generation with RNNs": a character vocabulary with no special tokens,
random windows of the joined text, one stateful LSTM(1024), Adam(5e-3), and generation by one eager
model call per character with `tf.random.categorical` on the raw logits. The recipe's own habits
(including its bugs: the LSTM state is never reset between unrelated training batches) are kept on
purpose; this module measures them and must not be "fixed". Checkpointing every 100 iterations is
left out, which can only flatter the reference.
"""

from __future__ import annotations

import time

# isort: off
import musicgen  # noqa: F401  (before TensorFlow loads: oneDNN on, as on musicgen's side)

# isort: on
import keras
import numpy as np
import tensorflow as tf

SEQ_LENGTH = 100
BATCH_SIZE = 8
EMBEDDING_DIM = 256
UNITS = 1024
LEARNING_RATE = 5e-3
START_STRING = "X"


def vectorize(text: str) -> tuple[list[str], np.ndarray]:
    """The recipe's vocabulary (`sorted(set(text))`, no special tokens) and `text` as ids."""
    vocab = sorted(set(text))
    char_to_id = {c: i for i, c in enumerate(vocab)}
    return vocab, np.array([char_to_id[c] for c in text], dtype=np.int32)


def get_batch(
    ids: np.ndarray, seq_length: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Windows at random start offsets; the target is the input shifted by one character.

    Returns:
        (inputs, targets), each int32 (batch_size, seq_length).
    """
    starts = rng.choice(len(ids) - seq_length - 1, batch_size)
    inputs = np.stack([ids[s : s + seq_length] for s in starts])
    targets = np.stack([ids[s + 1 : s + seq_length + 1] for s in starts])
    return inputs, targets


def build_reference_model(vocab_size: int, batch_size: int) -> keras.Model:
    """Embedding(256) -> stateful LSTM(1024) -> Dense(vocab), for a fixed batch size.

    Keras 3 dropped `Embedding(batch_input_shape=...)`, so the fixed batch a stateful RNN needs
    comes from `keras.Input(batch_shape=...)`.
    """
    inputs = keras.Input(batch_shape=(batch_size, None), dtype="int32")
    x = keras.layers.Embedding(vocab_size, EMBEDDING_DIM)(inputs)
    x = keras.layers.LSTM(
        UNITS,
        return_sequences=True,
        recurrent_initializer="glorot_uniform",
        recurrent_activation="sigmoid",
        stateful=True,
    )(x)
    logits = keras.layers.Dense(vocab_size)(x)  # (batch, time, vocab)
    return keras.Model(inputs, logits, name="reference")


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer):
    """The recipe's compiled step: forward, cross-entropy from logits, gradients, Adam update."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(inputs, targets):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = loss_fn(targets, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def reference_train(
    text: str,
    steps: int,
    *,
    warmup_steps: int = 3,
    seq_length: int = SEQ_LENGTH,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
) -> dict:
    """Trains the reference model and times its loop, batch making included.

    Args:
        text: the joined corpus.
        steps: timed iterations, run after `warmup_steps` untimed ones (the first traces the step).
        warmup_steps: iterations left out of the timing.
        seq_length, batch_size, learning_rate: the recipe's settings unless changed.
        seed: seeds the batch offsets and the weights.

    Returns:
        dict with `chars_per_sec` (timed steps only), `median_step_seconds`, `first_step_seconds`,
        `losses` (every step), `params`, `vocab_size`, `model` and `vocab`.
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    vocab, ids = vectorize(text)
    model = build_reference_model(len(vocab), batch_size)
    train_step = make_train_step(model, keras.optimizers.Adam(learning_rate))
    losses, step_seconds = [], []
    for _ in range(warmup_steps + steps):
        started = time.perf_counter()
        inputs, targets = get_batch(ids, seq_length, batch_size, rng)
        losses.append(float(train_step(inputs, targets).numpy()))  # .numpy() waits for the step
        step_seconds.append(time.perf_counter() - started)
    timed = step_seconds[warmup_steps:]
    chars = batch_size * seq_length * len(timed)
    return {
        "chars_per_sec": chars / sum(timed) if timed else 0.0,
        "median_step_seconds": float(np.median(timed)) if timed else 0.0,
        "first_step_seconds": step_seconds[0],
        "timed_steps": len(timed),
        "losses": losses,
        "params": model.count_params(),
        "vocab_size": len(vocab),
        "model": model,
        "vocab": vocab,
    }


def reference_generate(
    model: keras.Model,
    vocab: list[str],
    n_chars: int,
    *,
    start_string: str = START_STRING,
    seed: int = 0,
) -> tuple[str, float]:
    """Writes `n_chars` characters the recipe's way: one eager call of a batch-1 copy per character.

    Args:
        model: a trained (or untrained) reference model of any batch size; its weights are copied.
        vocab: the characters, id order.
        n_chars: characters to generate after `start_string`.
        start_string: the priming text.
        seed: seeds `tf.random.categorical`.

    Returns:
        (start_string + generated text, generated characters per second). Building the copy and
        one warm-up call are not timed.
    """
    generator = build_reference_model(len(vocab), 1)
    generator.set_weights(model.get_weights())
    char_to_id = {c: i for i, c in enumerate(vocab)}
    # One untimed call first, as our side's tracing call is untimed too; then start from zeros.
    generator(tf.constant([[char_to_id[start_string[0]]]]))
    for layer in generator.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    tf.random.set_seed(seed)
    started = time.perf_counter()
    inputs = tf.expand_dims([char_to_id[c] for c in start_string], 0)
    generated = []
    for _ in range(n_chars):
        logits = tf.squeeze(generator(inputs), 0)  # (time, vocab)
        next_id = int(tf.random.categorical(logits, num_samples=1)[-1, 0].numpy())
        inputs = tf.expand_dims([next_id], 0)
        generated.append(vocab[next_id])
    elapsed = time.perf_counter() - started
    return start_string + "".join(generated), n_chars / elapsed
