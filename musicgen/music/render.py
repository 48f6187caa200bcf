"""ABC -> MIDI: plays a tune read by `abc_reader` (parts, repeats, velocities, times in seconds)
and writes it as a MIDI file; and the validity check.

This module is the performer and the MIDI writer; both are short, and they share `Performance`.
music21 writes MIDI slowly (about 150 ms a tune) and fails on about one O'Neill tune in ten, so
musicgen reads ABC itself (`abc_reader`) and plays it here, in about a millisecond a tune. A tune
is *valid* when it renders with at least one note; anything else raises `RenderError(message,
reason)`, `reason` one of the reader's keys (see `abc_reader`) or one of these:

    unbalanced-repeat  an ending ([2, |2) that is never played
    no-notes           the tune plays no note
    too-long           more than an hour of music after expanding repeats

Choices where ABC leaves room, kept close to abc2midi where that is sound (the reader's own, such
as the default unit length and how far an accidental reaches, are in `abc_reader`):
- Default tempo 1/4=120 (ABC 2.1's and abc2midi's). `Q:120` alone means 120 unit notes (L:) a
  minute.
- The written note is played: decorations are not (abc2midi plays T as a trill, H as a doubled
  length). A chord sounds all its notes for its length.
- Repeats follow abc2midi: `:|` goes back to the last `|:` or `::`, else to just after the last
  completed repeat or (once the tune has had a repeat mark) the last `||` / `|]`, else to the start.
  Endings `[1`, `|2`, `[1,3`, `[1-2` choose bars by pass number; once a later pass's ending has been
  played, `||` or `|]` closes the repeat.
- Parts: a header `P:ABA` plays body sections `P:A`, `P:B` in that order (music before the first
  `P:` first); without a header order, or when it names no body part, the tune plays as written.
- Voices: only the first voice (the first `V:` seen, in the header or the body) is rendered.
- Velocity follows abc2midi's default stress: 105 on a bar's first beat, 95 on other beats, 80
  between them.

Over 400 lines: the repeat, ending and part rules above are one walk over the bars, kept whole.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import mido

from musicgen.errors import RenderError
from musicgen.files import atomic_write_bytes
from musicgen.music import theory
from musicgen.music.abc_reader import (
    WHOLE,
    Bar,
    Element,
    Ending,
    KeyChange,
    MeterChange,
    Part,
    Tempo,
    Token,
    UnitChange,
    parse_key,
    parse_tempo,
    read_body,
    read_tune_setup,
)

# General MIDI 41 "Violin" (0-based 40): O'Neill's, Ryan's and Aird's are fiddle books, and a bowed
# tone carries the long notes of airs, where a plucked or struck patch dies away.
DEFAULT_PROGRAM = 40
DEFAULT_BEAT = Fraction(1, 4)
DEFAULT_BPM = 120.0
TICKS_PER_BEAT = 480  # MIDI file resolution; divisible by 3, 5 and 16
MAX_SECONDS = 3600.0
MAX_EVENTS = 200_000  # tokens played after expanding repeats
_BEAT_VELOCITY = (105, 95, 80)  # a bar's first beat, other beats, between beats


@dataclass(frozen=True)
class Note:
    """One sounding note.

    Attributes:
        pitch: MIDI note number (60 is middle C, ABC's `C`).
        start: Onset in seconds from the start of the tune.
        end: Release in seconds; tied notes are already merged into one.
        velocity: MIDI velocity 1-127.
    """

    pitch: int
    start: float
    end: float
    velocity: int


@dataclass(frozen=True)
class Performance:
    """A tune as it is played: repeats expanded, times in seconds.

    Attributes:
        title: The first T: field, or "".
        key: The starting key, e.g. "G", "Em", "A Dorian", "none".
        meter: The starting meter as written, e.g. "6/8", "C|", "none".
        tempo_qpm: Quarter notes per minute at the start.
        notes: Notes sorted by start, then pitch.
        bars: Bars played after expanding repeats (a pickup counts as a bar).
    """

    title: str
    key: str
    meter: str
    tempo_qpm: float
    notes: tuple[Note, ...]
    bars: int

    @property
    def duration(self) -> float:
        """Seconds from the start to the end of the last note."""
        return max((note.end for note in self.notes), default=0.0)


# ------------------------------------------------------------------------------------------------
# Parts and repeats


def play_order(tokens: list[Token], part_order: str) -> list[Token]:
    """The tokens in the order they are played: body parts in the header's order, repeats taken
    and endings chosen by pass number (see the module docstring).

    Args:
        tokens: `abc_reader.read_body`'s tokens, or a selection of them: a `:|` looks past the
            bar lines and endings right after it, up to the first other token, for an ending
            that asks for another pass.
        part_order: the header's P: value ("" without one).

    Raises:
        RenderError: ("unbalanced-repeat") an ending that is never played; ("too-long") more
            than MAX_EVENTS tokens played.
    """
    return _expand(_arrange_parts(tokens, part_order))


def _part_order(text: str) -> list[str] | None:
    """Expands a header P: such as "ABA", "A2B", "(AB)2C", "A.B.A"; None when it is not an order."""
    text = text.replace(".", "").replace(" ", "")
    order, pos = _part_sequence(text, 0, depth=0)
    return order if order and pos == len(text) and len(order) <= 100 else None


def _part_sequence(text: str, pos: int, depth: int) -> tuple[list[str], int]:
    order: list[str] = []
    while pos < len(text) and text[pos] != ")":
        if text[pos] == "(" and depth < 4:
            group, pos = _part_sequence(text, pos + 1, depth + 1)
            if pos >= len(text):
                return [], len(text) + 1
            pos += 1
        elif "A" <= text[pos] <= "Z":
            group, pos = [text[pos]], pos + 1
        else:
            return [], len(text) + 1
        digits = re.match(r"\d{0,2}", text[pos:]).group(0)
        order.extend(group * int(digits or 1))
        pos += len(digits)
    return order, pos


def _arrange_parts(tokens: list[Token], order_text: str) -> list[Token]:
    """Orders body parts (P:A ...) by the header's P:; music before the first part comes first."""
    order = _part_order(order_text) if order_text else None
    if not order:
        return tokens
    sections: dict[str, list[Token]] = {}
    intro: list[Token] = []
    current = intro
    for token in tokens:
        if isinstance(token, Part):
            current = sections.setdefault(token.label[:1], [])
        current.append(token)
    if not set(order) & set(sections):
        return tokens
    arranged = list(intro)
    for label in order:
        arranged.extend(sections.get(label, ()))
    return arranged


def _expand(tokens: list[Token]) -> list[Token]:
    """Tokens in the order they are played: repeats taken, endings chosen by pass number."""
    played: list[Token] = []
    pos, repeat_start, pass_number = 0, 0, 1
    repeated = False  # once the tune has had a repeat mark, || and |] start the next repeat
    last_ending = False  # a later pass's ending is playing: || or |] closes the repeat
    while pos < len(tokens):
        if len(played) > MAX_EVENTS:
            raise RenderError("tune too long after expanding repeats", "too-long")
        token = tokens[pos]
        if isinstance(token, Ending):
            if pass_number not in token.passes:
                pos = _skip_ending(tokens, pos, pass_number)
                continue
            last_ending = pass_number > 1
        played.append(token)
        if isinstance(token, Bar):
            if token.end_repeat and _repeat_again(tokens, pos, pass_number):
                pass_number, pos, repeated, last_ending = pass_number + 1, repeat_start, True, False
                continue
            repeated = repeated or token.start_repeat or token.end_repeat
            closes = token.section_end and repeated and (pass_number == 1 or last_ending)
            if token.start_repeat or token.end_repeat or closes:
                repeat_start, pass_number, last_ending = pos + 1, 1, False
        elif isinstance(token, Part):
            repeat_start, pass_number, last_ending = pos + 1, 1, False
        pos += 1
    return played


def _repeat_again(tokens: list[Token], pos: int, pass_number: int) -> bool:
    """At a `:|` on pass `pass_number`: go back once, or again when an ending ahead wants a pass."""
    if pass_number == 1:
        return True
    for token in tokens[pos + 1 : pos + 4]:
        if isinstance(token, Ending):
            if pass_number + 1 in token.passes:
                return True
        elif not isinstance(token, Bar):
            break
    return False


def _skip_ending(tokens: list[Token], pos: int, pass_number: int) -> int:
    """Index after the ending at `pos`, not taken on this pass: the next ending or where it ends.

    Raises:
        RenderError: ("unbalanced-repeat") the ending would never be played: no `:|` leads back to
            it and no later ending is taken instead.
    """
    ending = tokens[pos]
    pos += 1
    while pos < len(tokens):
        token = tokens[pos]
        if isinstance(token, Ending) and pass_number in token.passes:
            return pos
        if isinstance(token, Bar) and token.end_repeat and not token.start_repeat:
            return pos + 1  # the skipped ending's own `:|`: passed without going back
        if isinstance(token, Part) or (
            isinstance(token, Bar) and (token.start_repeat or token.section_end)
        ):
            break
        pos += 1
    if pass_number == 1:
        raise RenderError(f"ending {ending.text} is never played", "unbalanced-repeat")
    return pos


# ------------------------------------------------------------------------------------------------
# Playing


def _velocity(bar_position: int, beat: int) -> int:
    if bar_position == 0:
        return _BEAT_VELOCITY[0]
    return _BEAT_VELOCITY[1] if bar_position % beat == 0 else _BEAT_VELOCITY[2]


def _perform(played: list[Token], seconds_per_whole: float, beat: int) -> tuple[list[Note], int]:
    """Times every note; tied notes of one pitch merge. Returns (notes, bars)."""
    notes: list[list] = []  # [pitch, start, end, velocity], mutable while ties extend them
    open_ties: dict[int, int] = {}  # pitch -> index in notes of a note tied into the next element
    bars = bar_position = 0
    # Seconds are base_seconds + ticks * seconds_per_tick: exact between tempo changes, no drift.
    base_seconds, ticks, seconds_per_tick = 0.0, 0, seconds_per_whole / WHOLE
    for token in played:
        if type(token) is Element:
            start = base_seconds + ticks * seconds_per_tick
            ticks += token.length
            end = base_seconds + ticks * seconds_per_tick
            velocity = _velocity(bar_position, beat)
            ties: dict[int, int] = {}
            for pitch, tied in zip(token.pitches, token.ties, strict=True):
                index = open_ties.get(pitch)
                if index is None:
                    index = len(notes)
                    notes.append([pitch, start, end, velocity])
                notes[index][2] = end
                if tied:
                    ties[pitch] = index
            open_ties = ties
            bar_position += token.length
            bars += max(token.measures - 1, 0)
            if end > MAX_SECONDS:
                raise RenderError("the tune lasts more than an hour", "too-long")
        elif type(token) is Bar:
            bars += bar_position > 0
            bar_position = 0
        elif type(token) is Tempo:
            base_seconds, ticks = base_seconds + ticks * seconds_per_tick, 0
            seconds_per_tick = _seconds_per_whole(token.beat, token.bpm) / WHOLE
        elif type(token) is MeterChange:
            beat = token.beat_ticks
    bars += bar_position > 0
    return [Note(*values) for values in notes], bars


def _seconds_per_whole(beat: Fraction, bpm: float) -> float:
    return 60.0 / (bpm * float(beat))


def abc_to_performance(text: str) -> Performance:
    """Reads one ABC tune and plays it: repeats expanded, ties merged, times in seconds.

    Args:
        text: One tune: an optional `X:`, header fields up to `K:`, then the body. The tune ends at
            the first blank line or the next `X:`.

    Returns:
        The Performance, its notes sorted by start, then pitch.

    Raises:
        RenderError: The tune is not valid; `reason` is a stable key (see the module docstring).
    """
    setup = read_tune_setup(text)
    header = setup.header
    tempo = parse_tempo(header.tempo_text, setup.unit) if header.tempo_text else None
    beat_unit, bpm = tempo or (DEFAULT_BEAT, DEFAULT_BPM)
    # Key and unit changes are already in the pitches and lengths; the repeats are read without
    # them, as they always have been (they would end a `:|`'s look for an ending).
    tokens = [t for t in read_body(setup) if not isinstance(t, KeyChange | UnitChange)]
    played = play_order(tokens, header.part_order)
    notes, bars = _perform(played, _seconds_per_whole(beat_unit, bpm), setup.beat_ticks)
    if not notes:
        raise RenderError("the tune has no notes", "no-notes")
    return Performance(
        title=header.title,
        key=header.key.name,
        meter=header.meter_text,
        tempo_qpm=bpm * float(beat_unit) * 4,
        notes=tuple(sorted(notes, key=lambda note: (note.start, note.pitch))),
        bars=bars,
    )


# ------------------------------------------------------------------------------------------------
# MIDI out


def _meta_events(performance: Performance) -> list[mido.MetaMessage]:
    """Track name, tempo, and the time and key signatures when MIDI can say them."""
    events = [
        mido.MetaMessage("track_name", name=_latin1(performance.title or "musicgen")),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(_file_qpm(performance))),
    ]
    meter = {"C": "4/4", "C|": "2/2"}.get(performance.meter.strip(), performance.meter)
    match = re.fullmatch(r"\(?(\d{1,3}(?:\s*\+\s*\d{1,3})*)\)?\s*/\s*(\d{1,3})", meter.strip())
    if match:
        numerator = sum(int(part) for part in match.group(1).split("+"))
        denominator = int(match.group(2))
        if 0 < numerator < 256 and denominator in (1, 2, 4, 8, 16, 32, 64):
            events.append(
                mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator)
            )
    try:
        key = parse_key(performance.key)
    except RenderError:
        key = None
    if key is not None and -7 <= key.fifths <= 7 and key.name != "none":
        name = theory.midi_key_name(key.fifths, minor=key.name.endswith("m"))
        events.append(mido.MetaMessage("key_signature", key=name))
    return events


def _file_qpm(performance: Performance) -> float:
    # A MIDI tempo is at most 2**24 - 1 microseconds a quarter (3.58 qpm); slower tunes are written
    # at 4 qpm with correspondingly fewer ticks, so their times in seconds stay right.
    return max(performance.tempo_qpm, 4.0)


def _latin1(text: str) -> str:
    # MIDI text events are bytes; mido writes latin-1, so other characters become '?'.
    return text.encode("latin-1", "replace").decode("latin-1")


def _note_track(performance: Performance, program: int) -> mido.MidiTrack:
    ticks_per_second = _file_qpm(performance) / 60.0 * TICKS_PER_BEAT
    events = []  # (tick, 0 for off / 1 for on, message): an off sorts before an on at the same tick
    for note in performance.notes:
        on = round(note.start * ticks_per_second)
        off = max(round(note.end * ticks_per_second), on + 1)
        events.append((on, 1, mido.Message("note_on", note=note.pitch, velocity=note.velocity)))
        events.append((off, 0, mido.Message("note_off", note=note.pitch, velocity=64)))
    events.sort(key=lambda event: (event[0], event[1]))
    track = mido.MidiTrack([mido.Message("program_change", program=program, time=0)])
    now = 0
    for tick, _, message in events:
        message.time = tick - now
        track.append(message)
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=TICKS_PER_BEAT // 2))
    return track


def write_midi(performance: Performance, path: str | Path, program: int = DEFAULT_PROGRAM) -> None:
    """Writes a type-1 MIDI file: a conductor track (tempo, meter, key) and one track of notes.

    Times are converted at the starting tempo, so a tune whose Q: changes midway keeps its note
    times in seconds but not its beat grid. The file is written atomically.

    Args:
        performance: What to write.
        path: Destination `.mid` file; its folder must exist.
        program: General MIDI program, 0-based (40 is violin), on channel 1.

    Raises:
        ValueError: `program` is outside 0-127.
    """
    if not 0 <= program <= 127:
        raise ValueError(f"MIDI program must be 0-127, not {program}")
    conductor = mido.MidiTrack(_meta_events(performance))
    conductor.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.extend([conductor, _note_track(performance, program)])
    buffer = io.BytesIO()
    midi.save(file=buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def abc_to_midi(text: str, path: str | Path, program: int = DEFAULT_PROGRAM) -> Performance:
    """Renders one ABC tune to a MIDI file.

    Args:
        text: One ABC tune.
        path: Destination `.mid` file.
        program: General MIDI program, 0-based.

    Returns:
        The Performance that was written.

    Raises:
        RenderError: The tune is not valid (nothing is written).
    """
    performance = abc_to_performance(text)
    write_midi(performance, path, program)
    return performance
