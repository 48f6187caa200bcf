"""The corpus a run trains on, split and ready: one interface, two kinds, no TensorFlow.

`train` takes a `SplitCorpus`: training and validation tunes, the vocabulary they need, their id
streams and what corpus.json records of them. There are two kinds, split by the one rule of
`musicgen.data.split`:

- `split_corpus(tunes, data)`: tunes in memory (a `TuneSplit`), what the tests and benches train on;
- `encoded.load_encoded_corpus(...)`: the encoded cache (an `EncodedCorpus`), what `musicgen train`
  trains on, its streams memory-mapped so a large corpus is never held in memory.

With `data.common_root` the tunes are moved to root C after the split (`keyroot`), and with
`data.transpose` the training tunes get their transposed copies (`augment`); both kinds record
what that did (`homes`, `augmentation`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from musicgen.config import DataConfig
from musicgen.data.augment import AugmentReport, augment_tunes
from musicgen.data.split import SPLITS, SplitRecord, split_tunes
from musicgen.data.vocab import BOS, Vocabulary
from musicgen.errors import CorpusError
from musicgen.music.keyroot import Homes, common_root_split


class SplitCorpus(Protocol):
    """What `train` reads of a corpus. `split` is "train" or "validation" throughout."""

    augmentation: AugmentReport | None  # the transposed copies among the training tunes
    homes: Homes | None  # with common_root: the roots the training tunes had before C

    def check_data(self, data: DataConfig) -> None:
        """Raises ValueError unless the corpus was split and prepared as `data` says."""

    def tune_count(self, split: str) -> int: ...

    def texts(self, split: str) -> Iterable[str]:
        """Each tune's text, as the model reads it."""

    def vocabulary(self) -> Vocabulary:
        """The vocabulary of every tune, trained on or validated on."""

    def unknown_characters(self, vocab: Vocabulary) -> list[str]:
        """The tunes' characters that `vocab` lacks."""

    def streams(self, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training ids, validation ids, int64 position of each training tune's BOS), each
        stream BOS tune EOS BOS tune EOS ... in `vocab`'s ids.

        Raises:
            VocabularyError: a tune holds a character `vocab` lacks.
        """

    def split_records(self) -> list[SplitRecord]:
        """corpus.json's record of the training and the validation split."""


@dataclasses.dataclass(frozen=True)
class TuneSplit:
    """Tunes in memory, split (`split_corpus`): a SplitCorpus."""

    train: list  # objects with `text` and `source`, transposed copies included
    validation: list
    data: DataConfig  # the settings it was made with
    augmentation: AugmentReport | None = None
    homes: Homes | None = None

    def check_data(self, data: DataConfig) -> None:
        for name in ("validation_fraction", "transpose", "common_root"):
            if getattr(data, name) != getattr(self.data, name):
                raise ValueError(f"the tunes were split with another {name}")

    def tune_count(self, split: str) -> int:
        return len(self._tunes(split))

    def texts(self, split: str) -> Iterable[str]:
        return (tune.text for tune in self._tunes(split))

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_texts(tune.text for split in SPLITS for tune in self._tunes(split))

    def unknown_characters(self, vocab: Vocabulary) -> list[str]:
        unknown: dict[str, None] = {}
        for split in SPLITS:
            for tune in self._tunes(split):
                unknown.update(dict.fromkeys(vocab.unknown_characters(tune.text)))
        return list(unknown)

    def streams(self, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        train, validation = (encode_stream(self._tunes(split), vocab) for split in SPLITS)
        return train, validation, tune_start_positions(train)

    def split_records(self) -> list[SplitRecord]:
        return [SplitRecord.of_tunes(self._tunes(split)) for split in SPLITS]

    def _tunes(self, split: str) -> list:
        return self.train if split == "train" else self.validation


def split_corpus(tunes: Sequence, data: DataConfig) -> TuneSplit:
    """`tunes` (objects with `text` and `source`) split into training and validation by
    `data.validation_fraction`, moved to root C with `data.common_root`, the training tunes then
    augmented by `data.transpose`.

    Raises:
        CorpusError: there are no tunes.
    """
    tunes = list(tunes)
    if not tunes:
        raise CorpusError("no tunes to train on")
    train, validation = split_tunes(tunes, data.validation_fraction)
    homes = None
    if data.common_root:
        train, validation, homes = common_root_split(train, validation)
    augmentation = None
    if data.transpose:
        train, augmentation = augment_tunes(train, data.transpose)
    return TuneSplit(train, validation, data, augmentation, homes)


def encode_stream(tunes: Sequence, vocab: Vocabulary) -> np.ndarray:
    """Joins tunes (objects with `text`) into one int32 id stream: BOS t1 EOS BOS t2 EOS ...

    Raises:
        VocabularyError: a tune holds a character `vocab` does not know.
    """
    parts = [np.asarray(vocab.encode_tune(tune.text), dtype=np.int32) for tune in tunes]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.int32)


def tune_start_positions(ids: np.ndarray) -> np.ndarray:
    """Positions of the BOS ids in a stream from `encode_stream`: where each tune starts."""
    return np.flatnonzero(np.asarray(ids) == BOS).astype(np.int64)
