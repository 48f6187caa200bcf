"""The ABC text of a quantised MIDI melody, once `midi_meter` has found its meter and key.

Like `midi_in`, it never imports `render.py`: the spelling tables it writes with are `theory`'s,
which the ABC reader uses too.

- The header: X:1, T:, M:, L:1/8 always, Q: and K: (tonic and mode).
- Triplet spans are written as ABC tuplets (`(3`, or `(3:2:n` for n notes), grouped within a beat
  and a quarter note.
- Notes that cross a bar line or a triplet span are tied; silences become rests. Notes are spelled
  from the key signature (chromatic notes by the nearest spelling on the line of fifths). Every
  note off the key signature carries its accidental, even when an earlier one in the bar would
  carry over (music21 does not carry accidentals through a bar), and a note of the key signature
  after an accidental on its letter in the bar gets `^`, `_` or `=` as ABC needs, in any octave
  (abc2midi applies a bar's accidental to every octave, ABC 2.1 to one).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from musicgen.music import theory
from musicgen.music.midi_grid import UNIT_LENGTH, UNITS, Note
from musicgen.music.midi_meter import MODES, Meter, tonic_offset

# ------------------------------------------------------------------------------------------------
# Spelling


def _key_text(fifths: int, mode: str) -> str:
    return theory.note_name(*theory.spelling(fifths + tonic_offset(mode))) + MODES[mode]


@lru_cache(maxsize=512)
def _spelling(pitch_class: int, fifths: int) -> tuple[str, int]:
    """(letter, semitones) for a pitch class in a key: the spelling nearest the key's scale on the
    line of fifths, sharps winning a tie (so C major has Bb, Eb, F#, C#, G#)."""
    low, high = fifths - 1, fifths + 5
    position = min(
        (p for p in range(low - 12, high + 13) if theory.pitch_class(p) == pitch_class),
        key=lambda p: (max(low - p, p - high, 0), -p),
    )
    return theory.spelling(position)


def _note_name(pitch: int, letter: str, alter: int) -> tuple[str, int]:
    """(letter with octave marks, octave) where octave 0 is ABC's C-B from middle C."""
    octave = (pitch - alter - theory.STEPS[letter]) // 12 - 5
    return theory.abc_note(letter, octave), octave


@lru_cache(maxsize=256)
def _length_text(units: int) -> str:
    """ABC length suffix for `units` at L:1/8: "", "2", "/", "3/2", "/4"..."""
    length = Fraction(units, UNIT_LENGTH)
    if length == 1:
        return ""
    if length.denominator == 1:
        return str(length.numerator)
    if length.numerator == 1:
        return "/" if length.denominator == 2 else f"/{length.denominator}"
    return f"{length.numerator}/{length.denominator}"


# ------------------------------------------------------------------------------------------------
# Writing


@dataclass
class _Piece:
    """A note or rest between two cuts (bar lines, triplet groups)."""

    start: int
    end: int
    pitch: int | None  # None for a rest
    tied: bool = False  # tied to the next piece


def _pieces(notes: list[Note], cuts: list[int]) -> list[_Piece]:
    """Notes and the rests between them, cut at the sorted points `cuts` (ties join the parts)."""
    events: list[_Piece] = []
    for note, after in zip(notes, [*notes[1:], None]):
        events.append(_Piece(note.start, note.end, note.pitch))
        if after is not None and after.start > note.end:
            events.append(_Piece(note.end, after.start, None))
    pieces: list[_Piece] = []
    index = 0
    for event in events:
        while index < len(cuts) and cuts[index] <= event.start:
            index += 1
        start = event.start
        while index < len(cuts) and cuts[index] < event.end:
            pieces.append(_Piece(start, cuts[index], event.pitch, event.pitch is not None))
            start = cuts[index]
            index += 1
        pieces.append(_Piece(start, event.end, event.pitch))
    return pieces


def _groups(spans: list, first: int, last: int, beat: int, phase: int) -> list[list[int]]:
    """[start, end] of each tuplet group: adjacent triplet spans within one beat and one quarter
    note (so a group holds at most 12 notes, well within what readers take)."""
    groups: list[list[int]] = []
    for low, high in spans:
        low, high = max(low, first), min(high, last)
        if low >= high:
            continue
        if groups and groups[-1][1] == low and (low - phase) % beat and (low - phase) % UNITS:
            groups[-1][1] = high
        else:
            groups.append([low, high])
    return groups


def header_lines(title: str, meter: Meter, qpm: int, fifths: int, mode: str) -> list[str]:
    return [
        "X:1",
        f"T:{title}",
        f"M:{meter.numerator}/{meter.denominator}",
        "L:1/8",
        f"Q:1/4={qpm}",
        f"K:{_key_text(fifths, mode)}",
    ]


def body_lines(notes: list[Note], spans: list, meter: Meter, phase: int, fifths: int, step: int):
    """The body lines: bars from the first onset to the last release, a pickup bar if need be."""
    first, last, bar = notes[0].start, notes[-1].end, meter.bar
    bar_lines = list(range(first + ((phase - first) % bar or bar), last, bar))
    groups = _groups(spans, first, last, meter.beat, phase)
    cuts = sorted({*bar_lines, *(edge for group in groups for edge in group)})
    writer = _BodyWriter(fifths, meter, phase, groups, step)
    return writer.write(_pieces(notes, cuts), bar_lines)


class _BodyWriter:
    """Writes pieces as ABC bars: accidentals, octave marks, lengths, ties, tuplets, bar lines."""

    BARS_A_LINE = 4

    def __init__(self, fifths: int, meter: Meter, phase: int, groups: list, step: int):
        self.fifths = fifths
        self.signature = theory.key_signature(fifths)
        self.bar = meter.bar
        self.beat = meter.beat
        self.phase = phase
        self.groups = {group[0]: group[1] for group in groups}
        self.step = step
        self.marks: dict[tuple[str, int], int] = {}  # (letter, octave) -> semitones, this bar
        self.letter_marks: dict[str, int] = {}  # letter -> semitones: readers marking all octaves

    def write(self, pieces: list[_Piece], bar_lines: list[int]) -> list[str]:
        bars: list[list[_Piece]] = [[] for _ in range(len(bar_lines) + 1)]
        index = 0
        for piece in pieces:
            while index < len(bar_lines) and piece.start >= bar_lines[index]:
                index += 1
            bars[index].append(piece)
        pickup = bool(bar_lines) and bar_lines[0] - pieces[0].start < self.bar
        lines, line = [], []
        for number, bar in enumerate(bars):
            line.append(self.bar_text(bar))
            full = number + (0 if pickup else 1)
            if full and full % self.BARS_A_LINE == 0 and number < len(bars) - 1:
                lines.append("|".join(line) + "|")
                line = []
        lines.append("|".join(line) + "|]")
        return lines

    def bar_text(self, pieces: list[_Piece]) -> str:
        self.marks, self.letter_marks = {}, {}
        tokens: list[str] = []
        index = 0
        while index < len(pieces):
            piece = pieces[index]
            if tokens and (piece.start - self.phase) % self.beat == 0:
                tokens.append(" ")
            end = self.groups.get(piece.start)
            if end is None:
                tokens.append(self.piece_text(piece, piece.end - piece.start))
                index += 1
                continue
            group = [p for p in pieces[index:] if p.end <= end]
            tokens.append(self.group_text(group))
            index += len(group)
        return "".join(tokens)

    def group_text(self, group: list[_Piece]) -> str:
        """A tuplet group; as plain notes when all its pieces sit on the straight grid."""
        if all(p.start % self.step == 0 and p.end % self.step == 0 for p in group):
            return "".join(self.piece_text(p, p.end - p.start) for p in group)
        written = "".join(self.piece_text(p, (p.end - p.start) * 3 // 2) for p in group)
        prefix = "(3" if len(group) == 3 else f"(3:2:{len(group)}"
        return prefix + written

    def piece_text(self, piece: _Piece, units: int) -> str:
        length = _length_text(units)
        if piece.pitch is None:
            return "z" + length
        letter, alter = _spelling(piece.pitch % 12, self.fifths)
        name, octave = _note_name(piece.pitch, letter, alter)
        default = self.signature[letter]
        mark = ""
        if (
            alter != default
            or self.marks.get((letter, octave), default) != alter
            or self.letter_marks.get(letter, default) != alter
        ):
            mark = theory.ACCIDENTAL_MARKS[alter]
            self.marks[(letter, octave)] = alter
            self.letter_marks[letter] = alter
        return mark + name + length + ("-" if piece.tied else "")
