"""Transposing an ABC tune by a number of semitones, rewriting its text: keys, notes, chord names.

Every note sounds exactly `semitones` higher (or lower), read by render.py and by abc2midi alike;
a test checks this on every tune of the bundled corpus that renders. How:

- **One spelled interval.** N semitones are moved as a number of fifths on the line of fifths
  (f = 7N mod 12, give or take 12), the one that gives the header's key a signature of at most 6
  sharps or flats (at exactly 6, the nearer spelling of the interval, then flats): C up 6 is Gb,
  D up 4 is F#. Every spelled note (letter and alteration, as the reader sounds it) moves by the
  same f, so the melody keeps its spelling relations: a raised 7th stays a raised 7th. An inline
  key change uses the same f unless its key would pass 7 sharps or flats.
- **Keys.** `K:` (header, body line or inline `[K:...]`) gets the new root with its mode as
  written ("A Dorian" -> "B Dorian", "Ador" -> "Bdor"); explicit accidentals of the key
  (`K:D exp ^f ^c`) move by f; clefs and options stay. `K:none` stays and the notes carry their
  accidentals. The pipe keys `K:HP` / `K:Hp` (a D-major signature) become the major key of the
  moved signature, since no key word means "pipes in E".
- **Accidentals.** A note gets an accidental (`^ _ = ^^ __`) when it had one, or when, without
  one, the new key signature and the accidentals earlier in the bar would not give its moved
  pitch. Readers disagree on how far an accidental reaches (ABC 2.1 and `abc_reader`: the same
  letter and octave to the bar's end; abc2midi: every octave of the letter, and grace notes'
  accidentals too), so both readings are followed and an accidental is written when either would
  go wrong.
  An alteration beyond a double sharp or flat is respelled enharmonically.
- **Octaves.** Each note's octave (case, `,` and `'`) is worked out from its moved pitch.
- **Chords, grace notes, chord names.** Notes in `[...]` and `{...}` move like any other; chord
  names in quotes (`"Am"`, `"D7/F#"`) are transposed too, so an accompaniment still fits; other
  quoted text (annotations such as `"^fine"`) is left alone.
- **Range.** A tune that would leave MIDI's range (0-127) is refused with a `RenderError`
  ("bad-note"), as render.py refuses such a pitch.

Comments, lyrics, decorations, bar lines and lengths are kept as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from musicgen.errors import RenderError
from musicgen.music import abc_reader, theory
from musicgen.music.abc_reader import Key, key_words, parse_key, split_comment

MAX_SEMITONES = 48
_KEY_ROOT = re.compile(r"^(\s*)([A-Ga-g])([#b]?)")
_CHORD_NAME = re.compile(
    r"^(?P<root>[A-G])(?P<acc>[#b]?)"
    r"(?P<kind>(?:maj|min|dim|aug|sus|add|m|M|o|\+|-|[0-9]|[#b](?=[0-9])|\(|\))*)"
    r"(?:/(?P<bass>[A-G])(?P<bass_acc>[#b]?))?$"
)


def transpose_tune(text: str, semitones: int) -> str:
    """One ABC tune, every note moved by `semitones`.

    Args:
        text: one tune: header up to `K:`, then the body (as `render.abc_to_performance` reads).
        semitones: how far to move, -48 to 48; 0 returns the text unchanged.

    Returns:
        The transposed tune; lines, comments and layout kept.

    Raises:
        RenderError: the tune cannot be read ("no-key", "bad-key", "unsupported"... as
            `abc_reader` says), or a note would leave MIDI's range ("bad-note").
        ValueError: `semitones` is outside -48..48.
    """
    if not -MAX_SEMITONES <= semitones <= MAX_SEMITONES:
        raise ValueError(f"transpose by at most {MAX_SEMITONES} semitones, not {semitones}")
    if semitones == 0:
        return text
    lines = text.removeprefix("\ufeff").splitlines()
    # split_tune raises when there is no K: or music comes before it.
    key_line = abc_reader.split_tune("\n".join(lines))[0].key_line
    writer = _Writer(semitones, parse_key(_field_value(lines[key_line])))
    out = lines[:key_line] + [writer.key_field_line(lines[key_line])]
    ended = False
    for line in lines[key_line + 1 :]:
        if ended or not line.strip() or line.startswith("X:"):
            ended = True  # the reader's tune ends here: what follows is kept as written
            out.append(line)
        else:
            out.append(writer.body_line(line, out[-1]))
    result = "\n".join(out)
    return result + "\n" if text.endswith("\n") else result


def _field_value(line: str) -> str:
    return abc_reader.strip_comment(line).strip()[2:]


# ------------------------------------------------------------------------------------------------
# Spelling on the line of fifths


def _spelling(position: int, max_alter: int = 2) -> tuple[str, int]:
    """(letter, alteration) at `position`, respelled enharmonically beyond `max_alter`."""
    while True:
        letter, alter = theory.spelling(position)
        if abs(alter) <= max_alter:
            return letter, alter
        position += -12 if alter > 0 else 12


def _fifths_for(semitones: int, signature_fifths: int) -> int:
    """The fifths that move `semitones` and leave the key at most 6 sharps or flats."""
    base = (7 * semitones) % 12
    candidates = [base + 12 * k for k in (-2, -1, 0, 1)]
    return min(candidates, key=lambda f: (abs(signature_fifths + f) > 6, abs(f), f > 0))


# ------------------------------------------------------------------------------------------------
# Accidentals in force, as one reader sees them


@dataclass
class _Bar:
    """Accidentals written so far in the bar, and the spellings a tie carries over a bar line,
    under one reader's rule (abc_reader's per letter and octave, or abc2midi's per letter)."""

    per_octave: bool
    graces_count: bool
    written: dict = field(default_factory=dict)
    spellings: dict = field(default_factory=dict)  # of the element being read
    last: dict = field(default_factory=dict)
    carry: dict = field(default_factory=dict)

    def implied(self, letter: str, octave: int, signature: dict[str, int]) -> int:
        key = (letter, octave) if self.per_octave else letter
        if key in self.written:
            return self.written[key]
        return self.carry.get((letter, octave), signature[letter])

    def note(self, letter: str, octave: int, alter: int | None, signature: dict, grace=False):
        """The alteration a note sounds with; `alter` is its own accidental, None without."""
        if grace and not self.graces_count:
            return None
        if alter is not None:
            self.written[(letter, octave) if self.per_octave else letter] = alter
        sounded = self.implied(letter, octave, signature)
        if not grace:
            self.spellings[(letter, octave)] = sounded
        return sounded

    def element_done(self) -> None:
        self.last, self.spellings, self.carry = self.spellings, {}, {}

    def tie(self) -> None:
        self.carry = self.last

    def bar_line(self) -> None:
        self.written.clear()


def _readers() -> tuple[_Bar, _Bar]:
    return _Bar(per_octave=True, graces_count=False), _Bar(per_octave=False, graces_count=True)


# ------------------------------------------------------------------------------------------------
# The writer


class _Writer:
    """Reads the body with `abc_reader`'s token patterns and writes each token moved."""

    def __init__(self, semitones: int, key: Key):
        self.semitones = semitones
        self.fifths = _fifths_for(semitones, key.fifths)
        self.old_signature = key.signature
        self.new_signature = key.signature
        self.fifths_now = self.fifths
        self.old = _readers()  # the original text, by abc_reader's rule and abc2midi's
        self.new = _readers()  # the text being written
        self.handlers = {
            "note": self.on_note,
            "chord": self.on_chord,
            "grace": self.on_grace,
            "field": self.on_field,
            "text": self.on_text,
            "bar": self.on_bar,
            "tie": self.on_tie,
            "rest": self.on_rest,
            "measures": self.on_rest,
        }

    # Keys

    def key_field_line(self, line: str) -> str:
        code, comment = split_comment(line)
        return "K:" + self.key_value(code.strip()[2:]) + comment

    def key_value(self, value: str) -> str:
        """A K: value moved; sets the signatures of the old and new text from here on."""
        if not key_words(value):
            return value  # "K:clef=bass" alone keeps the key
        old_key = parse_key(value)
        moved_fifths = old_key.fifths + self.fifths
        self.fifths_now = self.fifths  # the tune's spelling, unless this key would pass 7
        if abs(moved_fifths) > 7:
            self.fifths_now += -12 if moved_fifths > 0 else 12
        if old_key.name in abc_reader.PIPE_KEYS:
            new_value = theory.note_name(*_spelling(2 + self.fifths_now, 1))
        elif old_key.name == "none":
            new_value = value
        else:
            new_value = self.moved_key_words(value)
        self.old_signature = old_key.signature
        self.new_signature = parse_key(new_value).signature
        for reader in (*self.old, *self.new):
            reader.bar_line()
        return new_value

    def moved_key_words(self, value: str) -> str:
        match = _KEY_ROOT.match(value)
        position = theory.position(match.group(2), theory.SIGNS[match.group(3)])
        root = theory.note_name(*_spelling(position + self.fifths_now, 1))
        words = value[match.end() :].split(" ")
        for index, word in enumerate(words):
            accidental = abc_reader.KEY_ACCIDENTAL.fullmatch(word)
            if accidental:
                old_alter = theory.ACCIDENTALS[accidental.group(1)]
                new_letter, new_alter = _spelling(
                    theory.position(accidental.group(2), old_alter) + self.fifths_now
                )
                case = str.lower if accidental.group(2).islower() else str.upper
                words[index] = theory.ACCIDENTAL_MARKS[new_alter] + case(new_letter)
        return match.group(1) + root + " ".join(words)

    # Lines

    def body_line(self, line: str, previous: str) -> str:
        if abc_reader.BODY_FIELD.match(line):
            if line.startswith("K:"):
                return self.key_field_line(line)
            return line  # other fields (T:, P:, w:, M:...) do not move
        code, comment = split_comment(line)
        continuation = ""
        if code.endswith("\\"):
            code, continuation = code[:-1], "\\"
        prefix = ""
        previous_code = split_comment(previous)[0].rstrip().removesuffix("\\").rstrip()
        if abc_reader.SPLIT_BAR.match(code) and previous_code.endswith(("|", ":")):
            # The second half of a bar line broken over two lines: read it with its first half.
            prefix = re.search(r"[|:\[\]]*$", previous_code).group(0)
        moved = self.tokens(prefix + code)
        return moved[len(prefix) :] + continuation + comment

    def tokens(self, code: str) -> str:
        pieces, pos = [], 0
        while pos < len(code):
            match = abc_reader.BODY_TOKEN.match(code, pos)
            if match is None:
                raise RenderError(f"cannot read {code[pos]!r} in {code[:40]!r}", "unsupported")
            handler = self.handlers.get(match.lastgroup)
            pieces.append(handler(match) if handler else match.group(0))
            pos = match.end()
        return "".join(pieces)

    # Tokens

    def on_note(self, match: re.Match) -> str:
        text = self.note(match.group("acc"), match.group("letter"), match.group("octave"))
        self.element_done()
        return text + match.group("length")

    def on_chord(self, match: re.Match) -> str:
        pieces, tied = [], False
        for part in abc_reader.CHORD_TOKEN.finditer(match.group("chord_body")):
            if part.group("letter") is None:
                pieces.append(part.group(0))
                continue
            note = self.note(part.group("acc"), part.group("letter"), part.group("octave"))
            pieces.append(note + part.group("length") + part.group("tie"))
            tied = tied or bool(part.group("tie"))
        self.element_done()
        if tied:
            self.tie()
        return "[" + "".join(pieces) + "]" + match.group("chord_length")

    def on_grace(self, match: re.Match) -> str:
        body = match.group("grace")[1:-1]
        pieces, pos = [], 0
        for part in abc_reader.NOTE.finditer(body):
            pieces.append(body[pos : part.start()])
            note = self.note(part.group("acc"), part.group("letter"), part.group("octave"), True)
            pieces.append(note + part.group("length"))
            pos = part.end()
        return "{" + "".join(pieces) + body[pos:] + "}"

    def on_field(self, match: re.Match) -> str:
        text = match.group("field")
        if text[1] != "K":
            return text
        return f"[K:{self.key_value(text[3:-1])}]"

    def on_text(self, match: re.Match) -> str:
        name = match.group("text")[1:-1]
        chord = _CHORD_NAME.match(name)
        if not chord:
            return match.group("text")
        moved = self.chord_note(chord.group("root"), chord.group("acc")) + chord.group("kind")
        if chord.group("bass"):
            moved += "/" + self.chord_note(chord.group("bass"), chord.group("bass_acc"))
        return f'"{moved}"'

    def chord_note(self, letter: str, accidental: str) -> str:
        position = theory.position(letter, theory.SIGNS[accidental]) + self.fifths_now
        return theory.note_name(*_spelling(position, 1))

    def on_bar(self, match: re.Match) -> str:
        for reader in (*self.old, *self.new):
            reader.bar_line()
        return match.group(0)

    def on_tie(self, match: re.Match) -> str:
        self.tie()
        return match.group(0)

    def tie(self) -> None:
        for reader in (*self.old, *self.new):
            reader.tie()

    def on_rest(self, match: re.Match) -> str:
        self.element_done()
        return match.group(0)

    def element_done(self) -> None:
        for reader in (*self.old, *self.new):
            reader.element_done()

    # One note

    def note(self, accidental: str | None, letter: str, marks: str, grace: bool = False) -> str:
        """The note moved: accidental, letter and octave marks (its length is kept)."""
        step = letter.upper()
        octave = theory.octave(letter, marks)
        written = None if accidental is None else theory.ACCIDENTALS[accidental]
        ours, theirs = (r.note(step, octave, written, self.old_signature, grace) for r in self.old)
        target = ours if ours is not None else theirs  # a grace note sounds only in abc2midi
        new_letter, new_alter = _spelling(theory.position(step, target) + self.fifths_now)
        pitch = 60 + 12 * octave + theory.STEPS[step] + target + self.semitones
        if not 0 <= pitch <= 127:
            raise RenderError(f"transposed, a note would be MIDI pitch {pitch}", "bad-note")
        new_octave, remainder = divmod(pitch - 60 - theory.STEPS[new_letter] - new_alter, 12)
        assert remainder == 0, (letter, marks, target, new_letter, new_alter)
        # What each reader would sound without an accidental, and what it must sound.
        wanted = [new_alter, new_alter + (theirs - target if theirs is not None else 0)]
        needs = written is not None or any(
            reader.implied(new_letter, new_octave, self.new_signature) != alter
            for reader, alter in zip(self.new, wanted, strict=True)
            if not (grace and not reader.graces_count)
        )
        new_written = new_alter if needs else None
        for reader in self.new:
            reader.note(new_letter, new_octave, new_written, self.new_signature, grace)
        mark = theory.ACCIDENTAL_MARKS[new_alter] if needs else ""
        return mark + theory.abc_note(new_letter, new_octave)
