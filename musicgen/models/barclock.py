"""The bar clock: how many bar lines a tune has passed since its last section mark.

Real tunes are built of 8-bar sections (77% of the bundled corpus's sections), but a character
model sees a bar line as one `|` among hundreds and must count them itself to know when a section
is due. The clock counts for it, from the characters alone, and the LSTM adds an embedding of the
count to each character's (`models.lstm`), so training, scoring and sampling read the same input.

The count after each character, given the character before it:

- `:` (in `|:`, `:|`, `::`), `|` after `|` or `:` (`||`, `:|`) and `]` after `|` (`|]`) are
  section marks: the count is 0;
- any other `|` is a bar line: the count goes up by one;
- every other character leaves it as it was (a `]` closing a chord `[CEG]` is not a mark).

Header lines hold `:` (`K:`, `M:`), so the clock starts each tune's body at 0. A training window cut
from the middle of a tune (`--stream-windows`) starts counting at 0, as the LSTM's state starts at
zeros there; the window's first section mark sets the count right. Whole-tune windows (the
default) and generation always count from the tune's start.
"""

from __future__ import annotations

import tensorflow as tf

BAR, COLON, BRACKET = "|", ":", "]"
NO_ID = -1  # a character the vocabulary lacks: matches no token


def clock_ids(vocab) -> tuple[int, int, int]:
    """The token ids of `|`, `:` and `]` in a `Vocabulary` (NO_ID for one it lacks)."""
    return tuple(vocab.encode(c)[0] if c in vocab else NO_ID for c in (BAR, COLON, BRACKET))


def _marks(token_ids, previous, ids):
    """(reset, bar) bool tensors of token_ids' shape: where the count returns to 0, where it
    goes up by one."""
    bar, colon, bracket = (tf.constant(i, tf.int32) for i in ids)
    is_bar = tf.equal(token_ids, bar)
    after_bar = tf.equal(previous, bar)
    reset = (
        tf.equal(token_ids, colon)
        | (is_bar & (after_bar | tf.equal(previous, colon)))
        | (tf.equal(token_ids, bracket) & after_bar)
    )
    return reset, is_bar & ~reset


def step(count, previous, token_ids, ids):
    """One character per row: the count after `token_ids` (batch,), given the count and the
    character before it (each (batch,) int32)."""
    token_ids = tf.cast(token_ids, tf.int32)
    reset, bar = _marks(token_ids, previous, ids)
    return tf.where(reset, 0, count + tf.cast(bar, tf.int32))


def counts(token_ids, count, previous, ids):
    """The count after every character of (batch, time) `token_ids`, starting from `count` and
    `previous` (each (batch,) int32), as `step` would give one character at a time.

    Returns:
        int32 (batch, time).
    """
    token_ids = tf.cast(token_ids, tf.int32)
    before = tf.concat([previous[:, None], token_ids[:, :-1]], axis=1)
    reset, bar = _marks(token_ids, before, ids)
    # Bar lines so far, from the starting count; at a reset the count restarts from that total.
    total = count[:, None] + tf.math.cumsum(tf.cast(bar, tf.int32), axis=1)  # (batch, time)
    # Each row's stretch between resets is a segment; its base is the total at the reset that
    # opens it (0 for the stretch before the first reset, whose total includes `count`).
    shape = tf.shape(token_ids)
    segment = tf.math.cumsum(tf.cast(reset, tf.int32), axis=1)
    segment += tf.range(shape[0])[:, None] * (shape[1] + 1)  # distinct across rows
    base = tf.math.unsorted_segment_max(
        tf.where(reset, total, 0), segment, num_segments=shape[0] * (shape[1] + 1)
    )
    return total - tf.gather(base, segment)
