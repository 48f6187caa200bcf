"""The one rule that splits a corpus into training and validation tunes, without TensorFlow.

A tune is held out when the hash of its text (`tune_bucket`) is below the validation fraction, so
the same tune always lands on the same side, whatever else is in the corpus: adding tunes never
moves an old one from validation into training. Two edge cases keep both sides non-empty
(`rebalance`). `split_tunes` applies the rule to tunes in memory; the encoded cache
(`musicgen.data.encoded`) applies it tune by tune while it streams a corpus to disk, and `evaluate`
and the benches use the same functions, so every part of musicgen agrees on what was held out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

SPLITS = ("train", "validation")  # the two sides, in the order every record lists them


def tune_bucket(text: str) -> float:
    """A stable number in [0, 1) for a tune's text (sha1, so it is the same in every process)."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_held_out(bucket: float, fraction: float) -> bool:
    """Whether a tune of this bucket goes to validation."""
    return bucket < fraction


def rebalance(fraction: float, distinct: int, validation: int, train: int) -> str | None:
    """Which tune to move when one side came out empty: "lowest" (the tune of the lowest bucket
    goes to validation), "highest" (the tune of the highest bucket goes to training), or None.

    Args:
        fraction: the validation fraction; 0 holds nothing out, on purpose.
        distinct: how many distinct tunes (by bucket) there are; one tune cannot be split.
        validation, train: how many tunes each side got by `is_held_out`.
    """
    if fraction > 0 and distinct >= 2 and validation == 0:
        return "lowest"
    if distinct >= 2 and train == 0:
        return "highest"
    return None


def split_tunes(tunes: Sequence, fraction: float = 0.05) -> tuple[list, list]:
    """Splits tunes into training and validation sets by a hash of each tune's text.

    Identical texts share a side.

    Args:
        tunes: objects with a `text` attribute.
        fraction: roughly the share of tunes to hold out.

    Returns:
        (train, validation) lists, each in the input order. With two or more distinct tunes and
        fraction > 0, validation holds at least one tune and training at least one.
    """
    buckets = [tune_bucket(tune.text) for tune in tunes]
    held_out = [is_held_out(bucket, fraction) for bucket in buckets]
    held = sum(held_out)
    move = rebalance(fraction, len(set(buckets)), held, len(held_out) - held)
    if move == "lowest":
        held_out = [bucket == min(buckets) for bucket in buckets]
    elif move == "highest":
        held_out = [bucket != max(buckets) for bucket in buckets]
    train = [tune for tune, out in zip(tunes, held_out) if not out]
    validation = [tune for tune, out in zip(tunes, held_out) if out]
    return train, validation


@dataclasses.dataclass(frozen=True)
class SplitRecord:
    """What corpus.json says of one split (training or validation).

    Attributes:
        tunes: how many tunes.
        characters: their characters, BOS and EOS not counted.
        sources: one source per tune, or, for a large corpus read through `musicgen.data.encoded`,
            the files its tunes came from (each once, in reading order); `per` says which.
        per: "tune" or "file".
    """

    tunes: int
    characters: int
    sources: tuple[str, ...]
    per: str = "tune"

    @classmethod
    def of_tunes(cls, tunes: Sequence) -> SplitRecord:
        """The record of `tunes`, objects with `text` and `source` attributes."""
        return cls(len(tunes), sum(len(t.text) for t in tunes), tuple(str(t.source) for t in tunes))
