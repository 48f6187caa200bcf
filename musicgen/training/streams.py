"""A run's training and validation tunes as id streams, and the tf.data batches cut from them.

`Streams.of(corpus, vocab, seq_length)` takes a split corpus (`tune_split.SplitCorpus`) in the
run's vocabulary; `datasets` gives the endless shuffled training batches (windows from anywhere,
or with `whole_tunes` each tune from its start) and the validation batches, distributed under a
`tf.distribute` strategy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musicgen.data.dataset import (
    Shard,
    make_dataset,
    make_tune_dataset,
    make_tune_evaluation_dataset,
    require_windows,
    tune_pieces,
)
from musicgen.data.tune_split import SplitCorpus
from musicgen.data.vocab import Vocabulary
from musicgen.training.distribute import Distribution


@dataclasses.dataclass(frozen=True)
class Streams:
    """The training and validation tunes as id streams, checked long enough to train on."""

    train: np.ndarray  # ids, possibly a read-only memory map (an EncodedCorpus's)
    validation: np.ndarray
    seq_length: int
    train_starts: np.ndarray  # int64 position of each training tune's BOS
    whole_tunes: bool = False  # windows from tune starts (`dataset.make_tune_dataset`)
    length_buckets: int = 1

    @classmethod
    def of(cls, corpus: SplitCorpus, vocab: Vocabulary, seq_length: int, **windows) -> Streams:
        """The streams of `corpus` in `vocab`'s ids; `windows`: whole_tunes and length_buckets.

        Raises:
            CorpusError: the training tunes are too short for one window of `seq_length`.
            VocabularyError: a tune holds a character `vocab` lacks.
        """
        train, validation, starts = corpus.streams(vocab)
        require_windows(len(train), seq_length)
        return cls(train, validation, seq_length, starts, **windows)

    def characters_per_step(self, batch_size: int) -> int:
        """Characters predicted per training step: whole windows, or with whole-tune windows
        (padded) the mean over a pass."""
        if not self.whole_tunes:
            return batch_size * self.seq_length
        _, lengths = tune_pieces(self.train_starts, len(self.train), self.seq_length)
        return max(1, round(batch_size * (float(np.mean(lengths)) - 1)))

    def datasets(self, batch_size: int, seed: int, start: int, distribution: Distribution):
        """(endless shuffled training batches from batch `start` on, validation batches or None).

        Skipping the batches a resumed run has already seen makes it see exactly the batches an
        uninterrupted run would (their order depends only on the seed). Under a strategy, the
        training batches are distributed: each worker reads its share of each global batch.
        """
        tune_starts = self.train_starts

        def training_batches(shard=None):
            if self.whole_tunes:
                return make_tune_dataset(
                    self.train,
                    tune_starts,
                    self.seq_length,
                    batch_size,
                    buckets=self.length_buckets,
                    seed=seed,
                    skip=start,
                    shard=shard,
                )
            return make_dataset(
                self.train,
                self.seq_length,
                batch_size,
                shuffle=True,
                seed=seed,
                repeat=True,
                tune_starts=tune_starts,
                skip=start,
                shard=shard,
            )

        if distribution.distributed:
            train = distribution.strategy.distribute_datasets_from_function(
                lambda context: training_batches(Shard.from_context(context, batch_size))
            )
        else:
            train = training_batches()
        if len(self.validation) < 2:
            return train, None
        if self.whole_tunes:
            # Validated as trained: each tune from its start. Stream windows would start mid-tune
            # and run past an EOS, which whole-tune training never shows the model.
            validation = make_tune_evaluation_dataset(
                self.validation, self.seq_length, batch_size, self.length_buckets
            )
            return train, validation
        # A short validation split gets shorter windows rather than none: the LSTM takes any length.
        window = min(self.seq_length, len(self.validation) - 1)
        return train, make_dataset(self.validation, window, batch_size, shuffle=False)
