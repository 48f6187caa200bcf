"""Musical statistics of a set of tunes, and how far one set's distributions are from another's.

Every figure is read from tunes as written (`musicgen.evaluation.checks.WrittenTune`): repeats are
not expanded, so a repeated section counts once. Distributions are dicts from a label to a share
that sums to 1; two of them are compared by total variation (half the summed absolute differences:
the share of mass that would have to move, 0 for equal distributions, 1 for disjoint ones) and by
the Jensen-Shannon divergence in bits (also 0 to 1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from musicgen.evaluation import checks
from musicgen.evaluation.checks import WrittenTune

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
RANGE_BIN = 3  # semitones per bin of the pitch-range histogram
RANGE_TOP = 36  # ranges from here on share the last bin
BARS_BIN = 8  # bars per bin of the tune-length histogram
BARS_TOP = 64


def shares(counts: Counter) -> dict[str, float]:
    """Counts as shares summing to 1 (an empty dict for no counts), largest first."""
    total = sum(counts.values())
    if not total:
        return {}
    return {str(label): count / total for label, count in counts.most_common()}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the summed absolute differences of two distributions over the union of their labels."""
    return 0.5 * sum(abs(p.get(label, 0.0) - q.get(label, 0.0)) for label in {*p, *q})


def jensen_shannon(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon divergence in bits, 0 (equal) to 1 (disjoint)."""
    divergence = 0.0
    for label in {*p, *q}:
        a, b = p.get(label, 0.0), q.get(label, 0.0)
        middle = (a + b) / 2
        if a:
            divergence += 0.5 * a * math.log2(a / middle)
        if b:
            divergence += 0.5 * b * math.log2(b / middle)
    return max(0.0, divergence)


def entropy(distribution: dict[str, float]) -> float:
    """Shannon entropy in bits."""
    return -sum(p * math.log2(p) for p in distribution.values() if p > 0)


def distributions(tunes: Sequence[WrittenTune]) -> dict[str, dict[str, float]]:
    """The distributions that `compare` puts side by side, each label -> share.

    Returns:
        pitch_class (12 pitch classes of every note), duration (written note lengths in whole
        notes, e.g. "1/8"), pitch_range (each tune's highest minus lowest MIDI pitch, in bins of
        RANGE_BIN semitones), length_bars (bars per tune, bins of BARS_BIN), key (starting key) and
        meter (starting meter).
    """
    counts = {name: Counter() for name in ("pitch_class", "duration", "pitch_range")}
    counts.update(length_bars=Counter(), key=Counter(), meter=Counter())
    for tune in tunes:
        pitches = [note.pitch for note in tune.notes]
        counts["pitch_class"].update(PITCH_CLASSES[p % 12] for p in pitches)
        counts["duration"].update(str(note.length) for note in tune.notes)
        if pitches:
            counts["pitch_range"][_bin(max(pitches) - min(pitches), RANGE_BIN, RANGE_TOP)] += 1
        counts["length_bars"][_bin(len(tune.bars), BARS_BIN, BARS_TOP, first=1)] += 1
        counts["key"][tune.key] += 1
        counts["meter"][tune.meter] += 1
    result = {name: shares(counter) for name, counter in counts.items()}
    result["pitch_class"] = {name: result["pitch_class"].get(name, 0.0) for name in PITCH_CLASSES}
    return result


def _bin(value: int, width: int, top: int, first: int = 0) -> str:
    """A histogram label such as "12-14" for `value`, or "36+" from `top` on."""
    if value >= top:
        return f"{top}+"
    low = first + (value - first) // width * width
    return f"{low}-{low + width - 1}"


def scalars(tunes: Sequence[WrittenTune]) -> dict[str, float | None]:
    """Single figures: pitch-class entropy (bits), share of notes in the key's scale, mean range,
    lowest and highest pitch, mean notes and bars per tune, and the share of bars (of all tunes
    together) that add up to the meter; None where there are no notes."""
    notes = [note for tune in tunes for note in tune.notes]
    bars_off, bars_checked = 0, 0
    for tune in tunes:
        off, checked = checks.bars_off(tune)
        bars_off, bars_checked = bars_off + len(off), bars_checked + checked
    ranges = [max(p) - min(p) for p in ([n.pitch for n in t.notes] for t in tunes) if p]
    pitch_classes = shares(Counter(note.pitch % 12 for note in notes))
    return {
        "tunes": len(tunes),
        "pitch_class_entropy_bits": entropy(pitch_classes) if notes else None,
        "in_scale_share": sum(n.in_scale for n in notes) / len(notes) if notes else None,
        "mean_pitch_range": sum(ranges) / len(ranges) if ranges else None,
        "lowest_pitch": min((n.pitch for n in notes), default=None),
        "highest_pitch": max((n.pitch for n in notes), default=None),
        "mean_notes": len(notes) / len(tunes) if tunes else None,
        "mean_bars": sum(len(t.bars) for t in tunes) / len(tunes) if tunes else None,
        "bars_adding_up_share": 1 - bars_off / bars_checked if bars_checked else None,
    }


def compare(generated: Sequence[WrittenTune], corpus: Sequence[WrittenTune]) -> dict:
    """Generated tunes against the corpus, distribution by distribution.

    Returns:
        {"scalars": {"generated": ..., "corpus": ...}, "distributions": {name: {"generated",
        "corpus", "total_variation", "jensen_shannon"}}}. A distance is None when the generated
        tunes have no notes to measure.
    """
    ours, theirs = distributions(generated), distributions(corpus)
    compared = {}
    for name in ours:
        measured = bool(ours[name]) and any(ours[name].values())
        compared[name] = {
            "generated": ours[name],
            "corpus": theirs[name],
            "total_variation": total_variation(ours[name], theirs[name]) if measured else None,
            "jensen_shannon": jensen_shannon(ours[name], theirs[name]) if measured else None,
        }
    return {
        "scalars": {"generated": scalars(generated), "corpus": scalars(corpus)},
        "distributions": compared,
    }
