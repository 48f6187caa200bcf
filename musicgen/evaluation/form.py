"""The form of a tune: where it ends (the final note against its key's tonic) and its sections.

A folk musician hears two things at once that note statistics miss: whether the last note is home
(the tonic of the key) and whether the tune has the usual shape (two parts of eight bars, each
played twice). This module reads both from the tune as written, with `abc_reader` (the same
tokens the checks read), and compares a set of generated tunes with real ones.

Choices, each measured on the bundled corpus (see README, `musicgen evaluate`):

- **Key and tonic.** The key in force at the final note (the header's `K:` or a later inline one).
  The tonic is the key's root whatever its mode: `K:Ador` has tonic A, `K:Emin` E, `K:Dmix` D,
  `K:Bphr` B. `K:none` and the Highland-pipe keys `K:HP` / `K:Hp` name no tonic (pipe tunes are in
  A mixolydian or D major with the same signature): such tunes are counted apart ("no tonic") and
  left out of the tonic share.
- **Final note.** The last note played (repeats expanded, endings chosen, `P:` order followed); of a
  final chord or double stop, the highest note, which is the melody in fiddle writing (drones sit
  below). Its scale degree, 1-7, counts letters of the key's scale up from the tonic, so in
  `K:Ador` a C is degree 3; a note outside the key's scale is "chromatic".
- **Sections.** A section ends at a repeat sign or a section line: `:|`, `::`, `|:`, `||`, `|]`
  and `[|` (a final `|]` or `:|` closes the last one, and a tune with none is one section). A `:|`
  right before a numbered ending does not end the section: the endings belong to it, up to the
  next repeat sign or section line. Less than a bar of music between two such lines (a pickup
  before `|:`, a note after the last `:|`) is no section of its own: it joins its neighbour.
  A part change (`P:B` in the body) also ends a section.
- **Bars.** Music in bars of the meter in force (whole notes over the meter's length), so a
  pickup and the short last bar that completes it count as one bar, and a transcription slip of a
  note too many or too few does not add a bar; a section's count is rounded to the nearest bar (a
  half bar rounds down). Of a section's numbered endings only the first counts (a section played
  once is its body and one ending); the others are alternatives of the same bars. In free meter
  (`M:none`) each bar line closes a bar. A tune's length is the sum of its sections' bars, so an
  AABB reel of two eight-bar parts is 16 bars long.
- **Repeated section.** One that holds a `:|` (or `::`), so it is played at least twice.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from musicgen.errors import RenderError
from musicgen.evaluation.stats import jensen_shannon, shares, total_variation
from musicgen.music import render, theory
from musicgen.music.abc_reader import (
    PIPE_KEYS,
    Bar,
    Element,
    Ending,
    Key,
    KeyChange,
    MeterChange,
    Part,
    UnitChange,
    read_body,
    read_tune_setup,
)

NO_TONIC = "no tonic"
CHROMATIC = "chromatic"
DEGREES = ("1", "2", "3", "4", "5", "6", "7", CHROMATIC, NO_TONIC)
SECTIONS_TOP = 6  # sections per tune from here on share the last label ("6+")
SECTION_BARS_TOP = 33  # bars per section from here on share the last label
LENGTH_BIN = 4  # bars per bin of the tune-length histogram
LENGTH_TOP = 64


@dataclass(frozen=True)
class Section:
    """One section as written: its bars (see the module docstring) and whether it is repeated."""

    bars: int
    repeated: bool


@dataclass(frozen=True)
class TuneForm:
    """What `read_form` finds in one tune.

    Attributes:
        key: the key in force at the final note, as `abc_reader.Key` names it ("G", "Am",
            "A Dorian").
        tonic: the tonic's pitch class (0 = C), None when the key names no tonic.
        final_pitch: MIDI pitch of the last note played, None when the tune plays no note.
        final_degree: its scale degree "1"-"7", "chromatic", or "no tonic".
        sections: the sections in written order.
    """

    key: str
    tonic: int | None
    final_pitch: int | None
    final_degree: str
    sections: tuple[Section, ...]

    @property
    def ends_on_tonic(self) -> bool | None:
        """True when the final note is the tonic (in any octave), None without a tonic or note."""
        if self.tonic is None or self.final_pitch is None:
            return None
        return self.final_pitch % 12 == self.tonic

    @property
    def length_bars(self) -> int:
        return sum(section.bars for section in self.sections)


# ------------------------------------------------------------------------------------------------
# Reading one tune


def read_form(text: str) -> TuneForm:
    """Reads one ABC tune's ending and sections.

    Raises:
        RenderError: the tune cannot be read (the reasons of `render.abc_to_performance`).
    """
    setup = read_tune_setup(text)
    # A unit change, or a K: that sets only a clef, changes nothing here; left in, they would
    # end the look for an ending after a `:|` and after a section line.
    tokens = [
        token
        for token in read_body(setup)
        if not isinstance(token, UnitChange)
        and not (isinstance(token, KeyChange) and token.key is None)
    ]
    key, final_pitch = _final_note(tokens, setup.header)
    tonic = _tonic(key)
    return TuneForm(
        key=key.name,
        tonic=tonic,
        final_pitch=final_pitch,
        final_degree=_degree(final_pitch, tonic, key),
        sections=tuple(_sections(tokens, setup.bar_ticks)),
    )


def _final_note(tokens: list, header) -> tuple[Key, int | None]:
    """The key in force at the last note played, and that note's pitch (the highest of a chord)."""
    try:
        played = render.play_order(tokens, header.part_order)
    except RenderError:
        played = tokens  # an ending never played: read the tune as written
    key, final_key, final_pitch = header.key, header.key, None
    for token in played:
        if isinstance(token, KeyChange):
            key = token.key
        elif isinstance(token, Element) and token.pitches:
            final_key, final_pitch = key, max(token.pitches)
    return final_key, final_pitch


def _tonic(key: Key) -> int | None:
    """The root's pitch class; None for `K:none` and the pipe keys."""
    name = key.name
    if name == "none" or name in PIPE_KEYS or name[:1] not in theory.LETTERS:
        return None
    alter = theory.SIGNS.get(name[1:2], 0)
    return (theory.STEPS[name[0]] + alter) % 12


def _degree(pitch: int | None, tonic: int | None, key: Key) -> str:
    if tonic is None or pitch is None:
        return NO_TONIC
    start = theory.LETTERS.index(key.name[0])
    for degree in range(7):
        letter = theory.LETTERS[(start + degree) % 7]
        if (theory.STEPS[letter] + key.signature[letter]) % 12 == pitch % 12:
            return str(degree + 1)
    return CHROMATIC


@dataclass
class _Open:
    """A section being read."""

    measures: Fraction = Fraction(0)  # bars of the meter, body and first ending
    free_bars: int = 0  # bar lines closing music, in free meter
    repeated: bool = False
    later_ending: bool = False  # inside a second (or later) ending: its bars do not count
    music: bool = False  # notes since the last bar line


def _sections(tokens: list, bar_ticks: int | None) -> list[Section]:
    sections: list[tuple[Fraction, bool]] = []  # (bars, repeated), merged below
    current = _Open()
    for index, token in enumerate(tokens):
        if isinstance(token, Element):
            if not current.later_ending:
                if bar_ticks is None:
                    current.music = True
                else:
                    current.measures += Fraction(token.length, bar_ticks)
        elif isinstance(token, MeterChange):
            bar_ticks = token.bar_ticks
        elif isinstance(token, Ending):
            current.later_ending = min(token.passes) > 1
        elif isinstance(token, Part):
            current = _close(current, sections)
        elif isinstance(token, Bar):
            current.free_bars += current.music
            current.music = False
            current.repeated = current.repeated or token.end_repeat
            ends = token.start_repeat or token.end_repeat or token.section_end
            if ends and not _ending_follows(tokens, index):
                current = _close(current, sections)
    current.free_bars += current.music
    _close(current, sections)
    return _merged(sections)


def _ending_follows(tokens: list, index: int) -> bool:
    """A numbered ending comes next, after any further bar lines."""
    for token in tokens[index + 1 :]:
        if isinstance(token, Ending):
            return True
        if not isinstance(token, Bar):
            return False
    return False


def _close(current: _Open, sections: list[tuple[Fraction, bool]]) -> _Open:
    bars = current.measures + current.free_bars
    if bars > 0:
        sections.append((bars, current.repeated))
    elif current.repeated and sections:
        sections[-1] = (sections[-1][0], True)  # a `:|` right after a section line
    return _Open()


def _merged(sections: list[tuple[Fraction, bool]]) -> list[Section]:
    """Less than a bar joins the next section (a pickup), or the previous one at the end."""
    merged: list[list] = []
    carry = Fraction(0)
    for bars, repeated in sections:
        if bars + carry < 1:
            carry += bars
            continue
        merged.append([bars + carry, repeated])
        carry = Fraction(0)
    if carry and merged:
        merged[-1][0] += carry
    elif carry:
        merged.append([carry, False])
    half = Fraction(1, 2)
    return [Section(max(1, math.ceil(bars - half)), repeated) for bars, repeated in merged]


def read_forms(texts: Iterable[str]) -> list[TuneForm]:
    """`read_form` of each text that can be read; the others are left out."""
    forms = []
    for text in texts:
        try:
            forms.append(read_form(text))
        except RenderError:
            continue
    return forms


# ------------------------------------------------------------------------------------------------
# A set of tunes


def distributions(forms: Sequence[TuneForm]) -> dict[str, dict[str, float]]:
    """The form distributions, each label -> share.

    Returns:
        final_degree (of each tune's final note, in DEGREES order), sections_per_tune ("1"...
        "6+"), bars_per_section (of every section of every tune, "33+" from 33 on) and length_bars
        (bars per tune in bins of LENGTH_BIN).
    """
    degrees = Counter(form.final_degree for form in forms if form.final_pitch is not None)
    sections = Counter(_top(len(form.sections), SECTIONS_TOP) for form in forms)
    bars = Counter(_top(s.bars, SECTION_BARS_TOP) for form in forms for s in form.sections)
    lengths = Counter(_length_bin(form.length_bars) for form in forms)
    degree_shares = shares(degrees)
    return {
        "final_degree": {label: degree_shares.get(label, 0.0) for label in DEGREES}
        if degree_shares
        else {},
        "sections_per_tune": _sorted_shares(sections),
        "bars_per_section": _sorted_shares(bars),
        "length_bars": _sorted_shares(lengths),
    }


def _top(value: int, top: int) -> str:
    return f"{top}+" if value >= top else str(value)


def _length_bin(bars: int) -> str:
    if bars >= LENGTH_TOP:
        return f"{LENGTH_TOP}+"
    low = 1 + (bars - 1) // LENGTH_BIN * LENGTH_BIN if bars > 0 else 0
    return f"{low}-{low + LENGTH_BIN - 1}" if bars > 0 else "0"


def _sorted_shares(counts: Counter) -> dict[str, float]:
    """Shares in the order of their labels' leading numbers (a histogram's x axis)."""
    ordered = shares(counts)
    return dict(sorted(ordered.items(), key=lambda item: int(item[0].split("-")[0].rstrip("+"))))


def figures(forms: Sequence[TuneForm]) -> dict[str, float | int | None]:
    """Single figures of a set of tunes; None where nothing was measured.

    Returns:
        tunes (read), tonic_ending_share (of tunes whose key names a tonic), two_section_share and
        three_plus_section_share (of tunes), mean_sections, mean_bars_per_section,
        repeated_section_share (of all sections), mean_length_bars and median_length_bars.
    """
    endings = [form.ends_on_tonic for form in forms if form.ends_on_tonic is not None]
    counts = [len(form.sections) for form in forms]
    sections = [section for form in forms for section in form.sections]
    lengths = [form.length_bars for form in forms]
    return {
        "tunes": len(forms),
        "tonic_ending_share": _mean(endings),
        "two_section_share": _mean([count == 2 for count in counts]),
        "three_plus_section_share": _mean([count >= 3 for count in counts]),
        "mean_sections": _mean(counts),
        "mean_bars_per_section": _mean([section.bars for section in sections]),
        "repeated_section_share": _mean([section.repeated for section in sections]),
        "mean_length_bars": _mean(lengths),
        "median_length_bars": statistics.median(lengths) if lengths else None,
    }


def _mean(values: Sequence) -> float | None:
    return sum(values) / len(values) if values else None


# Shares are compared by their difference in points; means and medians by their relative difference.
_SHARE_FIGURES = ("tonic_ending_share", "two_section_share", "three_plus_section_share",
                  "repeated_section_share")  # fmt: skip


def compare(generated: Sequence[TuneForm], corpus: Sequence[TuneForm]) -> dict:
    """Generated tunes' form against the corpus's, each figure and distribution with a distance.

    Returns:
        {"figures": {name: {"generated", "corpus", and "difference" (generated minus corpus) for
        a share or "relative_difference" (that over the corpus's) for a mean}},
        "distributions": {name: {"generated", "corpus", "total_variation", "jensen_shannon"}}}.
        A distance is None when either side has nothing to measure.
    """
    ours, theirs = figures(generated), figures(corpus)
    compared_figures = {}
    for name in ours:
        if name == "tunes":
            compared_figures[name] = {"generated": ours[name], "corpus": theirs[name]}
            continue
        a, b = ours[name], theirs[name]
        entry = {"generated": a, "corpus": b}
        if name in _SHARE_FIGURES:
            entry["difference"] = None if a is None or b is None else a - b
        else:
            entry["relative_difference"] = None if a is None or not b else (a - b) / b
        compared_figures[name] = entry
    ours_d, theirs_d = distributions(generated), distributions(corpus)
    compared = {}
    for name in ours_d:
        measured = bool(ours_d[name]) and bool(theirs_d[name])
        compared[name] = {
            "generated": ours_d[name],
            "corpus": theirs_d[name],
            "total_variation": total_variation(ours_d[name], theirs_d[name]) if measured else None,
            "jensen_shannon": jensen_shannon(ours_d[name], theirs_d[name]) if measured else None,
        }
    return {"figures": compared_figures, "distributions": compared}


def compare_texts(generated: Sequence[str], corpus: Sequence[str]) -> dict:
    """`compare` of ABC texts; tunes that cannot be read are left out (and counted in "tunes")."""
    return compare(read_forms(generated), read_forms(corpus))
