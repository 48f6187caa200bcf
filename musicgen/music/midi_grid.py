"""The grid a MIDI melody is quantised to: notes from ticks of the file to units of a quarter note.

`midi_in` reads the file and picks the melody; `quantise` puts it on the grid that `midi_meter`
finds bars and keys on and `midi_abc` writes from.

- Times are read in ticks of the file, so tempo changes never move notes on the grid. Onsets and
  ends are quantised to a grid, sixteenths by default (`grid` steps a quarter note: 2, 4 or 8).
  Each span of two grid steps (an eighth note for sixteenths) is straight or, when its onsets sit
  on thirds of it, a triplet span. Two onsets that land on one grid point keep both notes when the
  earlier can move back a step, else the higher note stays.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

UNITS = 24  # time units a quarter note: sixteenths (6), their triplets (4), 32nds (3)
UNIT_LENGTH = 12  # L:1/8 in units
TRIPLET_TOLERANCE = 1 / 16  # of a span: how far from a third of it a triplet onset may lie


class Note(NamedTuple):  # a tuple: many thousands are made per file
    start: int  # ticks of the file, or units after quantising
    end: int
    pitch: int
    velocity: int


def _snap(value: float, step: int) -> int:
    return step * math.floor(value / step + 0.5)


def quantise(melody: list[Note], ticks_per_beat: int, grid: int) -> tuple[list[Note], list]:
    """Notes in units (UNITS a quarter note) on the grid, and the triplet spans as (start, end).

    A span is two grid steps (an eighth for sixteenths). It is a triplet span when every onset in
    it sits on a third of it (within TRIPLET_TOLERANCE of a span) and one of them is off the grid.
    """
    step = UNITS // grid
    span = 2 * step
    scale = UNITS / ticks_per_beat
    triplets = _triplet_spans([note.start * scale for note in melody], step)
    notes = _fit_ends(_place(melody, scale, step, triplets), step, span, triplets)
    used = {
        edge // span
        for note in notes
        for edge in (note.start, note.end)
        if edge % step and edge // span in triplets
    }
    return notes, [(index * span, (index + 1) * span) for index in sorted(used)]


def _triplet_spans(onsets: list[float], step: int) -> set[int]:
    span = 2 * step
    tolerance = TRIPLET_TOLERANCE * span
    fits: dict[int, list[bool]] = defaultdict(lambda: [True, False])  # [all on thirds, any off]
    for onset in onsets:
        fit = fits[int(onset // span)]
        fit[0] = fit[0] and abs(onset - _snap(onset, span // 3)) <= tolerance
        fit[1] = fit[1] or abs(onset - _snap(onset, step)) > tolerance
    return {index for index, (on_thirds, off_grid) in fits.items() if on_thirds and off_grid}


def _place(melody: list[Note], scale: float, step: int, triplets: set[int]) -> list[Note]:
    """Notes with start and end on the grid (in units). When two onsets land on one grid point,
    both notes stay if they were over a third of a step apart and the earlier can move back one
    grid point; otherwise the one `stays` picks."""
    span = 2 * step

    def grid_step(window: int) -> int:
        return span // 3 if window in triplets else step

    def place(value: float) -> int:
        return _snap(value, grid_step(int(value // span)))

    notes: list[Note] = []
    onsets: list[float] = []  # before placing, of the notes kept
    kept: list[Note] = []  # as read, of the notes kept
    for note in melody:
        onset = note.start * scale
        start, end = place(onset), place(note.end * scale)
        if notes and start <= notes[-1].start:
            earlier = notes[-1]
            back = earlier.start - grid_step((earlier.start - 1) // span)
            earliest = notes[-2].start + 1 if len(notes) > 1 else 0
            if onset - onsets[-1] > step / 3 and back >= earliest:
                notes[-1] = Note(back, earlier.end, earlier.pitch, earlier.velocity)
            else:
                if stays(note, kept[-1]):
                    notes[-1] = Note(earlier.start, end, note.pitch, note.velocity)
                    onsets[-1], kept[-1] = onset, note
                continue
        notes.append(Note(start, end, note.pitch, note.velocity))
        onsets.append(onset)
        kept.append(note)
    return notes


def stays(note: Note, other: Note) -> bool:
    """Of two notes starting together, whether `note` is the one kept rather than `other`: the
    longer if it lasts over twice as long (a grace note gives way to the note it ornaments), else
    the higher (the top of a chord)."""
    length, other_length = note.end - note.start, other.end - other.start
    if length > 2 * other_length or other_length > 2 * length:
        return length > other_length
    return note.pitch > other.pitch


def _fit_ends(notes: list[Note], step: int, span: int, triplets: set) -> list[Note]:
    """Each note lasts at least one step of its span's grid and ends by the next onset."""
    fitted = []
    for note, after in zip(notes, [*notes[1:], None]):
        shortest = span // 3 if note.start // span in triplets else step
        end = max(note.end, note.start + shortest)
        if after is not None:
            end = min(end, after.start)
        fitted.append(Note(note.start, end, note.pitch, note.velocity))
    return fitted
