"""MIDI file -> ABC tune: MIDI melodies join the corpus as ABC text in the same vocabulary.

`midi_to_tune(path)` reads a standard MIDI file (type 0 or 1) with mido, picks its melody, quantises
it to a grid, writes it as ABC and returns an `abc.Tune` normalised by `abc.parse_tune`, exactly as
tunes read from `.abc` files are. It never imports `render.py`: MIDI in and MIDI out stay apart
(the spelling tables it writes with are `theory`'s, which the ABC reader uses too).
music21 is not used: reading a melody file takes a few milliseconds this way.

The melody rule:

1. Notes on MIDI channel 10 (General MIDI drums) are dropped. A *part* is one track's notes on one
   channel.
2. A part is *single-line* when at most 10% of its onsets start two or more notes together (notes
   starting within 1/32 of a quarter note of the first count as together: a strummed or
   humanised chord). The candidates are the single-line parts, or every part when none is.
3. The melody is the candidate with the most onsets, unless candidates with at least 80% as many
   onsets sound higher (higher mean pitch): then the highest of those. A tune line beats an
   accompaniment that is as busy but lower; a bass line loses to the tune above it.
4. Its top voice is kept: at each onset the highest note starting there, held until it ends or
   the next onset comes, so chords become their top note and overlapping notes are cut. In a
   single-line part, a note at least twice as short as one starting with it (or landing on the
   same grid point) is a grace note and gives way to the note it ornaments.

Time, meter and key:

- Times are read in ticks of the file, so tempo changes never move notes on the grid. Onsets and
  ends are quantised to a grid, sixteenths by default (`grid` steps a quarter note: 2, 4 or 8).
  Each span of two grid steps (an eighth note for sixteenths) is straight or, when its onsets sit
  on thirds of it, a triplet span; triplet spans are written as ABC tuplets (`(3`, or `(3:2:n` for n
  notes), grouped within a beat and a quarter note. Two onsets that land on one grid point keep
  both notes when the earlier can move back a step, else the higher note stays.
- M: from the file's first time signature; without one, the meter (2/4, 3/4, 4/4, 6/8, 9/8 or
  12/8) whose strong beats best carry the long and loud notes. Where bar lines fall is inferred the
  same way (long, loud notes on downbeats, few notes tied over bar lines, the last note ending a
  bar), so a tune that starts with an upbeat gets a pickup bar. Later meter changes are not
  followed: the bars keep the first meter.
- K: the key signature's sharps or flats (without one: the signature that leaves the fewest notes
  outside the scale); the notes then choose the tonic and mode among major, minor, Dorian and
  Mixolydian (the last note, the time spent on each note, and the tonic the file names).
- Q: from the first tempo event (1/4=120 without one); L:1/8 always; T: the sequence name (track
  1's name), else the melody track's name, else the file name; X:1.
- Notes that cross a bar line or a triplet span are tied; silences become rests. Notes are spelled
  from the key signature (chromatic notes by the nearest spelling on the line of fifths). Every
  note off the key signature carries its accidental, even when an earlier one in the bar would
  carry over (music21 does not carry accidentals through a bar), and a note of the key signature
  after an accidental on its letter in the bar gets `^`, `_` or `=` as ABC needs, in any octave
  (abc2midi applies a bar's accidental to every octave, ABC 2.1 to one).

Dropped: other parts, the notes under the top voice, velocities, instruments, controllers, pitch
bends, lyrics and text, tempo changes after the first.

Errors: every problem is a `ParseError` with one of these reasons, and nothing else escapes:

    unreadable          the file cannot be opened
    midi-too-large      over MAX_FILE_BYTES, or over MAX_NOTES notes
    midi-too-long       the melody lasts over MAX_QUARTERS quarter notes
    midi-truncated      the file ends in the middle of a chunk or an event
    midi-corrupt        not a MIDI file, or a chunk or event mido cannot read
    midi-type-2         type 2: independent patterns, not one piece
    midi-smpte          SMPTE time division (frames), not beats
    midi-bad-tempo      a tempo outside MIN_QPM-MAX_QPM quarter notes a minute
    midi-no-notes       no notes at all
    midi-drums-only     notes only on the drum channel
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import mido

from musicgen import theory
from musicgen.abc import Tune, parse_tune
from musicgen.errors import ParseError, first_line

MIDI_SUFFIXES = (".mid", ".midi")
MIDI_REASONS = frozenset(
    {
        "midi-too-large", "midi-truncated", "midi-corrupt", "midi-type-2", "midi-smpte",
        "midi-bad-tempo", "midi-no-notes", "midi-drums-only", "midi-too-long",
    }
)  # fmt: skip
MAX_FILE_BYTES = 1 << 20  # a melody file is a few kB; an orchestral score rarely 1 MB
MAX_NOTES = 20_000
MAX_QUARTERS = 4000  # from the melody's first onset to its last release: 1,000 bars of 4/4
MIN_QPM, MAX_QPM = 10.0, 1000.0
DEFAULT_GRID = 4  # steps a quarter note: sixteenths
GRIDS = (2, 4, 8)
DRUM_CHANNEL = 9  # channel 10 counted from one

UNITS = 24  # time units a quarter note: sixteenths (6), their triplets (4), 32nds (3)
UNIT_LENGTH = 12  # L:1/8 in units
SINGLE_LINE_CHORDS = 0.1  # share of onsets with chords a single-line part may have
TRIPLET_TOLERANCE = 1 / 16  # of a span: how far from a third of it a triplet onset may lie
BUSY_ENOUGH = 0.8  # share of the busiest part's onsets a higher part needs to win
METERS = ((4, 4), (2, 4), (3, 4), (6, 8), (9, 8), (12, 8))  # tried when the file has none
MODES = {"ion": "", "mix": "mix", "dor": "dor", "aeo": "m"}  # the modes tried, as K: writes them
_GENERIC_NAME = re.compile(r"(track|untitled|sequence|staff|part|midi)?\s*\d*", re.IGNORECASE)


class _Note(NamedTuple):  # a tuple: many thousands are made per file
    start: int  # ticks of the file, or units after quantising
    end: int
    pitch: int
    velocity: int


@dataclass
class _Content:
    """What the converter reads from a MIDI file."""

    ticks_per_beat: int
    parts: dict[tuple[int, int], list[_Note]] = field(default_factory=dict)  # (track, channel)
    drum_notes: int = 0
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, microseconds a beat)
    meters: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, numerator, denom.)
    keys: list[tuple[int, str]] = field(default_factory=list)  # (tick, mido key name)
    track_names: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Meter:
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


# ------------------------------------------------------------------------------------------------
# Public API


def midi_to_tune(path: str | Path, source: str | None = None, grid: int = DEFAULT_GRID) -> Tune:
    """Converts a MIDI file's melody into a normalised ABC tune.

    Args:
        path: a `.mid` file (type 0 or 1).
        source: provenance label; default the path. The tune's source is this plus "#track:N", the
            track (counted from 1) the melody came from.
        grid: quantisation steps a quarter note: 2 (eighths), 4 (sixteenths) or 8 (32nds).

    Returns:
        The tune, as `abc.parse_tune` normalises it.

    Raises:
        ParseError: the file is unusable; `reason` is one of MIDI_REASONS or "unreadable".
    """
    path = Path(path)
    label = str(path) if source is None else source
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParseError(
                f"{label}: MIDI file too large ({size:,} bytes, at most {MAX_FILE_BYTES:,}); "
                "pass a melody file or a smaller excerpt",
                "midi-too-large",
            )
        data = path.read_bytes()
    except OSError as error:
        raise ParseError(
            f"{label}: cannot read the file ({error.strerror}); check it exists and is readable",
            "unreadable",
        ) from error
    return midi_bytes_to_tune(data, path.stem, label, grid)


def midi_bytes_to_tune(data: bytes, name: str, source: str, grid: int = DEFAULT_GRID) -> Tune:
    """Converts the bytes of a MIDI file into a normalised ABC tune (see `midi_to_tune`).

    Args:
        data: the whole file.
        name: the title to use when the file names no track (usually the file's stem).
        source: provenance label, used in error messages too.
        grid: quantisation steps a quarter note (2, 4 or 8).

    Raises:
        ParseError: the file is unusable; `reason` is one of MIDI_REASONS.
        ValueError: `grid` is not one of GRIDS.
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, not {grid}")
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(
            f"{source}: MIDI file too large ({len(data):,} bytes, at most {MAX_FILE_BYTES:,}); "
            "pass a melody file or a smaller excerpt",
            "midi-too-large",
        )
    content = _collect(_parse(data, source), source)
    track, melody = _pick_melody(content, source)
    quarters = (melody[-1].end - melody[0].start) / content.ticks_per_beat
    if quarters > MAX_QUARTERS:
        raise ParseError(
            f"{source}: the melody lasts {quarters:,.0f} quarter notes (at most {MAX_QUARTERS:,}); "
            "pass a tune, or cut the file into tunes",
            "midi-too-long",
        )
    notes, spans = _quantise(melody, content.ticks_per_beat, grid)
    meter = _file_meter(content) or _infer_meter(notes)
    phase = _bar_phase(notes, meter, prefer_zero=bool(content.meters))
    fifths, mode = _choose_key(notes, _file_key(content))
    header = _header(_title(content, track, name), meter, _qpm(content), fifths, mode)
    body = _body(notes, spans, meter, phase, fifths, UNITS // grid)
    return parse_tune("\n".join(header + body) + "\n", f"{source}#track:{track + 1}")


def _title(content: _Content, track: int, name: str) -> str:
    """The sequence name, else the melody track's name, else `name`; generic names skipped."""
    for candidate in (content.track_names.get(0), content.track_names.get(track), name):
        # `%` would start an ABC comment and `\` an escape: neither belongs in a title.
        kept = (c for c in candidate or "" if c.isprintable() and c not in "%\\")
        text = " ".join("".join(kept).split())[:80]
        if text and not _GENERIC_NAME.fullmatch(text):
            return text
    return name


def _qpm(content: _Content) -> int:
    """Quarter notes a minute of the first tempo event (120 without one)."""
    if not content.tempos:
        return 120
    return max(1, round(60_000_000 / min(content.tempos)[1]))


# ------------------------------------------------------------------------------------------------
# Reading


def _parse(data: bytes, source: str) -> mido.MidiFile:
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except EOFError:
        raise ParseError(
            f"{source}: MIDI file is truncated (it ends inside a chunk); export or download it "
            "again",
            "midi-truncated",
        ) from None
    # mido reports a damaged file with whatever its reader tripped on (OSError, ValueError,
    # KeyError, IndexError, its KeySignatureError...): all of them mean "not a readable MIDI file".
    except Exception as error:  # noqa: BLE001
        raise ParseError(
            f"{source}: not a readable MIDI file ({_short_first_line(error)}); re-export it as a "
            "standard MIDI file",
            "midi-corrupt",
        ) from None
    if midi.type == 2:
        raise ParseError(
            f"{source}: type-2 MIDI file (independent patterns, not one piece); export it as "
            "type 0 or 1",
            "midi-type-2",
        )
    if midi.ticks_per_beat == 0:
        raise ParseError(
            f"{source}: the MIDI header gives 0 ticks per beat, so no note has a time; re-export "
            "it as a standard MIDI file",
            "midi-corrupt",
        )
    if midi.ticks_per_beat < 0:
        raise ParseError(
            f"{source}: MIDI file counts time in SMPTE frames, not beats; export it with beats "
            "(ticks per quarter note)",
            "midi-smpte",
        )
    return midi


def _collect(midi: mido.MidiFile, source: str) -> _Content:
    """Every note by (track, channel) in absolute ticks, and the meta events we use."""
    content = _Content(midi.ticks_per_beat)
    total = 0
    for index, track in enumerate(midi.tracks):
        now = 0
        sounding: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for message in track:
            now += message.time
            kind = message.type
            if kind == "note_on" and message.velocity > 0:
                sounding[(message.channel, message.note)].append((now, message.velocity))
            elif kind in ("note_on", "note_off"):
                started = sounding.get((message.channel, message.note))
                if started:
                    start, velocity = started.pop(0)
                    total += _add_note(content, index, message.channel, start, now, message.note,
                                       velocity)  # fmt: skip
            elif message.is_meta:
                _read_meta(content, message, now, index, source)
            if total > MAX_NOTES:
                raise ParseError(
                    f"{source}: more than {MAX_NOTES:,} notes; pass a melody file", "midi-too-large"
                )
        for (channel, pitch), started in sounding.items():  # never released: end with the track
            for start, velocity in started:
                total += _add_note(content, index, channel, start, now, pitch, velocity)
    return content


def _add_note(content: _Content, track, channel, start, end, pitch, velocity) -> int:
    if channel == DRUM_CHANNEL:
        content.drum_notes += 1
    elif end > start:
        content.parts.setdefault((track, channel), []).append(_Note(start, end, pitch, velocity))
    return 1


def _read_meta(content: _Content, message, now: int, track: int, source: str) -> None:
    kind = message.type
    if kind == "set_tempo":
        qpm = 60_000_000 / message.tempo if message.tempo > 0 else math.inf
        if not MIN_QPM <= qpm <= MAX_QPM:
            raise ParseError(
                f"{source}: absurd tempo ({qpm:.4g} quarter notes a minute at tick {now}; "
                f"{MIN_QPM:g}-{MAX_QPM:g} expected); fix the tempo in a MIDI editor",
                "midi-bad-tempo",
            )
        content.tempos.append((now, message.tempo))
    elif kind == "time_signature":
        content.meters.append((now, message.numerator, message.denominator))
    elif kind == "key_signature":
        content.keys.append((now, message.key))
    elif kind == "track_name" and track not in content.track_names:
        content.track_names[track] = message.name


# ------------------------------------------------------------------------------------------------
# Melody


def _pick_melody(content: _Content, source: str) -> tuple[int, list[_Note]]:
    """(track index, the top voice of the melody part), by the rule in the module docstring."""
    if not content.parts:
        if content.drum_notes:
            raise ParseError(
                f"{source}: only drum notes (channel 10), no melody; pass a file with a tune",
                "midi-drums-only",
            )
        raise ParseError(f"{source}: no notes in the MIDI file; pass a file with a tune",
                         "midi-no-notes")  # fmt: skip
    # Notes a few ticks apart (a strummed or humanised chord, abc2midi's chords) start together.
    tolerance = max(content.ticks_per_beat // 32, 1)
    parts = {key: _together(notes, tolerance) for key, notes in content.parts.items()}
    stats = {key: _part_stats(notes) for key, notes in parts.items()}
    single = [key for key, (_, chords, _) in stats.items() if chords <= SINGLE_LINE_CHORDS]
    candidates = single or list(stats)
    busiest = max(stats[key][0] for key in candidates)
    busy = [key for key in candidates if stats[key][0] >= BUSY_ENOUGH * busiest]
    # Highest mean pitch among the busy ones; the busiest first, then file order, on ties.
    best = max(busy, key=lambda key: (stats[key][2], stats[key][0], [-k for k in key]))
    return best[0], _top_voice(parts[best], single_line=bool(single))


def _together(notes: list[_Note], tolerance: int) -> list[_Note]:
    """The notes by start, each starting with the first note at most `tolerance` ticks before."""
    together, first = [], None
    for note in sorted(notes, key=lambda note: (note.start, note.pitch)):
        if first is None or note.start - first > tolerance:
            first = note.start
        together.append(_Note(first, max(note.end, first + 1), note.pitch, note.velocity))
    return together


def _part_stats(notes: list[_Note]) -> tuple[int, float, float]:
    """(onsets, share of onsets starting two or more notes, mean pitch)."""
    per_onset = Counter(note.start for note in notes)
    chords = sum(1 for count in per_onset.values() if count > 1)
    return len(per_onset), chords / len(per_onset), sum(n.pitch for n in notes) / len(notes)


def _top_voice(notes: list[_Note], single_line: bool) -> list[_Note]:
    """One note per onset, cut at the next onset: the highest, or in a single-line part the one
    `_stays` picks (there two notes start together only when one ornaments the other)."""
    by_start: dict[int, _Note] = {}
    for note in notes:
        kept = by_start.get(note.start)
        if kept is None or (_stays(note, kept) if single_line else note.pitch > kept.pitch):
            by_start[note.start] = note
    ordered = [by_start[start] for start in sorted(by_start)]
    return [
        _Note(note.start, min(note.end, after.start), note.pitch, note.velocity)
        for note, after in zip(ordered, [*ordered[1:], _Note(2**62, 2**62, 0, 0)])
    ]


# ------------------------------------------------------------------------------------------------
# Quantising


def _snap(value: float, step: int) -> int:
    return step * math.floor(value / step + 0.5)


def _quantise(melody: list[_Note], ticks_per_beat: int, grid: int) -> tuple[list[_Note], list]:
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


def _place(melody: list[_Note], scale: float, step: int, triplets: set[int]) -> list[_Note]:
    """Notes with start and end on the grid (in units). When two onsets land on one grid point,
    both notes stay if they were over a third of a step apart and the earlier can move back one
    grid point; otherwise the one `_stays` picks."""
    span = 2 * step

    def grid_step(window: int) -> int:
        return span // 3 if window in triplets else step

    def place(value: float) -> int:
        return _snap(value, grid_step(int(value // span)))

    notes: list[_Note] = []
    onsets: list[float] = []  # before placing, of the notes kept
    kept: list[_Note] = []  # as read, of the notes kept
    for note in melody:
        onset = note.start * scale
        start, end = place(onset), place(note.end * scale)
        if notes and start <= notes[-1].start:
            earlier = notes[-1]
            back = earlier.start - grid_step((earlier.start - 1) // span)
            earliest = notes[-2].start + 1 if len(notes) > 1 else 0
            if onset - onsets[-1] > step / 3 and back >= earliest:
                notes[-1] = _Note(back, earlier.end, earlier.pitch, earlier.velocity)
            else:
                if _stays(note, kept[-1]):
                    notes[-1] = _Note(earlier.start, end, note.pitch, note.velocity)
                    onsets[-1], kept[-1] = onset, note
                continue
        notes.append(_Note(start, end, note.pitch, note.velocity))
        onsets.append(onset)
        kept.append(note)
    return notes


def _stays(note: _Note, other: _Note) -> bool:
    """Of two notes starting together, whether `note` is the one kept rather than `other`: the
    longer if it lasts over twice as long (a grace note gives way to the note it ornaments), else
    the higher (the top of a chord)."""
    length, other_length = note.end - note.start, other.end - other.start
    if length > 2 * other_length or other_length > 2 * length:
        return length > other_length
    return note.pitch > other.pitch


def _fit_ends(notes: list[_Note], step: int, span: int, triplets: set) -> list[_Note]:
    """Each note lasts at least one step of its span's grid and ends by the next onset."""
    fitted = []
    for note, after in zip(notes, [*notes[1:], None]):
        shortest = span // 3 if note.start // span in triplets else step
        end = max(note.end, note.start + shortest)
        if after is not None:
            end = min(end, after.start)
        fitted.append(_Note(note.start, end, note.pitch, note.velocity))
    return fitted


# ------------------------------------------------------------------------------------------------
# Meter, bar lines, key


def _file_meter(content: _Content) -> _Meter | None:
    """The first time signature, if it is one we can write bars for."""
    if not content.meters:
        return None
    _, numerator, denominator = min(content.meters)
    if not 1 <= numerator <= 32 or denominator not in (1, 2, 4, 8, 16, 32):
        return None
    meter = _Meter(numerator, denominator)
    return meter if meter.bar <= 16 * UNITS else None


def _salience(notes: list[_Note]) -> list[float]:
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
def _weights(meter: _Meter) -> tuple[float, ...]:
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


def _phase_scores(notes, salience, meter: _Meter) -> list[tuple[float, int]]:
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


def _bar_phase(notes: list[_Note], meter: _Meter, prefer_zero: bool) -> int:
    """Where bar lines fall (units from the file's start, modulo a bar)."""
    scores = _phase_scores(notes, _salience(notes), meter)
    if prefer_zero:  # the file's own bar lines win a near tie
        scores[0] = (scores[0][0] + 0.02 * abs(scores[0][0]) + 0.5, 0)
    return max(scores, key=lambda item: (item[0], -item[1]))[1]


def _infer_meter(notes: list[_Note]) -> _Meter:
    """The candidate meter whose weights (scaled to the same mean) best fit the notes."""
    salience = _salience(notes)
    total = sum(salience)
    best: tuple | None = None
    for order, (numerator, denominator) in enumerate(METERS):
        meter = _Meter(numerator, denominator)
        weights = _weights(meter)
        mean = sum(weights) / len(weights)
        fit = max(score for score, _ in _phase_scores(notes, salience, meter)) / (mean * total)
        candidate = (round(fit, 2), -order)  # within 0.01, the one METERS lists first
        if best is None or candidate > best[0]:
            best = (candidate, meter)
    return best[1]


def _file_key(content: _Content) -> tuple[int, int] | None:
    """(fifths, tonic pitch class) of the first key signature."""
    if not content.keys:
        return None
    found = theory.MIDI_KEYS.get(min(content.keys)[1])
    if found is None:
        return None
    fifths, minor = found
    return fifths, theory.pitch_class(fifths + 3 * minor)


@lru_cache(maxsize=32)
def _scale(fifths: int) -> frozenset[int]:
    return theory.scale(theory.key_signature(fifths))


def _tonic_offset(mode: str) -> int:
    """Fifths from a signature to the tonic of its mode: 0 major, 1 Mixolydian, 3 minor."""
    return -theory.MODE_FIFTHS[mode]


def _choose_key(notes: list[_Note], file_key: tuple[int, int] | None) -> tuple[int, str]:
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
            offset = _tonic_offset(mode)
            tonic = theory.pitch_class(fifths + offset)
            score = 2.0 * weight[tonic] / total + 0.5 * weight[(tonic + 7) % 12] / total
            score += 2.0 * (tonic == last) - outside[fifths] - 0.05 * offset - 0.01 * abs(fifths)
            if file_key is not None and file_key[1] == tonic:
                score += 0.6
            if best is None or score > best[0]:
                best = (score, fifths, mode)
    return best[1], best[2]


# ------------------------------------------------------------------------------------------------
# Spelling


def _key_text(fifths: int, mode: str) -> str:
    return theory.note_name(*theory.spelling(fifths + _tonic_offset(mode))) + MODES[mode]


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


def _pieces(notes: list[_Note], cuts: list[int]) -> list[_Piece]:
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


def _header(title: str, meter: _Meter, qpm: int, fifths: int, mode: str) -> list[str]:
    return [
        "X:1",
        f"T:{title}",
        f"M:{meter.numerator}/{meter.denominator}",
        "L:1/8",
        f"Q:1/4={qpm}",
        f"K:{_key_text(fifths, mode)}",
    ]


def _body(notes: list[_Note], spans: list, meter: _Meter, phase: int, fifths: int, step: int):
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

    def __init__(self, fifths: int, meter: _Meter, phase: int, groups: list, step: int):
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


def _short_first_line(error: Exception) -> str:
    return first_line(error)[:80]
