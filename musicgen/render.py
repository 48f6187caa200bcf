"""ABC -> MIDI: our own converter for the ABC subset that folk tunes use, and the validity check.

music21 writes MIDI slowly (about 150 ms a tune) and fails on about one O'Neill tune in ten, so this
module reads ABC itself, in about a millisecond a tune. A tune is *valid* when it renders with at
least one note; anything else raises `RenderError(message, reason)`, `reason` one of these keys:

    no-key             no K: field, or music before it
    bad-key            a K: value we cannot read (e.g. "K:H#")
    bad-header         an M:, L: or Q: value we cannot read
    bad-note           a stray accidental or octave mark, an empty chord, a pitch outside MIDI 0-127
    bad-length         a zero, huge or malformed note length, or a stray digit or slash
    bad-rhythm         a broken-rhythm mark (> <) that follows no note, or more than three of them
    bad-tuplet         a tuplet such as (1 or (12
    unbalanced-repeat  an ending ([2, |2) that is never played, or numbered beyond 9
    unclosed-chord     [ without its ]
    unclosed-grace     { without its }
    unclosed-text      " without its closing "
    unclosed-field     [K: without its ]
    unsupported        a character outside the subset (the message names it, its line and column)
    no-notes           the tune plays no note
    too-long           more than an hour of music after expanding repeats

Choices where ABC leaves room, kept close to abc2midi where that is sound:
- Default tempo 1/4=120 (ABC 2.1's and abc2midi's). `Q:120` alone means 120 unit notes (L:) a
  minute.
- Default unit length per ABC 2.1: 1/16 when the meter is below 3/4, else 1/8 (also for M:none).
- Accidentals last to the end of the bar for the same letter and octave (ABC 2.1; abc2midi applies
  them to every octave); a note tied over a bar line keeps its accidental.
- Grace notes `{...}` are skipped: they are ornaments, and skipping keeps every bar its written
  length.
- Decorations (`~ . H-W h-w`, `!trill!`, `+trill+`), slurs, chord symbols and annotations are
  ignored: the written note is played (abc2midi plays T as a trill, H as a doubled length). A
  lone `!` is ABC 1.6's line break, also ignored.
- `>` is 3:1, `>>` 7:1, `>>>` 15:1 (abc2midi's default); `<` the reverse.
- A chord sounds all its notes for the length of its first note times the length after `]`.
- Repeats follow abc2midi: `:|` goes back to the last `|:` or `::`, else to just after the last
  completed repeat or (once the tune has had a repeat mark) the last `||` / `|]`, else to the start.
  Endings `[1`, `|2`, `[1,3`, `[1-2` choose bars by pass number; once a later pass's ending has been
  played, `||` or `|]` closes the repeat.
- Parts: a header `P:ABA` plays body sections `P:A`, `P:B` in that order (music before the first
  `P:` first); without a header order, or when it names no body part, the tune plays as written.
- Voices: only the first voice (the first `V:` seen, in the header or the body) is rendered.
- Velocity follows abc2midi's default stress: 105 on a bar's first beat, 95 on other beats, 80
  between them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import mido

from musicgen.errors import RenderError
from musicgen.files import atomic_write_bytes

# General MIDI 41 "Violin" (0-based 40): O'Neill's, Ryan's and Aird's are fiddle books, and a bowed
# tone carries the long notes of airs, where a plucked or struck patch dies away.
DEFAULT_PROGRAM = 40
DEFAULT_BEAT = Fraction(1, 4)
DEFAULT_BPM = 120.0
TICKS_PER_BEAT = 480  # MIDI file resolution; divisible by 3, 5 and 16

# Lengths are whole numbers of ticks on this grid, exact for every tuplet (p <= 9) and broken rhythm
# (down to 1/8) we accept; integers are about ten times faster than Fraction in the inner loop.
WHOLE = 2**20 * 3**4 * 5**2 * 7**2
MAX_SECONDS = 3600.0
MAX_EVENTS = 200_000  # tokens played after expanding repeats
MAX_LENGTH = 64  # longest note, in unit lengths (L:)
MAX_PASSES = 9  # highest ending number
MAX_DIGITS = 6  # longer numbers are garbage (and int() of thousands of digits is refused)

_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MAJOR_FIFTHS = {"C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F": -1}
_MODE_FIFTHS = {
    "maj": 0, "ion": 0, "mix": -1, "dor": -2, "min": -3, "aeo": -3, "m": -3, "phr": -4, "loc": -5,
    "lyd": 1,
}  # fmt: skip
_MODE_NAMES = {
    "maj": "", "ion": " Ionian", "mix": " Mixolydian", "dor": " Dorian", "min": "m", "m": "m",
    "aeo": " Aeolian", "phr": " Phrygian", "loc": " Locrian", "lyd": " Lydian",
}  # fmt: skip
_CLEF_WORDS = {"treble", "bass", "alto", "tenor", "perc", "none", "bass3", "alto1", "alto2"}
_KEY_OPTIONS = {"clef", "middle", "m", "transpose", "t", "octave", "stafflines", "staffscale"}
_ACCIDENTALS = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}
_BEAT_VELOCITY = (105, 95, 80)  # a bar's first beat, other beats, between beats

_HEADER_FIELD = re.compile(r"^([A-Za-z+]):(.*)$")
# In the body, letters A-G are notes too: "A:" starts a field only when no bar line follows.
_BODY_FIELD = re.compile(r"^([A-Za-z+]):(?![|:])")
# A line that starts by finishing the previous line's bar line (":" of "|:", "2" of "|2").
_SPLIT_BAR = re.compile(r":(?![|:])|\d")
_LENGTH = r"\d*/*\d*"
_NOTE = rf"(?P<acc>\^\^|\^|__|_|=)?(?P<letter>[A-Ga-g])(?P<octave>[,']*)(?P<length>{_LENGTH})"
_BODY_TOKEN = re.compile(
    rf"""
      (?P<space>[\s`]+)
    | (?P<text>"[^"]*")
    | (?P<deco>![^!\s]*!|\+[^+\s]*\+|!)
    | (?P<field>\[[A-Za-z]:[^\]]*\])
    | (?P<bar>(?::*\[\|\]|:*(?:\[\||\|\]|\|\||\|)+:*|::+)(?P<bar_ending>\[?\d+(?:[,-]\d+)*)?)
    | (?P<ending>\[\d+(?:[,-]\d+)*)
    | (?P<chord>\[(?P<chord_body>[^\]\[|]*)\](?P<chord_length>{_LENGTH}))
    | (?P<grace>\{{[^}}]*\}})
    | (?P<tuplet>\((?P<tp>\d+)(?::(?P<tq>\d*))?(?::(?P<tr>\d*))?)
    | (?P<slur>[()])
    | (?P<note>{_NOTE})
    | (?P<rest>[zx](?P<rest_length>{_LENGTH}))
    | (?P<measures>[ZX](?P<count>\d*))
    | (?P<broken><+|>+)
    | (?P<tie>-)
    | (?P<decoration>[~.H-Wh-wy$*])
    """,
    re.VERBOSE,
)
# Inside a chord: notes, and what does not sound (decorations, slurs, text, a rest written inside).
_CHORD_TOKEN = re.compile(
    rf"(?P<space>[\s~.H-Wh-w()]+|\"[^\"]*\"|![^!\s]*!|[zx]{_LENGTH})|{_NOTE}(?P<tie>-?)"
)
_UNCLOSED = {"[": "unclosed-chord", "{": "unclosed-grace", '"': "unclosed-text"}


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
# Tokens between parsing and playing. Pitches and lengths are resolved while parsing, where ABC
# defines them (key, unit length and bar accidentals as written); repeats only reorder tokens.


@dataclass
class _Element:
    """A note, chord or rest as written; an empty `pitches` is a rest."""

    pitches: tuple[int, ...]
    length: int  # ticks of WHOLE
    ties: tuple[bool, ...]
    measures: int = 0  # > 0 for a multi-measure rest (Z4)


@dataclass(frozen=True)
class _Bar:
    start_repeat: bool = False
    end_repeat: bool = False
    section_end: bool = False  # || |] [|


@dataclass(frozen=True)
class _Ending:
    passes: frozenset[int]
    text: str


@dataclass(frozen=True)
class _Tempo:
    seconds_per_whole: float


@dataclass(frozen=True)
class _Beat:
    ticks: int  # the stressed beat, for velocities


@dataclass(frozen=True)
class _Part:
    label: str


_Token = _Element | _Bar | _Ending | _Tempo | _Beat | _Part


# ------------------------------------------------------------------------------------------------
# Header values


@dataclass(frozen=True)
class _Key:
    name: str
    fifths: int  # sharps (> 0) or flats (< 0) of the plain signature, for the MIDI key meta event
    signature: dict[str, int] = field(hash=False, compare=False)  # letter -> semitones


def _number(text: str, what: str, reason: str) -> int:
    if len(text) > MAX_DIGITS:
        raise RenderError(f"{what}: number {text[:12]}... too long", reason)
    return int(text)


def _ticks(length: Fraction, what: str, reason: str = "bad-length") -> int:
    ticks = length * WHOLE
    if ticks.denominator != 1 or ticks <= 0:
        raise RenderError(f"{what}: length {length} is not playable", reason)
    return int(ticks)


def _signature_for_fifths(fifths: int) -> dict[str, int]:
    signature = dict.fromkeys(_STEPS, 0)
    order = "FCGDAEB" if fifths > 0 else "BEADGCF"
    for index in range(abs(fifths)):
        signature[order[index % 7]] += 1 if fifths > 0 else -1
    return signature


def _key_words(value: str) -> list[str]:
    """The words of a K: value without its options (`clef=bass`, `octave=1`..., which we ignore)."""
    return [word for word in value.split() if word.partition("=")[0].lower() not in _KEY_OPTIONS]


@lru_cache(maxsize=256)
def _parse_key(value: str) -> _Key:
    """A K: value: root, mode, explicit accidentals (`exp ^f`); clef and options ignored."""
    words = _key_words(value)
    if not words or words[0].lower() == "none":
        return _Key("none" if words else "C", 0, _signature_for_fifths(0))
    if words[0] in ("HP", "Hp"):
        # Highland pipes: the chanter's scale has F# and C#, G natural (abc2midi plays both alike).
        return _Key(words[0], 2, _signature_for_fifths(2))
    match = re.fullmatch(r"([A-Ga-g])([#b]?)([A-Za-z]*)(.*)", words[0])
    if not match:
        raise RenderError(f"cannot read key {value.strip()!r}", "bad-key")
    root, accidental, mode = match.group(1).upper(), match.group(2), match.group(3)
    rest = ([match.group(4)] if match.group(4) else []) + words[1:]  # "Dmix=c": accidental glued on
    if not mode and rest and rest[0].isalpha() and rest[0].lower() not in _CLEF_WORDS | {"exp"}:
        mode, rest = rest[0], rest[1:]  # "A Mixolydian"
    mode_key = _mode_key(mode, value)
    fifths = _MAJOR_FIFTHS[root] + {"#": 7, "b": -7, "": 0}[accidental] + _MODE_FIFTHS[mode_key]
    signature = _signature_for_fifths(fifths)
    for word in rest:
        signature = _apply_key_word(word, signature, value)
    return _Key(f"{root}{accidental}{_MODE_NAMES[mode_key]}", fifths, signature)


def _mode_key(mode: str, value: str) -> str:
    lowered = mode.lower()
    if lowered in ("", "m"):
        return lowered or "maj"
    if lowered[:3] in _MODE_FIFTHS:
        return lowered[:3]
    raise RenderError(f"unknown mode {mode!r} in key {value.strip()!r}", "bad-key")


def _apply_key_word(word: str, signature: dict[str, int], value: str) -> dict[str, int]:
    """One word after the mode: `exp`, an explicit accidental like `^f`, or an ignored option."""
    if word.lower() == "exp":
        return dict.fromkeys(_STEPS, 0)
    match = re.fullmatch(r"(\^\^|\^|__|_|=)([A-Ga-g])", word)
    if match:
        return {**signature, match.group(2).upper(): _ACCIDENTALS[match.group(1)]}
    if word.lower() in _CLEF_WORDS:
        return signature
    raise RenderError(f"cannot read key {value.strip()!r}", "bad-key")


def _parse_meter(value: str) -> tuple[Fraction | None, Fraction]:
    """M: as (whole notes per bar, or None for free meter; the stressed beat in whole notes).

    The beat is a dotted quarter in 6/8, 9/8 and 12/8, a half in C|, else one over the denominator.
    """
    text = value.strip()
    if text in ("", "none"):
        return None, DEFAULT_BEAT
    if text in ("C", "C|"):
        return Fraction(1), Fraction(1, 4) if text == "C" else Fraction(1, 2)
    match = re.fullmatch(r"\(?(\d+(?:\s*\+\s*\d+)*)\)?\s*/\s*(\d+)", text)
    if not match:
        raise RenderError(f"cannot read meter {text!r}", "bad-header")
    parts = [_number(part.strip(), "meter", "bad-header") for part in match.group(1).split("+")]
    numerator, denominator = sum(parts), _number(match.group(2), "meter", "bad-header")
    if numerator == 0 or denominator == 0:
        raise RenderError(f"cannot read meter {text!r}", "bad-header")
    compound = len(parts) == 1 and numerator % 3 == 0 and numerator > 3
    return Fraction(numerator, denominator), Fraction(3 if compound else 1, denominator)


def _parse_unit(value: str) -> Fraction:
    match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d+))?\s*", value)
    if not match:
        raise RenderError(f"cannot read unit length {value.strip()!r}", "bad-header")
    numerator = _number(match.group(1), "unit length", "bad-header")
    denominator = _number(match.group(2) or "1", "unit length", "bad-header")
    if numerator == 0 or denominator == 0:
        raise RenderError(f"cannot read unit length {value.strip()!r}", "bad-header")
    return Fraction(numerator, denominator)


def _parse_tempo(value: str, unit: Fraction) -> tuple[Fraction, float] | None:
    """Q: as (beat in whole notes, beats a minute); None when it names no speed (Q:"Allegro")."""
    text = re.sub(r'"[^"]*"', " ", value).strip()
    if not text:
        return None
    match = re.fullmatch(r"((?:\d+/\d+\s*)+)=\s*(\d+(?:\.\d+)?)|(?:C\s*=\s*)?(\d+(?:\.\d+)?)", text)
    if not match:
        raise RenderError(f"cannot read tempo {value.strip()!r}", "bad-header")
    if match.group(1):
        beat = Fraction(0)
        for numerator, denominator in re.findall(r"(\d+)/(\d+)", match.group(1)):
            denominator = _number(denominator, "tempo", "bad-header")
            if denominator:
                beat += Fraction(_number(numerator, "tempo", "bad-header"), denominator)
        bpm = float(match.group(2))
    else:
        beat, bpm = unit, float(match.group(3))
    if beat <= 0 or not 1 <= bpm <= 10_000:
        raise RenderError(f"cannot read tempo {value.strip()!r}", "bad-header")
    return beat, bpm


@lru_cache(maxsize=512)
def _parse_length(text: str) -> tuple[int, int]:
    """A note-length suffix as (numerator, denominator) of L: '', '2', '/2', '/', '//', '3/2'..."""
    match = re.fullmatch(r"(\d*)(/*)(\d*)", text)
    if len(match.group(1)) > MAX_DIGITS or len(match.group(3)) > MAX_DIGITS:
        raise RenderError(f"bad note length {text[:12]!r}", "bad-length")
    numerator = int(match.group(1)) if match.group(1) else 1
    slashes = len(match.group(2))
    if slashes == 0:
        denominator = 1
    elif match.group(3):
        denominator = int(match.group(3)) * 2 ** (slashes - 1)
    else:
        denominator = 2**slashes
    if numerator == 0 or denominator == 0 or numerator > MAX_LENGTH * denominator:
        raise RenderError(f"bad note length {text[:12]!r}", "bad-length")
    return numerator, denominator


def _seconds_per_whole(beat: Fraction, bpm: float) -> float:
    return 60.0 / (bpm * float(beat))


# ------------------------------------------------------------------------------------------------
# Lines and header


@dataclass
class _Header:
    key: _Key
    title: str = ""
    meter_text: str = "none"
    unit_text: str = ""
    tempo_text: str = ""
    part_order: str = ""
    first_voice: str | None = None


def _strip_comment(line: str) -> str:
    # `\%` is an escaped percent sign inside text, not a comment.
    return re.sub(r"(?<!\\)%.*", "", line) if "%" in line else line


def _split_tune(text: str) -> tuple[_Header, list[tuple[int, str]]]:
    """Reads the header up to K: and returns it with the numbered body lines to the tune's end."""
    fields: dict[str, str] = {}
    lines = text.removeprefix("\ufeff").splitlines()  # a byte-order mark from a Windows editor
    continued = False
    for index, raw in enumerate(lines):
        line = "" if continued else _strip_comment(raw).strip()
        # A header line or %% directive ending in `\` runs on to the next line, which we skip.
        continued = raw.rstrip().endswith("\\")
        if not line:
            continue
        match = _HEADER_FIELD.match(line)
        if not match:
            raise RenderError(f"music before the K: field at line {index + 1}", "no-key")
        name, value = match.group(1), match.group(2).strip()
        if name == "K":
            return _make_header(fields, value), _body_lines(lines, index + 1)
        if name in ("T", "V") and name in fields:
            continue  # the first title names the tune; the first voice is the one we render
        fields[name] = value
    raise RenderError("no K: field (the key ends the header and starts the music)", "no-key")


def _make_header(fields: dict[str, str], key_text: str) -> _Header:
    voice = fields.get("V", "").split()
    return _Header(
        key=_parse_key(key_text),
        title=fields.get("T", ""),
        meter_text=fields.get("M", "none") or "none",
        unit_text=fields.get("L", ""),
        tempo_text=fields.get("Q", ""),
        part_order=fields.get("P", ""),
        first_voice=voice[0] if voice else None,
    )


def _body_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Body lines without comments or a trailing `\\`, up to a blank line or the next X:."""
    body: list[tuple[int, str]] = []
    for index in range(first, len(lines)):
        raw = lines[index]
        if not raw.strip() or raw.startswith("X:"):
            break
        line = _strip_comment(raw).rstrip()
        if line.endswith("\\"):
            line = line[:-1]  # line continuation: only layout, the music runs on
        if body and _SPLIT_BAR.match(line) and body[-1][1].rstrip().endswith(("|", ":")):
            # A bar line broken over two lines ("|" then ":eaag" or "1 (ag)"): join its halves.
            body[-1] = (body[-1][0], body[-1][1].rstrip() + line)
        else:
            body.append((index + 1, line))
    return body


# ------------------------------------------------------------------------------------------------
# Body


class _BodyParser:
    """Turns body lines into tokens, resolving pitches (key, bar accidentals) and lengths."""

    def __init__(self, header: _Header, meter: Fraction | None, unit: Fraction):
        self.signature = header.key.signature
        self.bar_ticks = _ticks(meter, "meter", "bad-header") if meter is not None else None
        self.unit = _ticks(unit, "unit length", "bad-header")
        self.first_voice = header.first_voice
        self.active = True  # False inside a voice other than the first
        self.tokens: list[_Token] = []
        self.bar_accidentals: dict[tuple[str, int], int] = {}  # (letter, octave) -> semitones
        self.tuplet_left = 0
        self.tuplet_ratio = (1, 1)  # (time, notes): (3 is (2, 3)
        self.next_ratio = (1, 1)  # the short half of a broken rhythm, for the next element
        self.spellings: dict[tuple[str, int], int] = {}  # of the element being read
        self.last_spellings: dict[tuple[str, int], int] = {}
        self.tie_carry: dict[tuple[str, int], int] = {}  # spellings tied into the next element
        self.line_number = 0
        self.column = 0
        self.handlers = {
            name: getattr(self, f"on_{name}")
            for name in ("field", "bar", "ending", "chord", "tuplet", "note", "rest", "measures",
                         "broken", "tie")
        }  # fmt: skip

    @property
    def where(self) -> str:
        return f"line {self.line_number}, column {self.column + 1}"

    def feed(self, number: int, line: str) -> None:
        self.line_number, self.column = number, 0
        field_match = _BODY_FIELD.match(line)
        if field_match:
            self.field(field_match.group(1), line[2:])
            return
        pos = 0
        while pos < len(line):
            match = _BODY_TOKEN.match(line, pos)
            self.column = pos
            if match is None:
                self.fail(line, pos)
            handler = self.handlers.get(match.lastgroup)
            if handler is not None and (self.active or match.lastgroup == "field"):
                handler(match)
            pos = match.end()

    def fail(self, line: str, pos: int) -> None:
        char = line[pos]
        if re.match(r"\[[A-Za-z]:", line[pos:]):
            reason = "unclosed-field"
        elif char in _UNCLOSED:
            reason = _UNCLOSED[char]
        elif char in "^_=,'":
            reason = "bad-note"
        elif char.isdigit() or char == "/":
            reason = "bad-length"
        else:
            reason = "unsupported"
        raise RenderError(f"cannot read {char!r} at {self.where}", reason)

    # Fields

    def field(self, name: str, value: str) -> None:
        if name == "V":
            words = value.split()
            voice = words[0] if words else ""
            if self.first_voice is None:
                self.first_voice = voice
            self.active = voice == self.first_voice
        elif not self.active:
            return
        elif name == "K" and _key_words(value):  # "K:clef=bass" alone keeps the key
            self.signature = _parse_key(value).signature
            self.bar_accidentals.clear()
        elif name == "M":
            meter, beat = _parse_meter(value)
            self.bar_ticks = _ticks(meter, "meter", "bad-header") if meter is not None else None
            self.tokens.append(_Beat(_ticks(beat, "meter", "bad-header")))
        elif name == "L":
            self.unit = _ticks(_parse_unit(value), "unit length", "bad-header")
        elif name == "Q":
            tempo = _parse_tempo(value, Fraction(self.unit, WHOLE))
            if tempo is not None:
                self.tokens.append(_Tempo(_seconds_per_whole(*tempo)))
        elif name == "P":
            self.tokens.append(_Part(value.strip()))
        # Other fields (T: section titles, w: W: words, I: N: R: r: s: U: m: +:) do not sound.

    def on_field(self, match: re.Match) -> None:
        text = match.group("field")
        self.field(text[1], text[3:-1])

    # Bars and endings

    def on_bar(self, match: re.Match) -> None:
        text = match.group("bar")
        ending = match.group("bar_ending")
        if ending:
            text = text[: -len(ending)]
        lines = text.strip(":")
        if not lines:  # "::" between two repeated sections
            bar = _Bar(start_repeat=True, end_repeat=True)
        else:
            bar = _Bar(
                start_repeat=text.endswith(":"),
                end_repeat=text.startswith(":"),
                section_end=lines not in ("|", "[|]"),
            )
        self.bar_accidentals.clear()
        self.tokens.append(bar)
        if ending:
            self.add_ending(ending)

    def on_ending(self, match: re.Match) -> None:
        self.add_ending(match.group("ending"))

    def add_ending(self, text: str) -> None:
        passes: set[int] = set()
        for item in text.lstrip("[").split(","):
            low, _, high = item.partition("-")
            low_pass = _number(low, "ending", "unbalanced-repeat")
            high_pass = _number(high or low, "ending", "unbalanced-repeat")
            passes.update(range(low_pass, min(high_pass, MAX_PASSES + 1) + 1))
        if not passes or min(passes) < 1 or max(passes) > MAX_PASSES:
            raise RenderError(f"ending {text!r} at {self.where} out of range", "unbalanced-repeat")
        self.tokens.append(_Ending(frozenset(passes), f"{text} at {self.where}"))

    # Notes, chords, rests

    def pitch(self, accidental: str | None, letter: str, octave_marks: str) -> int:
        step = letter.upper()
        octave = (letter > "Z") + octave_marks.count("'") - octave_marks.count(",")
        spelling = (step, octave)
        if accidental is not None:
            self.bar_accidentals[spelling] = _ACCIDENTALS[accidental]
        if spelling in self.bar_accidentals:
            alter = self.bar_accidentals[spelling]
        else:
            # A note tied over the bar line keeps its accidental (abc2midi does the same).
            alter = self.tie_carry.get(spelling, self.signature[step])
        self.spellings[spelling] = alter
        pitch = 60 + 12 * octave + _STEPS[step] + alter
        if not 0 <= pitch <= 127:
            raise RenderError(f"pitch {pitch} outside MIDI's range at {self.where}", "bad-note")
        return pitch

    def scale(self, ticks: int, numerator: int, denominator: int) -> int:
        ticks *= numerator
        if ticks % denominator:
            raise RenderError(f"note length too fine to play at {self.where}", "bad-length")
        return ticks // denominator

    def add_element(self, pitches: tuple[int, ...], ticks: int, measures: int = 0) -> None:
        if self.next_ratio != (1, 1):
            ticks = self.scale(ticks, *self.next_ratio)
            self.next_ratio = (1, 1)
        if self.tuplet_left:
            ticks = self.scale(ticks, *self.tuplet_ratio)
            self.tuplet_left -= 1
        self.tokens.append(_Element(pitches, ticks, (False,) * len(pitches), measures))
        self.last_spellings, self.spellings, self.tie_carry = self.spellings, {}, {}

    def note_ticks(self, length_text: str) -> int:
        if not length_text:
            return self.unit
        return self.scale(self.unit, *_parse_length(length_text))

    def on_note(self, match: re.Match) -> None:
        pitch = self.pitch(match.group("acc"), match.group("letter"), match.group("octave"))
        self.add_element((pitch,), self.note_ticks(match.group("length")))

    def on_chord(self, match: re.Match) -> None:
        body = match.group("chord_body")
        pitches: dict[int, bool] = {}  # pitch -> tied; a dict keeps the written order
        first_length = None
        read = 0
        for part in _CHORD_TOKEN.finditer(body):
            if part.start() != read:
                break
            read = part.end()
            if part.group("letter") is None:
                continue
            pitch = self.pitch(part.group("acc"), part.group("letter"), part.group("octave"))
            pitches[pitch] = pitches.get(pitch, False) or bool(part.group("tie"))
            if first_length is None:
                first_length = part.group("length")
        if read != len(body) or first_length is None:
            raise RenderError(f"cannot read chord [{body[:20]}] at {self.where}", "bad-note")
        ticks = self.note_ticks(first_length)
        if match.group("chord_length"):
            ticks = self.scale(ticks, *_parse_length(match.group("chord_length")))
        self.add_element(tuple(pitches), ticks)
        self.tokens[-1].ties = tuple(pitches.values())
        if any(pitches.values()):
            self.tie_carry = self.last_spellings

    def on_rest(self, match: re.Match) -> None:
        self.add_element((), self.note_ticks(match.group("rest_length")))

    def on_measures(self, match: re.Match) -> None:
        count = _number(match.group("count") or "1", "multi-measure rest", "bad-length")
        if not 1 <= count <= 999:
            raise RenderError(f"bad multi-measure rest at {self.where}", "bad-length")
        bar = self.bar_ticks if self.bar_ticks is not None else WHOLE
        self.add_element((), bar * count, measures=count)

    # Rhythm modifiers

    def previous_element(self, what: str, reason: str) -> _Element:
        if not self.tokens or not isinstance(self.tokens[-1], _Element):
            raise RenderError(f"{what} at {self.where} follows no note", reason)
        return self.tokens[-1]

    def on_broken(self, match: re.Match) -> None:
        text = match.group("broken")
        previous = self.previous_element(f"broken rhythm {text!r}", "bad-rhythm")
        if len(text) > 3:
            raise RenderError(f"broken rhythm {text!r} at {self.where}", "bad-rhythm")
        halves = 2 ** len(text)  # ">" 3/2 + 1/2, ">>" 7/4 + 1/4, ">>>" 15/8 + 1/8
        long, short = (2 * halves - 1, halves), (1, halves)
        first, self.next_ratio = (long, short) if text[0] == ">" else (short, long)
        previous.length = self.scale(previous.length, *first)

    def on_tie(self, match: re.Match) -> None:
        previous = self.previous_element("tie '-'", "bad-note")
        previous.ties = (True,) * len(previous.pitches)
        self.tie_carry = self.last_spellings

    def on_tuplet(self, match: re.Match) -> None:
        notes = _number(match.group("tp"), "tuplet", "bad-tuplet")
        if not 2 <= notes <= 9:
            raise RenderError(f"tuplet ({notes} at {self.where}", "bad-tuplet")
        time = self.default_tuplet_time(notes)
        if match.group("tq"):
            time = _number(match.group("tq"), "tuplet", "bad-tuplet")
        count = _number(match.group("tr"), "tuplet", "bad-tuplet") if match.group("tr") else notes
        if not 1 <= time <= 32 or not 1 <= count <= 32:
            raise RenderError(f"tuplet {match.group(0)!r} at {self.where}", "bad-tuplet")
        self.tuplet_ratio = (time, notes)
        self.tuplet_left = count

    def default_tuplet_time(self, notes: int) -> int:
        """ABC 2.1 4.13: (2 (4 (8 take the time of three; (3 (6 of two; (5 (7 (9 of three in
        compound meter, else two."""
        if notes in (3, 6):
            return 2
        if notes in (2, 4, 8):
            return 3
        eighths = self.bar_ticks * 8 // WHOLE if self.bar_ticks is not None else 0
        compound = self.bar_ticks is not None and eighths > 3 and eighths % 3 == 0
        return 3 if compound else 2


# ------------------------------------------------------------------------------------------------
# Parts and repeats


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


def _arrange_parts(tokens: list[_Token], order_text: str) -> list[_Token]:
    """Orders body parts (P:A ...) by the header's P:; music before the first part comes first."""
    order = _part_order(order_text) if order_text else None
    if not order:
        return tokens
    sections: dict[str, list[_Token]] = {}
    intro: list[_Token] = []
    current = intro
    for token in tokens:
        if isinstance(token, _Part):
            current = sections.setdefault(token.label[:1], [])
        current.append(token)
    if not set(order) & set(sections):
        return tokens
    arranged = list(intro)
    for label in order:
        arranged.extend(sections.get(label, ()))
    return arranged


def _expand(tokens: list[_Token]) -> list[_Token]:
    """Tokens in the order they are played: repeats taken, endings chosen by pass number."""
    played: list[_Token] = []
    pos, repeat_start, pass_number = 0, 0, 1
    repeated = False  # once the tune has had a repeat mark, || and |] start the next repeat
    last_ending = False  # a later pass's ending is playing: || or |] closes the repeat
    while pos < len(tokens):
        if len(played) > MAX_EVENTS:
            raise RenderError("tune too long after expanding repeats", "too-long")
        token = tokens[pos]
        if isinstance(token, _Ending):
            if pass_number not in token.passes:
                pos = _skip_ending(tokens, pos, pass_number)
                continue
            last_ending = pass_number > 1
        played.append(token)
        if isinstance(token, _Bar):
            if token.end_repeat and _repeat_again(tokens, pos, pass_number):
                pass_number, pos, repeated, last_ending = pass_number + 1, repeat_start, True, False
                continue
            repeated = repeated or token.start_repeat or token.end_repeat
            closes = token.section_end and repeated and (pass_number == 1 or last_ending)
            if token.start_repeat or token.end_repeat or closes:
                repeat_start, pass_number, last_ending = pos + 1, 1, False
        elif isinstance(token, _Part):
            repeat_start, pass_number, last_ending = pos + 1, 1, False
        pos += 1
    return played


def _repeat_again(tokens: list[_Token], pos: int, pass_number: int) -> bool:
    """At a `:|` on pass `pass_number`: go back once, or again when an ending ahead wants a pass."""
    if pass_number == 1:
        return True
    for token in tokens[pos + 1 : pos + 4]:
        if isinstance(token, _Ending):
            if pass_number + 1 in token.passes:
                return True
        elif not isinstance(token, _Bar):
            break
    return False


def _skip_ending(tokens: list[_Token], pos: int, pass_number: int) -> int:
    """Index after the ending at `pos`, not taken on this pass: the next ending or where it ends.

    Raises:
        RenderError: ("unbalanced-repeat") the ending would never be played: no `:|` leads back to
            it and no later ending is taken instead.
    """
    ending = tokens[pos]
    pos += 1
    while pos < len(tokens):
        token = tokens[pos]
        if isinstance(token, _Ending) and pass_number in token.passes:
            return pos
        if isinstance(token, _Bar) and token.end_repeat and not token.start_repeat:
            return pos + 1  # the skipped ending's own `:|`: passed without going back
        if isinstance(token, _Part) or (
            isinstance(token, _Bar) and (token.start_repeat or token.section_end)
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


def _perform(played: list[_Token], seconds_per_whole: float, beat: int) -> tuple[list[Note], int]:
    """Times every note; tied notes of one pitch merge. Returns (notes, bars)."""
    notes: list[list] = []  # [pitch, start, end, velocity], mutable while ties extend them
    open_ties: dict[int, int] = {}  # pitch -> index in notes of a note tied into the next element
    bars = bar_position = 0
    # Seconds are base_seconds + ticks * seconds_per_tick: exact between tempo changes, no drift.
    base_seconds, ticks, seconds_per_tick = 0.0, 0, seconds_per_whole / WHOLE
    for token in played:
        if type(token) is _Element:
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
        elif type(token) is _Bar:
            bars += bar_position > 0
            bar_position = 0
        elif type(token) is _Tempo:
            base_seconds, ticks = base_seconds + ticks * seconds_per_tick, 0
            seconds_per_tick = token.seconds_per_whole / WHOLE
        elif type(token) is _Beat:
            beat = token.ticks
    bars += bar_position > 0
    return [Note(*values) for values in notes], bars


def read_tune_setup(text: str):
    """A tune's header, its body lines, and the meter, beat and unit length the body is read in.

    The one place the default unit length is decided (1/16 below a meter of 3/4, else 1/8), for
    every reader of tunes (this module, `checks`, `form`).

    Returns:
        (header, body lines as (line number, text), meter or None for free meter, beat, unit).

    Raises:
        RenderError: no `K:`, music before it, or a bad `M:` or `L:` field.
    """
    header, body = _split_tune(text)
    meter, beat = _parse_meter(header.meter_text)
    if header.unit_text:
        unit = _parse_unit(header.unit_text)
    else:
        unit = Fraction(1, 16) if meter is not None and meter < Fraction(3, 4) else Fraction(1, 8)
    return header, body, meter, beat, unit


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
    header, body, meter, beat, unit = read_tune_setup(text)
    tempo = _parse_tempo(header.tempo_text, unit) if header.tempo_text else None
    beat_unit, bpm = tempo or (DEFAULT_BEAT, DEFAULT_BPM)
    parser = _BodyParser(header, meter, unit)
    for number, line in body:
        parser.feed(number, line)
    played = _expand(_arrange_parts(parser.tokens, header.part_order))
    beat_ticks = _ticks(beat, "meter", "bad-header")
    notes, bars = _perform(played, _seconds_per_whole(beat_unit, bpm), beat_ticks)
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

_MAJOR_NAMES = ["Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#"]
_MINOR_NAMES = ["Abm", "Ebm", "Bbm", "Fm", "Cm", "Gm", "Dm", "Am", "Em", "Bm", "F#m", "C#m", "G#m",
                "D#m", "A#m"]  # fmt: skip


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
        key = _parse_key(performance.key)
    except RenderError:
        key = None
    if key is not None and -7 <= key.fifths <= 7 and key.name != "none":
        names = _MINOR_NAMES if key.name.endswith("m") else _MAJOR_NAMES
        events.append(mido.MetaMessage("key_signature", key=names[key.fifths + 7]))
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
