"""Validity while training: at each validation, a few tunes sampled as one compiled batch and the
share of them that pass every headline check (`musicgen.evaluation.checks`), so a run shows when
its model starts writing playable tunes.

Tunes are sampled as `generate` samples them (temperature 0.8, top-p 0.9) up to MAX_LENGTH
characters, which 97% of the bundled corpus's tunes fit in: the decode loop runs until the longest
tune of the batch ends, so a cap keeps each validation cheap, and a tune that has not ended by then
counts as not valid.

The sampler draws from its own stateless seed, fixed for the run: it never touches the training
random state (resume stays bit-identical), and every validation samples with the same seed, so two
steps' figures differ by the model alone.
"""

from __future__ import annotations

import dataclasses
import time

from musicgen.config import SampleConfig
from musicgen.data.vocab import Vocabulary
from musicgen.generation.generate import Generator

# The run's training seed is mixed with this so the tunes do not share the batch order's seed.
SEED_OFFSET = 0x5A11D
MAX_LENGTH = 512  # characters of a sampled tune, its end token not counted


@dataclasses.dataclass(frozen=True)
class ValidityFigure:
    """The tunes sampled at one validation.

    Attributes:
        tunes: how many.
        valid: how many pass every headline check.
        seconds: sampling and checking together.
    """

    tunes: int
    valid: int
    seconds: float

    @property
    def share(self) -> float:
        return self.valid / self.tunes


class ValiditySampler:
    """Samples `num` tunes from the start of tune with the model being trained and checks them.

    Args:
        model: the musicgen model (its weights are read as they are at each call).
        vocab: its vocabulary.
        num: tunes per validation.
        random_seed: the run's training seed.
    """

    def __init__(self, model, vocab: Vocabulary, num: int, random_seed: int):
        self.sample = SampleConfig(
            num=num, max_length=MAX_LENGTH, random_seed=random_seed + SEED_OFFSET
        )
        # The decode loop is traced once, at the first call, and reused by every later one.
        self.generator = Generator(model, vocab)

    def __call__(self) -> ValidityFigure:
        from musicgen.evaluation.evaluate import check_tunes

        started = time.perf_counter()
        texts = self.generator.generate("", self.sample)
        # abc2midi is not a headline check, and a subprocess per validation is not cheap.
        passed = check_tunes(texts, use_abc2midi=False).valid
        # A tune as long as the cap has not ended (or ended just there, which is as good as not).
        valid = sum(ok and len(text) < MAX_LENGTH for ok, text in zip(passed, texts, strict=True))
        return ValidityFigure(len(texts), valid, time.perf_counter() - started)
