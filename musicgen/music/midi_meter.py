"""The meter, bar lines and key of a quantised MIDI melody (`midi_grid` units), for `midi_in`.

- M: from the file's first time signature; without one, the meter (2/4, 3/4, 4/4, 6/8, 9/8 or
  12/8) whose strong beats best carry the long and loud notes. Where bar lines fall is inferred the
  same way (long, loud notes on downbeats, few notes tied over bar lines, the last note ending a
  bar), so a tune that starts with an upbeat gets a pickup bar. Later meter changes are not
  followed: the bars keep the first meter.
- K: the key signature's sharps or flats (without one: the signature that leaves the fewest notes
  outside the scale); the notes then choose the tonic and mode among major, minor, Dorian and
  Mixolydian (the last note, the time spent on each note, and the tonic the file names).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from musicgen.music import theory
from musicgen.music.midi_grid import UNIT_LENGTH, UNITS, Note

METERS = ((4, 4), (2, 4), (3, 4), (6, 8), (9, 8), (12, 8))  # tried when the file has none
MODES = {"ion": "", "mix": "mix", "dor": "dor", "aeo": "m"}  # the modes tried, as K: writes them


@dataclass(frozen=True)
class Meter:
    """A time signature; `bar` and `beat` are its lengths in units (UNITS a quarter note)."""

    numerator: int
    denominator: int

    @property
    def bar(self) -> int:
        return 4 * UNITS * self.numerator // self.denominator

    @property
    def compound(self) -> bool:
        return self.numerator % 3 == 0 and self.numerator > 3 and self.denominator >= 8

    @property
    def beat(self) -> int:
        return (3 if self.compound else 1) * 4 * UNITS // self.denominator


def first_meter(meters: list[tuple[int, int, int]]) -> Meter | None:
    """The first of the file's time signatures (tick, numerator, denominator), if it is one we can
    write bars for."""
    if not meters:
        return None
    _, numerator, denominator = min(meters)
    if not 1 <= numerator <= 32 or denominator not in (1, 2, 4, 8, 16, 32):
        return None
    meter = Meter(numerator, denominator)
    return meter if meter.bar <= 16 * UNITS else None


def _salience(notes: list[Note]) -> list[float]:
    """How strongly each note marks a beat: 1, plus log2(1 + its length in eighths), plus up to 2
    for being louder than the median (2 for the loudest)."""
    velocities = sorted(note.velocity for note in notes)
    median, loudest = velocities[len(velocities) // 2], velocities[-1]
    accent = 2.0 / (loudest - median) if loudest > median else 0.0
    return [
        1.0
        + math.log2(1 + (note.end - note.start) / UNIT_LENGTH)
        + accent * max(note.velocity - median, 0)
        for note in notes
    ]


@lru_cache(maxsize=64)
def _weights(meter: Meter) -> tuple[float, ...]:
    """Metrical weight of each unit of the bar: downbeat 4, other beats 2, beat divisions 1."""
    beat = meter.beat
    division = beat // 3 if meter.compound else beat // 2
    weights = [0.0] * meter.bar
    for position in range(0, meter.bar, division or 1):
        weights[position] = 1.0
    for position in range(0, meter.bar, beat):
        weights[position] = 2.0
    weights[0] = 4.0
    return tuple(weights)


def _phase_scores(notes, salience, meter: Meter) -> list[tuple[float, int]]:
    """(score, phase) for bar lines at phase + k * bar, phases on eighth notes."""
    weights, bar = _weights(meter), meter.bar
    scores = []
    for phase in range(0, bar, UNITS // 2):
        score = 0.0
        for note, weight in zip(notes, salience):
            position = (note.start - phase) % bar
            score += weights[position] * weight
            if position + note.end - note.start > bar:
                score -= 2.0  # tied over a bar line
        if (notes[-1].end - phase) % bar == 0:
            score += 4.0
        scores.append((score, phase))
    return scores


def bar_phase(notes: list[Note], meter: Meter, prefer_zero: bool) -> int:
    """Where bar lines fall (units from the file's start, modulo a bar)."""
    scores = _phase_scores(notes, _salience(notes), meter)
    if prefer_zero:  # the file's own bar lines win a near tie
        scores[0] = (scores[0][0] + 0.02 * abs(scores[0][0]) + 0.5, 0)
    return max(scores, key=lambda item: (item[0], -item[1]))[1]


def infer_meter(notes: list[Note]) -> Meter:
    """The candidate meter whose weights (scaled to the same mean) best fit the notes."""
    salience = _salience(notes)
    total = sum(salience)
    best: tuple | None = None
    for order, (numerator, denominator) in enumerate(METERS):
        meter = Meter(numerator, denominator)
        weights = _weights(meter)
        mean = sum(weights) / len(weights)
        fit = max(score for score, _ in _phase_scores(notes, salience, meter)) / (mean * total)
        candidate = (round(fit, 2), -order)  # within 0.01, the one METERS lists first
        if best is None or candidate > best[0]:
            best = (candidate, meter)
    return best[1]


def first_key(keys: list[tuple[int, str]]) -> tuple[int, int] | None:
    """(fifths, tonic pitch class) of the first of the file's key signatures (tick, mido key
    name)."""
    if not keys:
        return None
    found = theory.MIDI_KEYS.get(min(keys)[1])
    if found is None:
        return None
    fifths, minor = found
    return fifths, theory.pitch_class(fifths + 3 * minor)


@lru_cache(maxsize=32)
def _scale(fifths: int) -> frozenset[int]:
    return theory.scale(theory.key_signature(fifths))


def tonic_offset(mode: str) -> int:
    """Fifths from a signature to the tonic of its mode: 0 major, 1 Mixolydian, 3 minor."""
    return -theory.MODE_FIFTHS[mode]


def choose_key(notes: list[Note], file_key: tuple[int, int] | None) -> tuple[int, str]:
    """(fifths of the signature, mode): see the module docstring."""
    weight: Counter = Counter()
    for note in notes:
        weight[note.pitch % 12] += note.end - note.start
    total = sum(weight.values())
    outside = {
        fifths: sum(w for pc, w in weight.items() if pc not in _scale(fifths)) / total
        for fifths in range(-7, 8)
    }
    least = min(outside.values())
    if file_key is not None and outside[file_key[0]] <= least + 0.1:
        signatures = [file_key[0]]  # the file's signature, unless the notes clearly disagree
    else:
        signatures = [fifths for fifths, share in outside.items() if share <= least + 0.02]
    last = notes[-1].pitch % 12
    best: tuple | None = None
    for fifths in signatures:
        for mode in MODES:
            offset = tonic_offset(mode)
            tonic = theory.pitch_class(fifths + offset)
            score = 2.0 * weight[tonic] / total + 0.5 * weight[(tonic + 7) % 12] / total
            score += 2.0 * (tonic == last) - outside[fifths] - 0.05 * offset - 0.01 * abs(fifths)
            if file_key is not None and file_key[1] == tonic:
                score += 0.6
            if best is None or score > best[0]:
                best = (score, fifths, mode)
    return best[1], best[2]
