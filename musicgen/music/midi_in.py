"""MIDI file -> ABC tune: MIDI melodies join the corpus as ABC text in the same vocabulary.

`midi_to_tune(path)` reads a standard MIDI file (type 0 or 1) with mido, picks its melody, quantises
it to a grid, writes it as ABC and returns an `abc.Tune` normalised by `abc.parse_tune`, exactly as
tunes read from `.abc` files are. This module reads the file and picks the melody; `midi_grid`
quantises it, `midi_meter` finds its meter, bar lines and key, and `midi_abc` writes the ABC. None
of them imports `render.py`: MIDI in and MIDI out stay apart.
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

Two header fields are chosen here (`midi_meter` chooses M: and K:, `midi_abc` writes the header):

- Q: from the first tempo event (1/4=120 without one); T: the sequence name (track 1's name), else
  the melody track's name, else the file name.

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
from pathlib import Path

import mido

from musicgen.errors import ParseError, first_line
from musicgen.music.abc import Tune, parse_tune
from musicgen.music.midi_abc import body_lines, header_lines
from musicgen.music.midi_grid import UNITS, Note, quantise, stays
from musicgen.music.midi_meter import bar_phase, choose_key, first_key, first_meter, infer_meter

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

SINGLE_LINE_CHORDS = 0.1  # share of onsets with chords a single-line part may have
BUSY_ENOUGH = 0.8  # share of the busiest part's onsets a higher part needs to win
_GENERIC_NAME = re.compile(r"(track|untitled|sequence|staff|part|midi)?\s*\d*", re.IGNORECASE)


@dataclass
class _Content:
    """What the converter reads from a MIDI file."""

    ticks_per_beat: int
    parts: dict[tuple[int, int], list[Note]] = field(default_factory=dict)  # (track, channel)
    drum_notes: int = 0
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, microseconds a beat)
    meters: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, numerator, denom.)
    keys: list[tuple[int, str]] = field(default_factory=list)  # (tick, mido key name)
    track_names: dict[int, str] = field(default_factory=dict)


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
    notes, spans = quantise(melody, content.ticks_per_beat, grid)
    meter = first_meter(content.meters) or infer_meter(notes)
    phase = bar_phase(notes, meter, prefer_zero=bool(content.meters))
    fifths, mode = choose_key(notes, first_key(content.keys))
    header = header_lines(_title(content, track, name), meter, _qpm(content), fifths, mode)
    body = body_lines(notes, spans, meter, phase, fifths, UNITS // grid)
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
        content.parts.setdefault((track, channel), []).append(Note(start, end, pitch, velocity))
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


def _pick_melody(content: _Content, source: str) -> tuple[int, list[Note]]:
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


def _together(notes: list[Note], tolerance: int) -> list[Note]:
    """The notes by start, each starting with the first note at most `tolerance` ticks before."""
    together, first = [], None
    for note in sorted(notes, key=lambda note: (note.start, note.pitch)):
        if first is None or note.start - first > tolerance:
            first = note.start
        together.append(Note(first, max(note.end, first + 1), note.pitch, note.velocity))
    return together


def _part_stats(notes: list[Note]) -> tuple[int, float, float]:
    """(onsets, share of onsets starting two or more notes, mean pitch)."""
    per_onset = Counter(note.start for note in notes)
    chords = sum(1 for count in per_onset.values() if count > 1)
    return len(per_onset), chords / len(per_onset), sum(n.pitch for n in notes) / len(notes)


def _top_voice(notes: list[Note], single_line: bool) -> list[Note]:
    """One note per onset, cut at the next onset: the highest, or in a single-line part the one
    `stays` picks (there two notes start together only when one ornaments the other)."""
    by_start: dict[int, Note] = {}
    for note in notes:
        kept = by_start.get(note.start)
        if kept is None or (stays(note, kept) if single_line else note.pitch > kept.pitch):
            by_start[note.start] = note
    ordered = [by_start[start] for start in sorted(by_start)]
    return [
        Note(note.start, min(note.end, after.start), note.pitch, note.velocity)
        for note, after in zip(ordered, [*ordered[1:], Note(2**62, 2**62, 0, 0)])
    ]


def _short_first_line(error: Exception) -> str:
    return first_line(error)[:80]
