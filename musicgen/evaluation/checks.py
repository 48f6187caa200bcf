"""Per-tune validity checks for any ABC text, and the tune as written: its bars and notes.

Each check answers one question about one tune and returns None when it passes or a short reason
when it does not. The headline checks (`HEADLINE_CHECKS`) are the ones a generated tune must pass
to count as valid; each passes at least 99% of the real tunes of the bundled corpus (a test holds
them to that). abc2midi's verdict is reported beside them but kept out of the headline: it prints
an error for folk-ABC habits that real tunes use (a first ending `[1` placed before `|:`, for one).

    header   X:, T:, M: and K: present in the header (L: may be left to its ABC default)
    parses   musicgen's ABC reader (`abc_reader`) reads every character of the body
    renders  render.py plays it to MIDI with at least one note (repeats expanded, every note in
             MIDI's range): what `musicgen generate` writes as a .mid file
    bars     the bars add up to the meter, allowing a pickup, a short last bar and the short bars
             either side of a repeat, ending or section line (which together make one bar), and
             allowing one bar in five to be off, as transcription slips in real tunes are; free
             meter (M:none) has no bar length to check
    repeats  every `|:` is closed by `:|` (or `::`) before the next `|:` (a last section may end
             `|]` instead), and every numbered ending is played on some pass
    abc2midi abc2midi reads the tune without printing an error line (when abc2midi is installed)

The tune as written (`read_written`) is read by `abc_reader`, as render.py reads it for the MIDI:
lengths resolve tuplets, broken rhythm and the unit length exactly as the MIDI does, grace notes
take no time, chords last as long as their first note.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from musicgen.errors import RenderError
from musicgen.music import render, theory
from musicgen.music.abc import header_fields
from musicgen.music.abc_reader import (
    WHOLE,
    Bar,
    Element,
    KeyChange,
    MeterChange,
    UnitChange,
    read_body,
    read_tune_setup,
)

HEADLINE_CHECKS = ("header", "parses", "renders", "bars", "repeats")
ABC2MIDI_CHECK = "abc2midi"
REQUIRED_FIELDS = ("X", "T", "M", "K")  # L: has a default (ABC 2.1: 1/16 below 3/4, else 1/8)
# Real tunes hold transcription slips: one O'Neill or Ryan tune in twenty has a bar a note too long
# or short. Allowing one bar in five keeps the check at 99% of real tunes while a tune whose bars
# wander (as an undertrained model's do) still fails.
BARS_OFF_ALLOWED = 0.2


@dataclass(frozen=True)
class WrittenBar:
    """One bar as written (repeats not expanded).

    Attributes:
        length: whole notes of music in the bar.
        meter: whole notes the meter asks for, None in free meter.
        elements: (MIDI pitches, length in whole notes) of each note, chord or rest.
        boundary_before: a repeat or section line, an ending, a part, or a key, meter or tempo
            change comes right before the bar.
        boundary_after: one comes right after it.
        measures: > 0 for a multi-measure rest (`Z4`), which stands for that many whole bars.
    """

    length: Fraction
    meter: Fraction | None
    elements: tuple[tuple[tuple[int, ...], Fraction], ...]
    boundary_before: bool
    boundary_after: bool
    measures: int = 0


@dataclass(frozen=True)
class WrittenNote:
    """A sounding note as written: pitch, length in whole notes, and whether the key has it."""

    pitch: int
    length: Fraction
    in_scale: bool


@dataclass(frozen=True)
class WrittenTune:
    """A tune as written: what the statistics and the bar and repeat checks read.

    Attributes:
        key: the starting key as `abc_reader.Key` names it ("G", "Am", "A Dorian", "none").
        meter: the starting M: value ("6/8", "C|", "none").
        bars: the bars that hold music, in written order.
        notes: every sounding note (chords give one per pitch).
        unclosed_repeat: a reason when a `|:` is never closed, else None.
    """

    key: str
    meter: str
    bars: tuple[WrittenBar, ...]
    notes: tuple[WrittenNote, ...]
    unclosed_repeat: str | None


def read_written(text: str) -> WrittenTune:
    """Reads one ABC tune as written: bars, notes and the repeat structure.

    Raises:
        RenderError: the tune cannot be read (the same reasons as `render.abc_to_performance`).
    """
    setup = read_tune_setup(text)
    tokens = read_body(setup)
    bars, notes = _bars_and_notes(tokens, setup.bar_ticks, setup.header.key.signature)
    return WrittenTune(
        key=setup.header.key.name,
        meter=setup.header.meter_text,
        bars=tuple(bars),
        notes=tuple(notes),
        unclosed_repeat=_unclosed_repeat(tokens),
    )


def _bars_and_notes(tokens, bar_ticks, signature) -> tuple[list[WrittenBar], list[WrittenNote]]:
    bars: list[WrittenBar] = []
    notes: list[WrittenNote] = []
    elements: list = []
    scale = theory.scale(signature)
    boundary = True  # the tune's start
    for token in [*tokens, Bar(section_end=True)]:  # the tune's end closes the last bar
        if isinstance(token, Element):
            length = Fraction(token.length, WHOLE)
            elements.append((token.pitches, length, token.measures))
            notes += [WrittenNote(p, length, p % 12 in scale) for p in token.pitches]
            continue
        if isinstance(token, UnitChange):
            continue  # lengths are already in whole notes: a new unit is no boundary
        # Every other token (an ending, a part, a key, meter or tempo change) is a boundary.
        marks_boundary = not isinstance(token, Bar) or (
            token.start_repeat or token.end_repeat or token.section_end
        )
        if isinstance(token, Bar) and elements:
            bars.append(_bar(elements, bar_ticks, boundary, marks_boundary))
            elements, boundary = [], False
        if isinstance(token, KeyChange) and token.key is not None:
            scale = theory.scale(token.key.signature)
        elif isinstance(token, MeterChange):
            bar_ticks = token.bar_ticks
        if marks_boundary:
            boundary = True
            if bars and not elements:
                bars[-1] = _with_boundary_after(bars[-1])
    return bars, notes


def _bar(elements, bar_ticks, boundary_before: bool, boundary_after: bool) -> WrittenBar:
    return WrittenBar(
        length=sum((length for _, length, _ in elements), Fraction(0)),
        meter=None if bar_ticks is None else Fraction(bar_ticks, WHOLE),
        elements=tuple((pitches, length) for pitches, length, _ in elements),
        boundary_before=boundary_before,
        boundary_after=boundary_after,
        measures=sum(measures for _, _, measures in elements),
    )


def _with_boundary_after(bar: WrittenBar) -> WrittenBar:
    if bar.boundary_after:
        return bar
    return WrittenBar(bar.length, bar.meter, bar.elements, bar.boundary_before, True, bar.measures)


def _unclosed_repeat(tokens) -> str | None:
    """A reason when a `|:` is left open, else None.

    A `|:` must be closed by `:|` or `::` before the next `|:`. At the end of the tune, a `|:` may
    stay open when no note follows it or when the tune ends on a section line (`||` or `|]`): real
    tunes write a last section that way (`|: ... |]`, about one O'Neill tune in a hundred).
    """
    open_repeat = notes_since = False
    last_bar = None
    for token in tokens:
        if isinstance(token, Element):
            notes_since = True
            last_bar = None
        if not isinstance(token, Bar):
            continue
        last_bar = token
        if token.end_repeat:
            open_repeat = False
        if token.start_repeat:
            if open_repeat and notes_since:
                return "a |: is followed by another |: with no :| between them"
            open_repeat, notes_since = True, False
    if open_repeat and notes_since and not (last_bar is not None and last_bar.section_end):
        return "a |: is never closed by a :|"
    return None


# ------------------------------------------------------------------------------------------------
# The checks


def check_header(text: str) -> str | None:
    """None when the header has X:, T:, M: and K: (each with a value), else which are missing."""
    fields = header_fields(text)
    missing = [name for name in REQUIRED_FIELDS if not fields.get(name, "").strip()]
    return f"no {', '.join(name + ':' for name in missing)} in the header" if missing else None


def bars_off(tune: WrittenTune) -> tuple[list[int], int]:
    """(0-based indices of the bars that do not add up to the meter, bars checked).

    Bars in free meter and multi-measure rests are not checked; see the module docstring for which
    bars may be short.
    """
    bars = tune.bars
    off, checked = [], 0
    for index, bar in enumerate(bars):
        if bar.meter is None or bar.measures:
            continue
        checked += 1
        if bar.length == bar.meter:
            continue
        if bar.length < bar.meter and _may_be_short(bars, index):
            continue
        off.append(index)
    return off, checked


def check_bars(tune: WrittenTune) -> str | None:
    """None when the bars add up to the meter, all but at most `BARS_OFF_ALLOWED` of them.

    Returns:
        None, or a reason naming the first bar (1-based, as written) that does not add up.
    """
    off, checked = bars_off(tune)
    if len(off) <= BARS_OFF_ALLOWED * checked:
        return None
    bar = tune.bars[off[0]]
    return (
        f"{len(off)} of {checked} bars do not add up to the meter, e.g. bar {off[0] + 1} holds "
        f"{bar.length} of a whole note where the meter asks {bar.meter}"
    )


def _may_be_short(bars: Sequence[WrittenBar], index: int) -> bool:
    """A pickup, a last bar, a bar beside a repeat or section line, or half of a split bar."""
    bar = bars[index]
    if index in (0, len(bars) - 1) or bar.boundary_before or bar.boundary_after:
        return True
    neighbours = [bars[i] for i in (index - 1, index + 1) if 0 <= i < len(bars)]
    return any(other.length + bar.length == bar.meter for other in neighbours)


def check_repeats(tune: WrittenTune, render_error: RenderError | None) -> str | None:
    """None when repeats are balanced: every `|:` closed, every ending played on some pass.

    Args:
        tune: the tune as written.
        render_error: what rendering the tune raised, if anything (render.py finds endings that
            are never played while it expands the repeats).
    """
    if tune.unclosed_repeat:
        return tune.unclosed_repeat
    if render_error is not None and render_error.reason == "unbalanced-repeat":
        return str(render_error)
    return None


def check_tune(text: str) -> tuple[dict[str, str | None], WrittenTune | None]:
    """Runs the headline checks on one tune.

    Args:
        text: one ABC tune.

    Returns:
        ({check name: None if passed else reason} in `HEADLINE_CHECKS` order, the tune as
        written or None when it does not parse).
    """
    results: dict[str, str | None] = {"header": check_header(text)}
    try:
        tune = read_written(text)
        results["parses"] = None
    except RenderError as error:
        tune = None
        results["parses"] = f"{error.reason}: {error}"
    render_error = None
    try:
        render.abc_to_performance(text)  # raises unless it plays at least one note
    except RenderError as error:
        render_error = error
    results["renders"] = None if render_error is None else f"{render_error.reason}: {render_error}"
    if tune is None:
        results["bars"] = results["repeats"] = "does not parse"
    else:
        results["bars"] = check_bars(tune)
        results["repeats"] = check_repeats(tune, render_error)
    return results, tune


# ------------------------------------------------------------------------------------------------
# abc2midi

_ABC2MIDI_ERROR = re.compile(r"^Error in line-char (\d+)-\d+ : (.*)$", re.MULTILINE)


def abc2midi_available() -> bool:
    return shutil.which("abc2midi") is not None


def abc2midi_errors(texts: Sequence[str], chunk: int = 100) -> list[str | None] | None:
    """abc2midi's first error line for each tune (None when it printed none).

    Tunes go through abc2midi `chunk` at a time, numbered X:1, X:2... in one file; each error line
    names a line of that file, which tells whose it is. abc2midi sometimes stops part way through
    a file after a garbled tune (a buffer overflow, or exit status 1, after "Too many notes in
    chord", not every time): a chunk it does not finish is run again a tune at a time, and a tune
    it stops on gets that as its error.

    Returns:
        One entry per tune, or None when abc2midi is not installed.
    """
    if not abc2midi_available():
        return None
    errors: list[str | None] = []
    with tempfile.TemporaryDirectory(prefix="musicgen-abc2midi-") as folder:
        for start in range(0, len(texts), chunk):
            part = list(texts[start : start + chunk])
            found = _run_abc2midi(part, Path(folder))
            if found is None:
                found = [
                    (_run_abc2midi([text], Path(folder)) or ["abc2midi timed out"])[0]
                    for text in part
                ]
            errors += found
    return errors


def _run_abc2midi(texts: Sequence[str], folder: Path) -> list[str | None] | None:
    """First error line per tune from one abc2midi run; None when it timed out, or stopped before
    the end of a file of several tunes."""
    lines: list[str] = []
    owner: list[int] = []  # tune index of each line of the file
    for index, text in enumerate(texts):
        body = [line for line in text.splitlines() if not line.startswith("X:")]
        tune_lines = [f"X:{index + 1}", *body, ""]
        lines += tune_lines
        owner += [index] * len(tune_lines)
    path = folder / "tunes.abc"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        done = subprocess.run(
            ["abc2midi", path.name],
            cwd=folder,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 and len(texts) > 1:
        return None  # it stopped part way: the tunes after the one it stopped on went unread
    errors: list[str | None] = [None] * len(texts)
    for match in _ABC2MIDI_ERROR.finditer(done.stdout + done.stderr):
        line = int(match[1]) - 1
        if 0 <= line < len(owner) and errors[owner[line]] is None:
            errors[owner[line]] = match[2].strip()
    if done.returncode != 0 and errors[0] is None:
        errors[0] = f"abc2midi stopped with exit status {done.returncode}"
    return errors
