"""The ABC reader: one tune's header fields, and its body as tokens, pitches and lengths resolved.

Every module that reads the music of a tune reads it here: `render` plays the tokens, `checks`
counts bars and notes in them (and `stats` and `novelty` read what checks found), `form` finds
sections and the final note, `transpose` rewrites text with the same token patterns. `abc`
(splitting and normalising tunebooks) shares the comment and field-line rules. It holds the
whole grammar, the header's and the body's, which share their patterns: hence over 400 lines.

    setup = read_tune_setup(text)    # the header (K:, M:, L:, Q:, P:, V:...), the body lines, and
                                     # the meter, beat and unit length the body starts in
    tokens = read_body(setup)        # Element, Bar, Ending, Part, Tempo, and the inline changes
                                     # KeyChange, MeterChange, UnitChange, in written order

Lengths are whole numbers of ticks, `WHOLE` ticks a whole note: exact for every tuplet (p <= 9)
and broken rhythm (down to 1/8) the reader accepts, and about ten times faster than Fraction.
A tune the reader cannot read raises `RenderError(message, reason)`:

    no-key          no K: field, or music before it
    bad-key         a K: value we cannot read (e.g. "K:H#")
    bad-header      an M:, L: or Q: value we cannot read, or a meter or unit too fine for WHOLE
    bad-note        a stray accidental or octave mark, an empty chord, a pitch outside MIDI 0-127
    bad-length      a zero, huge or malformed note length, or a stray digit or slash
    bad-rhythm      a broken-rhythm mark (> <) that follows no note, or more than three of them
    bad-tuplet      a tuplet such as (1 or (12
    unbalanced-repeat  an ending numbered 0 or beyond 9
    unclosed-chord, unclosed-grace, unclosed-text, unclosed-field  [ { " or [K: without its end
    unsupported     a character outside the subset (the message names it, its line and column)

Choices where ABC leaves room, kept close to abc2midi where that is sound:
- Default unit length per ABC 2.1: 1/16 when the meter is below 3/4, else 1/8 (also for M:none).
- Accidentals last to the end of the bar for the same letter and octave (ABC 2.1; abc2midi applies
  them to every octave); a note tied over a bar line keeps its accidental.
- Grace notes `{...}` are skipped: they are ornaments, and skipping keeps every bar its written
  length.
- Decorations (`~ . H-W h-w`, `!trill!`, `+trill+`), slurs, chord symbols and annotations are
  ignored: the written note is kept. A lone `!` is ABC 1.6's line break, also ignored.
- `>` is 3:1, `>>` 7:1, `>>>` 15:1 (abc2midi's default); `<` the reverse.
- A chord lasts as long as its first note times the length after `]`.
- Voices: only the first voice (the first `V:` seen, in the header or the body) is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from musicgen.errors import RenderError
from musicgen.music import theory

# Lengths are ticks on this grid: 2**20 for the finest broken rhythm of the finest note, 3, 5 and
# 7 for tuplets.
WHOLE = 2**20 * 3**4 * 5**2 * 7**2
FREE_METER_BEAT = Fraction(1, 4)  # the stressed beat of M:none
MAX_LENGTH = 64  # longest note, in unit lengths (L:)
MAX_PASSES = 9  # highest ending number
MAX_DIGITS = 6  # longer numbers are garbage (and int() of thousands of digits is refused)
PIPE_KEYS = ("HP", "Hp")  # Highland pipes: F# and C#, G natural (abc2midi plays both alike)

_CLEF_WORDS = {"treble", "bass", "alto", "tenor", "perc", "none", "bass3", "alto1", "alto2"}
_KEY_OPTIONS = {"clef", "middle", "m", "transpose", "t", "octave", "stafflines", "staffscale"}
KEY_ACCIDENTAL = re.compile(r"(\^\^|\^|__|_|=)([A-Ga-g])")  # a word of K: such as `^f` (fullmatch)

COMMENT = re.compile(r"(?<!\\)%.*")  # `\%` is an escaped percent sign inside text
FIELD_LINE = re.compile(r"([A-Za-z+]):(.*)")  # a header or body field line, such as "M:6/8"
# In the body, letters A-G are notes too: "A:" starts a field only when no bar line follows.
BODY_FIELD = re.compile(r"^([A-Za-z+]):(?![|:])")
# A line that starts by finishing the previous line's bar line (":" of "|:", "2" of "|2").
SPLIT_BAR = re.compile(r":(?![|:])|\d")
_LENGTH = r"\d*/*\d*"
_NOTE = rf"(?P<acc>\^\^|\^|__|_|=)?(?P<letter>[A-Ga-g])(?P<octave>[,']*)(?P<length>{_LENGTH})"
NOTE = re.compile(_NOTE)
# One token of a body line; the name of the group that matched (`match.lastgroup`) is its kind.
BODY_TOKEN = re.compile(
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
CHORD_TOKEN = re.compile(
    rf"(?P<space>[\s~.H-Wh-w()]+|\"[^\"]*\"|![^!\s]*!|[zx]{_LENGTH})|{_NOTE}(?P<tie>-?)"
)
_UNCLOSED = {"[": "unclosed-chord", "{": "unclosed-grace", '"': "unclosed-text"}


# ------------------------------------------------------------------------------------------------
# Tokens


@dataclass
class Element:
    """A note, chord or rest.

    Attributes:
        pitches: MIDI pitches (60 is middle C, ABC's `C`), a chord's in written order and each
            once; empty for a rest.
        length: ticks of WHOLE, tuplets and broken rhythm applied.
        ties: for each pitch, whether it is tied into the next element.
        measures: > 0 for a multi-measure rest (`Z4`): the bars it stands for.
    """

    pitches: tuple[int, ...]
    length: int
    ties: tuple[bool, ...]
    measures: int = 0


@dataclass(frozen=True)
class Bar:
    """A bar line: `|`, or one that starts or ends a repeat or ends a section (`||`, `|]`, `[|`)."""

    start_repeat: bool = False
    end_repeat: bool = False
    section_end: bool = False


@dataclass(frozen=True)
class Ending:
    """A numbered ending (`[1`, `|2`, `[1,3`, `[1-2`): the passes it is played on, and where it is
    written ("[2 at line 5, column 12")."""

    passes: frozenset[int]
    text: str


@dataclass(frozen=True)
class Part:
    """A `P:` field in the body: the start of a part."""

    label: str


@dataclass(frozen=True)
class Tempo:
    """A `Q:` field in the body that names a speed: `bpm` beats of `beat` whole notes a minute."""

    beat: Fraction
    bpm: float


@dataclass(frozen=True)
class KeyChange:
    """A `K:` field in the body: the new key, or None when it sets only a clef (`K:clef=bass`)."""

    key: Key | None


@dataclass(frozen=True)
class MeterChange:
    """An `M:` field in the body: ticks a bar (None in free meter) and of the stressed beat."""

    bar_ticks: int | None
    beat_ticks: int


@dataclass(frozen=True)
class UnitChange:
    """An `L:` field in the body: the new unit length in ticks. Lengths after it are resolved."""

    unit_ticks: int


Token = Element | Bar | Ending | Part | Tempo | KeyChange | MeterChange | UnitChange


# ------------------------------------------------------------------------------------------------
# Field values


@dataclass(frozen=True)
class Key:
    """A key as the K: field gives it.

    Attributes:
        name: "G", "Em", "A Dorian", "F#m", "HP", "none" ("C" for a K: with only a clef).
        fifths: sharps (> 0) or flats (< 0) of the plain signature, for the MIDI key event.
        signature: letter -> semitones, with any explicit accidentals (`K:D exp ^f`).
    """

    name: str
    fifths: int
    signature: dict[str, int] = field(hash=False, compare=False)


def _number(text: str, what: str, reason: str) -> int:
    if len(text) > MAX_DIGITS:
        raise RenderError(f"{what}: number {text[:12]}... too long", reason)
    return int(text)


def _ticks(length: Fraction, what: str, reason: str = "bad-length") -> int:
    ticks = length * WHOLE
    if ticks.denominator != 1 or ticks <= 0:
        raise RenderError(f"{what}: length {length} is not playable", reason)
    return int(ticks)


def key_words(value: str) -> list[str]:
    """The words of a K: value without its options (`clef=bass`, `octave=1`...); none means the
    field keeps the key and sets only a clef or options."""
    return [word for word in value.split() if word.partition("=")[0].lower() not in _KEY_OPTIONS]


@lru_cache(maxsize=256)
def parse_key(value: str) -> Key:
    """A K: value: root, mode and explicit accidentals (`exp ^f`); clef and options ignored.

    Raises:
        RenderError: ("bad-key") an unknown root, mode or word.
    """
    words = key_words(value)
    if not words or words[0].lower() == "none":
        return Key("none" if words else "C", 0, theory.key_signature(0))
    if words[0] in PIPE_KEYS:
        return Key(words[0], 2, theory.key_signature(2))
    match = re.fullmatch(r"([A-Ga-g])([#b]?)([A-Za-z]*)(.*)", words[0])
    if not match:
        raise RenderError(f"cannot read key {value.strip()!r}", "bad-key")
    root, accidental, mode = match.group(1).upper(), match.group(2), match.group(3)
    rest = ([match.group(4)] if match.group(4) else []) + words[1:]  # "Dmix=c": accidental glued on
    if not mode and rest and rest[0].isalpha() and rest[0].lower() not in _CLEF_WORDS | {"exp"}:
        mode, rest = rest[0], rest[1:]  # "A Mixolydian"
    mode_key = _mode_key(mode, value)
    fifths = theory.position(root, theory.SIGNS[accidental]) + theory.MODE_FIFTHS[mode_key]
    signature = theory.key_signature(fifths)
    for word in rest:
        signature = _apply_key_word(word, signature, value)
    return Key(f"{root}{accidental}{theory.MODE_NAMES[mode_key]}", fifths, signature)


def _mode_key(mode: str, value: str) -> str:
    lowered = mode.lower()
    if lowered in ("", "m"):
        return lowered or "maj"
    if lowered[:3] in theory.MODE_FIFTHS:
        return lowered[:3]
    raise RenderError(f"unknown mode {mode!r} in key {value.strip()!r}", "bad-key")


def _apply_key_word(word: str, signature: dict[str, int], value: str) -> dict[str, int]:
    """One word after the mode: `exp`, an explicit accidental like `^f`, or an ignored option."""
    if word.lower() == "exp":
        return theory.key_signature(0)
    match = KEY_ACCIDENTAL.fullmatch(word)
    if match:
        return {**signature, match.group(2).upper(): theory.ACCIDENTALS[match.group(1)]}
    if word.lower() in _CLEF_WORDS:
        return signature
    raise RenderError(f"cannot read key {value.strip()!r}", "bad-key")


def parse_meter(value: str) -> tuple[Fraction | None, Fraction]:
    """An M: value as (whole notes a bar, or None for free meter; the stressed beat).

    The beat is a dotted quarter in 6/8, 9/8 and 12/8, a half in C|, else one over the denominator.

    Raises:
        RenderError: ("bad-header") a value we cannot read.
    """
    text = value.strip()
    if text in ("", "none"):
        return None, FREE_METER_BEAT
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


def parse_unit(value: str) -> Fraction:
    """An L: value ("1/8") in whole notes.

    Raises:
        RenderError: ("bad-header") a value we cannot read.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d+))?\s*", value)
    if not match:
        raise RenderError(f"cannot read unit length {value.strip()!r}", "bad-header")
    numerator = _number(match.group(1), "unit length", "bad-header")
    denominator = _number(match.group(2) or "1", "unit length", "bad-header")
    if numerator == 0 or denominator == 0:
        raise RenderError(f"cannot read unit length {value.strip()!r}", "bad-header")
    return Fraction(numerator, denominator)


def parse_tempo(value: str, unit: Fraction) -> tuple[Fraction, float] | None:
    """A Q: value as (beat in whole notes, beats a minute); None when it names no speed
    (Q:"Allegro"). `Q:120` alone counts unit lengths (`unit`, L:) a minute.

    Raises:
        RenderError: ("bad-header") a value we cannot read.
    """
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
def parse_length(text: str) -> tuple[int, int]:
    """A note-length suffix as (numerator, denominator) of L: '', '2', '/2', '/', '//', '3/2'...

    Raises:
        RenderError: ("bad-length") zero, longer than MAX_LENGTH, or too many digits.
    """
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


# ------------------------------------------------------------------------------------------------
# Lines and header


@dataclass
class Header:
    """The header fields the music depends on (the first T: and V:, the last of the others).

    Attributes:
        key: the K: field's key.
        key_line: index of the K: line in the tune's lines (`str.splitlines`, a byte-order mark
            removed).
        title, meter_text, unit_text, tempo_text, part_order: T:, M: ("none" without one), L:,
            Q: and P: as written ("" without one).
        first_voice: the first V: field's voice name, None without one.
    """

    key: Key
    key_line: int
    title: str = ""
    meter_text: str = "none"
    unit_text: str = ""
    tempo_text: str = ""
    part_order: str = ""
    first_voice: str | None = None


def strip_comment(line: str) -> str:
    """The line without its `%` comment."""
    return COMMENT.sub("", line) if "%" in line else line


def split_comment(line: str) -> tuple[str, str]:
    """(the line before its `%` comment, the comment with its `%`; "" without one)."""
    match = COMMENT.search(line)
    return (line, "") if match is None else (line[: match.start()], line[match.start() :])


def split_tune(text: str) -> tuple[Header, list[tuple[int, str]]]:
    """Reads the header up to K: and returns it with the body lines, to the tune's end.

    Returns:
        (header, body lines as (1-based line number, text)); see `read_tune_setup`.

    Raises:
        RenderError: ("no-key") no K: field, or music before it; ("bad-key") a K: we cannot read.
    """
    fields: dict[str, str] = {}
    lines = text.removeprefix("\ufeff").splitlines()  # a byte-order mark from a Windows editor
    continued = False
    for index, raw in enumerate(lines):
        line = "" if continued else strip_comment(raw).strip()
        # A header line or %% directive ending in `\` runs on to the next line, which we skip.
        continued = raw.rstrip().endswith("\\")
        if not line:
            continue
        match = FIELD_LINE.fullmatch(line)
        if not match:
            raise RenderError(f"music before the K: field at line {index + 1}", "no-key")
        name, value = match.group(1), match.group(2).strip()
        if name == "K":
            return _make_header(fields, value, index), _body_lines(lines, index + 1)
        if name in ("T", "V") and name in fields:
            continue  # the first title names the tune; the first voice is the one we render
        fields[name] = value
    raise RenderError("no K: field (the key ends the header and starts the music)", "no-key")


def _make_header(fields: dict[str, str], key_text: str, key_line: int) -> Header:
    voice = fields.get("V", "").split()
    return Header(
        key=parse_key(key_text),
        key_line=key_line,
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
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            line = line[:-1]  # line continuation: only layout, the music runs on
        if body and SPLIT_BAR.match(line) and body[-1][1].rstrip().endswith(("|", ":")):
            # A bar line broken over two lines ("|" then ":eaag" or "1 (ag)"): join its halves.
            body[-1] = (body[-1][0], body[-1][1].rstrip() + line)
        else:
            body.append((index + 1, line))
    return body


@dataclass(frozen=True)
class TuneSetup:
    """A tune's header, its body lines, and the meter, beat and unit length the body starts in.

    Attributes:
        header: the header fields.
        body: the body lines as (1-based line number, text), comments and trailing `\\` removed,
            a bar line broken over two lines joined; up to a blank line or the next `X:`.
        meter: whole notes a bar, None in free meter.
        beat: the stressed beat in whole notes.
        unit: the unit length (L:, or its default) in whole notes.
    """

    header: Header
    body: list[tuple[int, str]]
    meter: Fraction | None
    beat: Fraction
    unit: Fraction

    @property
    def bar_ticks(self) -> int | None:
        """Ticks a bar of the starting meter; None in free meter. Raises RenderError when the
        meter is too fine for WHOLE."""
        return _ticks(self.meter, "meter", "bad-header") if self.meter is not None else None

    @property
    def beat_ticks(self) -> int:
        """Ticks of the starting stressed beat. Raises RenderError as `bar_ticks` does."""
        return _ticks(self.beat, "meter", "bad-header")

    @property
    def unit_ticks(self) -> int:
        """Ticks of the starting unit length. Raises RenderError as `bar_ticks` does."""
        return _ticks(self.unit, "unit length", "bad-header")


def read_tune_setup(text: str) -> TuneSetup:
    """Reads a tune's header, and finds its body lines and what the body starts in.

    The one place the default unit length is decided: 1/16 below a meter of 3/4, else 1/8.

    Args:
        text: one tune: an optional `X:`, header fields up to `K:`, then the body. The tune ends
            at the first blank line or the next `X:`.

    Raises:
        RenderError: no `K:`, music before it, or a bad `K:`, `M:` or `L:` field.
    """
    header, body = split_tune(text)
    meter, beat = parse_meter(header.meter_text)
    if header.unit_text:
        unit = parse_unit(header.unit_text)
    else:
        unit = Fraction(1, 16) if meter is not None and meter < Fraction(3, 4) else Fraction(1, 8)
    return TuneSetup(header, body, meter, beat, unit)


def read_body(setup: TuneSetup) -> list[Token]:
    """The body's tokens in written order (repeats not expanded), for the first voice only.

    Pitches carry the key, the bar's accidentals and ties over bar lines; lengths carry the unit
    length, tuplets and broken rhythm. An inline or body-line field gives a token where it is
    read: `KeyChange`, `MeterChange`, `UnitChange`, `Tempo` (a Q: that names a speed) and `Part`.

    Raises:
        RenderError: the body cannot be read (see the module docstring for the reasons).
    """
    reader = _BodyReader(setup)
    for number, line in setup.body:
        reader.feed(number, line)
    return reader.tokens


# ------------------------------------------------------------------------------------------------
# Body


class _BodyReader:
    """Turns body lines into tokens, resolving pitches (key, bar accidentals) and lengths."""

    def __init__(self, setup: TuneSetup):
        self.signature = setup.header.key.signature
        self.bar_ticks = setup.bar_ticks
        self.unit = setup.unit_ticks
        self.first_voice = setup.header.first_voice
        self.active = True  # False inside a voice other than the first
        self.tokens: list[Token] = []
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
        field_match = BODY_FIELD.match(line)
        if field_match:
            self.field(field_match.group(1), line[2:])
            return
        pos = 0
        while pos < len(line):
            match = BODY_TOKEN.match(line, pos)
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
        elif name == "K":
            key = parse_key(value) if key_words(value) else None
            if key is not None:
                self.signature = key.signature
                self.bar_accidentals.clear()
            self.tokens.append(KeyChange(key))
        elif name == "M":
            meter, beat = parse_meter(value)
            self.bar_ticks = _ticks(meter, "meter", "bad-header") if meter is not None else None
            self.tokens.append(MeterChange(self.bar_ticks, _ticks(beat, "meter", "bad-header")))
        elif name == "L":
            self.unit = _ticks(parse_unit(value), "unit length", "bad-header")
            self.tokens.append(UnitChange(self.unit))
        elif name == "Q":
            tempo = parse_tempo(value, Fraction(self.unit, WHOLE))
            if tempo is not None:
                self.tokens.append(Tempo(*tempo))
        elif name == "P":
            self.tokens.append(Part(value.strip()))
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
            bar = Bar(start_repeat=True, end_repeat=True)
        else:
            bar = Bar(
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
        self.tokens.append(Ending(frozenset(passes), f"{text} at {self.where}"))

    # Notes, chords, rests

    def pitch(self, accidental: str | None, letter: str, octave_marks: str) -> int:
        step = letter.upper()
        spelling = (step, theory.octave(letter, octave_marks))
        if accidental is not None:
            self.bar_accidentals[spelling] = theory.ACCIDENTALS[accidental]
        if spelling in self.bar_accidentals:
            alter = self.bar_accidentals[spelling]
        else:
            # A note tied over the bar line keeps its accidental (abc2midi does the same).
            alter = self.tie_carry.get(spelling, self.signature[step])
        self.spellings[spelling] = alter
        pitch = 60 + 12 * spelling[1] + theory.STEPS[step] + alter
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
        self.tokens.append(Element(pitches, ticks, (False,) * len(pitches), measures))
        self.last_spellings, self.spellings, self.tie_carry = self.spellings, {}, {}

    def note_ticks(self, length_text: str) -> int:
        if not length_text:
            return self.unit
        return self.scale(self.unit, *parse_length(length_text))

    def on_note(self, match: re.Match) -> None:
        pitch = self.pitch(match.group("acc"), match.group("letter"), match.group("octave"))
        self.add_element((pitch,), self.note_ticks(match.group("length")))

    def on_chord(self, match: re.Match) -> None:
        body = match.group("chord_body")
        pitches: dict[int, bool] = {}  # pitch -> tied; a dict keeps the written order
        first_length = None
        read = 0
        for part in CHORD_TOKEN.finditer(body):
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
            ticks = self.scale(ticks, *parse_length(match.group("chord_length")))
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

    def previous_element(self, what: str, reason: str) -> Element:
        """The element a tie or broken rhythm belongs to: the last token, or the last before a
        key or unit change (render has always read `A[K:D]-A` as a tie); any other token, a
        meter change among them, stands between."""
        for token in reversed(self.tokens):
            if isinstance(token, Element):
                return token
            if not isinstance(token, KeyChange | UnitChange):
                break
        raise RenderError(f"{what} at {self.where} follows no note", reason)

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
