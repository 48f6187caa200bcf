"""How much of a tune is copied from the training tunes: the longest shared run of characters and of
bars, found with hashed n-grams so thousands of training tunes are searched in milliseconds.

Characters are compared in the tune's body (the music after the `K:` line), since every header
shares "M:6/8\\nL:1/8\\nK:" with hundreds of tunes. Bars are compared as music: the notes, chords
and rests of each bar with their pitches and lengths
(`musicgen.evaluation.checks.WrittenBar.elements`), so spacing, decorations and chord names do not
hide a copied bar.

How the longest run is found: every window of `CHAR_GRAM` characters (or every bar) is hashed; a
query window equal to a training window at offsets (i, p) lies on the diagonal p - i, and a shared
run of n windows is n consecutive i on one diagonal. Finding every matching pair with a sorted
array and the longest run along the diagonals is a handful of NumPy operations per tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from musicgen.evaluation.checks import WrittenTune

CHAR_GRAM = 8  # characters per hashed window; shorter shared runs are found by a slower path
PHRASE_BARS = 4  # a tune sharing this many bars in a row with a training tune copies a phrase
_PRIME = np.uint64(1_000_003)


@dataclass(frozen=True)
class Shared:
    """The longest run one tune shares with the training tunes.

    Attributes:
        chars: characters in the longest shared run of body text.
        bars: bars in the longest shared run of bars.
        nearest: index of the training tune holding the longest character run (None if no run).
    """

    chars: int
    bars: int
    nearest: int | None


def body(text: str) -> str:
    """The music of a tune: the text after its first `K:` line (all of it if there is none)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("K:"):
            return "\n".join(lines[index + 1 :])
    return text


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _window_hashes(codes: np.ndarray, width: int) -> np.ndarray:
    """A 64-bit polynomial hash of every window of `width` codes: (len - width + 1,) uint64."""
    count = len(codes) - width + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    hashes = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        for offset in range(width):
            hashes = hashes * _PRIME + codes[offset : offset + count] + np.uint64(1)
    return hashes


class _SortedKeys:
    """Keys of one long sequence, sorted, with where each came from."""

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def longest_run(self, query: np.ndarray) -> tuple[int, int]:
        """(most consecutive query keys equal to consecutive keys here, where that run starts here).

        Returns (0, -1) when no key matches.
        """
        left = np.searchsorted(self.sorted, query, "left")
        counts = np.searchsorted(self.sorted, query, "right") - left
        total = int(counts.sum())
        if total == 0:
            return 0, -1
        query_at = np.repeat(np.arange(len(query)), counts)
        first = np.repeat(left - (np.cumsum(counts) - counts), counts)
        positions = self.order[first + np.arange(total)]  # matching positions here
        diagonal = positions - query_at
        order = np.lexsort((query_at, diagonal))
        diagonal, query_at = diagonal[order], query_at[order]
        starts = np.ones(total, bool)
        starts[1:] = (diagonal[1:] != diagonal[:-1]) | (query_at[1:] != query_at[:-1] + 1)
        run_ids = np.cumsum(starts) - 1
        lengths = np.bincount(run_ids)
        best = int(np.argmax(lengths))
        first_of_best = int(np.flatnonzero(starts)[best])
        return int(lengths[best]), int(diagonal[first_of_best] + query_at[first_of_best])


class NoveltyIndex:
    """The training tunes, indexed for `shared`.

    Args:
        texts: the training tunes' ABC texts.
        written: the same tunes as written, None for a tune that does not parse (it then adds no
            bars to the index).
    """

    def __init__(self, texts: Sequence[str], written: Sequence[WrittenTune | None]):
        bodies = [body(text) for text in texts]
        # "\0" never occurs in a tune, so no window spans two tunes.
        joined = "\0".join(bodies)
        self.text = joined
        self.tune_starts = np.cumsum([0] + [len(b) + 1 for b in bodies[:-1]])
        self.chars = _SortedKeys(_window_hashes(_codes(joined), CHAR_GRAM))
        self.bar_ids: dict[tuple, int] = {}
        bars: list[int] = []
        for separator, tune in enumerate(written):
            bars += [self._bar_id(bar.elements, add=True) for bar in (tune.bars if tune else ())]
            bars.append(-1 - separator)  # unique, so no run spans two tunes
        self.bars = _SortedKeys(np.asarray(bars, np.int64))
        self._short_grams: dict[int, np.ndarray] = {}

    def _bar_id(self, elements: tuple, add: bool = False) -> int:
        found = self.bar_ids.get(elements)
        if found is None:
            if not add:
                return -(2**40)  # matches nothing in the index
            found = self.bar_ids[elements] = len(self.bar_ids)
        return found

    def shared(self, text: str, tune: WrittenTune | None) -> Shared:
        """The longest runs `text` (and its bars, when it parses) shares with a training tune."""
        codes = _codes(body(text))
        windows, start = self.chars.longest_run(_window_hashes(codes, CHAR_GRAM))
        if windows:
            chars = windows + CHAR_GRAM - 1
            nearest = int(np.searchsorted(self.tune_starts, start, "right") - 1)
        else:
            chars, nearest = self._short_run(codes), None
        bars = 0
        if tune is not None and tune.bars:
            ids = np.asarray([self._bar_id(bar.elements) for bar in tune.bars], np.int64)
            bars, _ = self.bars.longest_run(ids)
        return Shared(chars=chars, bars=bars, nearest=nearest)

    def _short_run(self, codes: np.ndarray) -> int:
        """The longest shared run when it is shorter than CHAR_GRAM (rare: a garbled body)."""
        for width in range(CHAR_GRAM - 1, 0, -1):
            if width not in self._short_grams:
                self._short_grams[width] = np.unique(_window_hashes(_codes(self.text), width))
            grams = self._short_grams[width]  # sorted: a binary search, not isin's full sort
            probe = _window_hashes(codes, width)
            if len(grams) and len(probe):
                found = grams[np.minimum(np.searchsorted(grams, probe), len(grams) - 1)]
                if (found == probe).any():
                    return width
        return 0


def summarise(shared: Sequence[Shared], phrase_bars: int = PHRASE_BARS) -> dict:
    """Mean, median and largest longest-run figures, and the share of tunes copying a phrase."""
    if not shared:
        return {"tunes": 0, "phrase_bars": phrase_bars, "copying_share": None}
    chars = np.asarray([s.chars for s in shared], float)
    bars = np.asarray([s.bars for s in shared], float)
    return {
        "tunes": len(shared),
        "phrase_bars": phrase_bars,
        "copying_share": float(np.mean(bars >= phrase_bars)),
        "longest_chars": {
            "mean": float(chars.mean()),
            "median": float(np.median(chars)),
            "max": int(chars.max()),
        },
        "longest_bars": {
            "mean": float(bars.mean()),
            "median": float(np.median(bars)),
            "max": int(bars.max()),
        },
    }
