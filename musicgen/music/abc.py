"""Split ABC tunebooks into tunes and normalise each tune to the text the model learns from.

What a tune is (ABC 2.1): it starts at an `X:` line and ends at the first blank line or the next
`X:` line; text between tunes is free text and is ignored. Its header runs up to and including the
first `K:` line; everything after is the body. So the normalised text (`Tune.text`) has no blank
lines.

What is kept:

- Header fields that change how the music sounds or is laid out: X, T, M, L, R, Q, P, V, U
  (user-defined symbols) and m (macros), rewritten as `X:value` without the space some transcribers
  put after the colon. They are ordered `X:` first (with the tune's original number), then the `T:`
  lines, then the others in their original order, then `K:` last, as ABC requires. Empty values are
  dropped. `+:` continuation lines are joined, with a space, to the field they continue.
- Fields that a tunebook's file header (its first block that is not only comments, before any
  `X:`) gives for all its tunes (M, L, R, Q, U, m), added to each tune that does not set them.
- Body lines of music as written, including `\\` line continuations and ABC escapes such as `\\'e`;
  body field lines and inline fields (`[K:...]`) for K, L, M, P, Q, V, U and m.

What is dropped: all other fields, in the header and in the body (inline ones too). These are
metadata about the tune or its transcription, not the music: Z, N, B, S, H, D, F, O, A, G, I, W/w
(lyrics), r (remarks), s (symbol lines), T and R inside the body, and C (composer): like the others
it names people, not notes. Also dropped: `%` comment lines, trailing `%` comments (`\\%` is a
literal percent), `%%` directives, and stray non-field text inside the header (such as a bare
`3/8=120`).

Whitespace: CRLF and CR become LF, tabs become spaces and trailing spaces are stripped. In music
lines, runs of spaces become one space and leading spaces go, and backquotes (ABC's "ignore me"
spacer) are removed: several collections pad bars into columns that way, which would teach the model
layout rather than music. A single space still breaks a beam, as ABC intends.

A tune without a `K:` value or without a single note in its body is a ParseError whose `reason` is
"no-key" or "no-notes"; a tune without a `T:` is fine (its title is "").
"""

from __future__ import annotations

import codecs
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from musicgen.errors import ParseError
from musicgen.music.abc_reader import COMMENT, FIELD_LINE

HEADER_FIELDS = frozenset("XTMLKRQPVUm")
BODY_FIELDS = frozenset("KLMPQVUm")
FILE_HEADER_FIELDS = frozenset("MLRQUm")

_INLINE_FIELD = re.compile(r"\[([A-Za-z]):[^\]\n]*\]")
# Letters A-G inside these are not notes: annotations and chord names, decorations, inline fields.
_NOT_NOTES = re.compile(r'"[^"\n]*"|![^!\n]*!|\+[^+\s]*\+|\[[A-Za-z]:[^\]\n]*\]')
_NOTE = re.compile(r"[A-Ga-g]")
_SPACES = re.compile(r" {2,}")
_MAIL_ENCODED = re.compile(r"=(?:\r?\n|20|09|3D)")
_MAIL_ESCAPE = re.compile(r"=(20|09|3D)")


@dataclass(frozen=True)
class Tune:
    """One normalised tune and where it came from.

    Attributes:
        text: normalised ABC, header lines then body, "\\n" line endings, ending in one "\\n".
        title: first T: value, "" if none.
        key: K: value as written (e.g. "D", "Ador", "G major").
        meter: M: value, "" if absent.
        source: provenance, e.g. "music21:oneills1850/0001-0050.abc#X:12" or
            "/path/to/file.abc#X:3".
    """

    text: str
    title: str
    key: str
    meter: str
    source: str


def read_text_file(path: str | Path) -> str:
    """Reads a tunebook as text, whatever its encoding.

    Tries UTF-8 (with or without a byte-order mark), then Windows-1252, then Latin-1. Windows-1252
    comes before Latin-1 because it agrees with it on every printable Latin-1 character and also
    reads the curly quotes Windows editors write, which Latin-1 would turn into control characters.

    Args:
        path: the file to read.

    Returns:
        The file's text, line endings untouched.

    Raises:
        ParseError: reason "binary" if the file holds NUL bytes (and is not UTF-16 with a byte-order
            mark) or is UTF-16 that does not decode, reason "unreadable" if it cannot be opened or
            read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ParseError(
            f"{path}: cannot read the file ({error.strerror}); check it exists and is readable",
            "unreadable",
        ) from error
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise ParseError(
                f"{path}: UTF-16 text cut short or damaged ({error.reason} at byte {error.start}); "
                "save it again, as UTF-8",
                "binary",
            ) from None
    if b"\0" in data:
        raise ParseError(
            f"{path}: not a text file (it holds NUL bytes); remove it or pass ABC text files only",
            "binary",
        )
    return undo_mail_encoding(_decode(data))


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def undo_mail_encoding(text: str) -> str:
    """Repairs text that went through e-mail's quoted-printable encoding, as some tunebooks did.

    The signs are a line ending in `=` (a soft line break) or `=20`/`=09`/`=3D` (an encoded space,
    tab or equals sign); none of them is valid ABC, where `=` is a natural and must precede a note.
    Text without those signs is returned unchanged.
    """
    if not _MAIL_ENCODED.search(text):
        return text
    text = re.sub(r"=\r?\n", "", text)
    return _MAIL_ESCAPE.sub(lambda m: chr(int(m[1], 16)), text)


def split_tunebook(text: str, source: str) -> tuple[list[Tune], list[ParseError]]:
    """Splits a tunebook into normalised tunes, collecting a ParseError for each unusable one.

    Args:
        text: the whole file's text.
        source: a label for the file; each tune's source is this plus "#X:<number>".

    Returns:
        The usable tunes in file order, and one ParseError per skipped tune (or a single one with
        reason "no-tunes" if the text has no `X:` line at all).
    """
    lines = _normalise_newlines(text).split("\n")
    defaults = _file_header_defaults(lines)
    tunes, errors = [], []
    for start, end in _tune_spans(lines):
        number = lines[start][2:].strip()
        try:
            tunes.append(_parse_lines(lines[start:end], f"{source}#X:{number}", defaults))
        except ParseError as error:
            errors.append(error)
    if not tunes and not errors:
        errors.append(
            ParseError(f"{source}: no tune found (no X: line); start each tune with X:", "no-tunes")
        )
    return tunes, errors


def parse_tune(raw: str, source: str) -> Tune:
    """Normalises the text of one tune (see the module docstring for the rules).

    Reads from the first non-blank line to the first blank line or the next `X:` line; a tune
    without an `X:` number gets `X:1`.

    Args:
        raw: the tune's ABC text.
        source: provenance for the Tune and for error messages.

    Returns:
        The normalised Tune.

    Raises:
        ParseError: reason "no-key" or "no-notes".
    """
    lines = _normalise_newlines(raw).split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    end = _tune_end(lines, start)
    return _parse_lines(lines[start:end], source, {})


def header_fields(text: str) -> dict[str, str]:
    """The first value of each field letter in a tune's header (up to and including `K:`).

    Args:
        text: one tune's ABC text, normalised or not.

    Returns:
        A dict such as {"X": "1", "T": "The Kesh", "M": "6/8", "L": "1/8", "K": "G"}.
    """
    fields: dict[str, str] = {}
    lines = _clean_lines(_normalise_newlines(text).split("\n"))
    for letter, value in _header_and_body(lines)[0]:
        fields.setdefault(letter, value)
    return fields


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _tune_spans(lines: list[str]) -> list[tuple[int, int]]:
    starts = [i for i, line in enumerate(lines) if line.startswith("X:")]
    return [(start, _tune_end(lines, start)) for start in starts]


def _tune_end(lines: list[str], start: int) -> int:
    for i in range(start + 1, len(lines)):
        if not lines[i].strip() or lines[i].startswith("X:"):
            return i
    return len(lines)


def _file_header_defaults(lines: list[str]) -> dict[str, str]:
    """Fields of the file header: the first block of the file that is not only comments, when it
    comes before any tune."""
    block = []
    for line in _clean_lines(list(itertools.takewhile(lambda x: not x.startswith("X:"), lines))):
        if line:
            block.append(line)
        elif block:
            break
    header, _ = _header_and_body(block)
    return {letter: value for letter, value in header if letter in FILE_HEADER_FIELDS and value}


def _clean_lines(lines: list[str]) -> list[str]:
    """Lines with tabs as spaces and comments and trailing spaces removed; comment lines dropped."""
    cleaned = []
    for line in lines:
        line = line.replace("\t", " ")
        without_comment = COMMENT.sub("", line).rstrip()
        if without_comment or not line.strip():
            cleaned.append(without_comment)
    return cleaned


def _header_and_body(lines: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(letter, value) pairs of the header up to the first K:, with `+:` joined; the body lines."""
    header: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        match = FIELD_LINE.match(line)
        if match is None:
            continue  # stray text is not valid header content
        letter, value = match[1], match[2].strip()
        if letter == "+":
            if header:
                header[-1] = (header[-1][0], f"{header[-1][1]} {value}".strip())
            continue
        header.append((letter, value))
        if letter == "K":
            return header, lines[i + 1 :]
    return header, []


def _parse_lines(lines: list[str], source: str, defaults: dict[str, str]) -> Tune:
    header, body = _header_and_body(_clean_lines(lines))
    header = [(letter, value) for letter, value in header if letter in HEADER_FIELDS]
    present = {letter for letter, _ in header}
    header += [(letter, value) for letter, value in defaults.items() if letter not in present]
    fields: dict[str, str] = {}
    for letter, value in header:
        fields.setdefault(letter, value)
    if not fields.get("K"):
        raise ParseError(
            f"{source}: no K: (key) field ends the header; add one such as K:D", "no-key"
        )
    body = _clean_body(body)
    if not _has_notes(body):
        raise ParseError(
            f"{source}: no notes after the K: line; write the melody there or remove the tune",
            "no-notes",
        )
    text = "\n".join([*_header_lines(header, fields), *body]) + "\n"
    return Tune(text, fields.get("T", ""), fields["K"], fields.get("M", ""), source)


def _header_lines(header: list[tuple[str, str]], fields: dict[str, str]) -> list[str]:
    titles = [f"T:{value}" for letter, value in header if letter == "T" and value]
    others = [f"{letter}:{value}" for letter, value in header if letter not in "XTK" and value]
    return [f"X:{fields.get('X') or '1'}", *titles, *others, f"K:{fields['K']}"]


def _clean_body(lines: list[str]) -> list[str]:
    """Music and musical field lines of the body; `+:` lines follow the field they continue."""
    kept: list[str] = []
    previous_field_kept = False
    for line in lines:
        if FIELD_LINE.match(line) is None:
            line = _INLINE_FIELD.sub(_keep_musical_inline_field, line)
            line = _SPACES.sub(" ", line.replace("`", "")).strip()
        # Matched again: removing an inline field can leave a line that reads as a field line.
        match = FIELD_LINE.match(line)
        if match is None:
            previous_field_kept = False
            if line:
                kept.append(line)
        elif match[1] == "+":
            if previous_field_kept:
                kept[-1] = f"{kept[-1]} {match[2].strip()}".rstrip()
        else:
            previous_field_kept = match[1] in BODY_FIELDS
            if previous_field_kept:
                kept.append(f"{match[1]}:{match[2].strip()}")
    return kept


def _keep_musical_inline_field(match: re.Match) -> str:
    return match[0] if match[1] in BODY_FIELDS else ""


def _has_notes(body: list[str]) -> bool:
    music = (line for line in body if FIELD_LINE.match(line) is None)
    return any(_NOTE.search(_NOT_NOTES.sub("", line)) for line in music)
