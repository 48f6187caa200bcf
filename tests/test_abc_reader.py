"""The ABC reader (`musicgen.music.abc_reader`): the header, and the body's tokens of real tunes,
checked against music21's reading of the same tunes."""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from pathlib import Path

import pytest

from musicgen.data.corpus import music21_corpus_folder
from musicgen.errors import RenderError
from musicgen.music import abc_reader, theory
from musicgen.music.abc import read_text_file, split_tunebook
from musicgen.music.abc_reader import (
    WHOLE,
    Bar,
    Element,
    Ending,
    KeyChange,
    MeterChange,
    Part,
    Tempo,
    UnitChange,
    read_body,
    read_tune_setup,
)

DATA = Path(__file__).resolve().parent / "data"
NORTHERN_LASSES = read_text_file(DATA / "render" / "northern_lasses_oneills_1532.abc")


def oneills_tune(file_name: str, number: int) -> str:
    """One tune of O'Neill's 1850 in music21's corpus, normalised as the corpus reads it."""
    path = music21_corpus_folder() / "oneills1850" / file_name
    tunes, _ = split_tunebook(read_text_file(path), "oneills")
    return next(tune.text for tune in tunes if tune.source.endswith(f"#X:{number}"))


# The Fox Chase changes unit length twice, then key and meter in the body: K:D M:3/4 ... K:G M:C
# ... M:6/8, M:C, M:9/8, each on a line of its own.
FOX_CHASE = oneills_tune("1801-1850.abc", 1850)


def tokens(text: str) -> list:
    return read_body(read_tune_setup(text))


def tune(body: str, header: str = "M:4/4\nL:1/8\nK:C") -> str:
    return f"X:1\nT:t\n{header}\n{body}\n"


@functools.cache
def music21_score(text: str):
    """music21's reading of a tune, told to carry an accidental to the end of the bar in its
    octave (ABC 2.1, and our reader)."""
    music21 = pytest.importorskip("music21")
    directives = "%abc-2.1\n%%propagate-accidentals octave\n"
    return music21.converter.parse(directives + text, format="abc").flatten()


def music21_elements(text: str) -> list[tuple[tuple[int, ...], Fraction]]:
    """(MIDI pitches, quarter notes) of each note, chord and rest as music21 reads them."""
    music21 = pytest.importorskip("music21")
    elements = []
    for element in music21_score(text).notesAndRests:
        if isinstance(element, music21.harmony.ChordSymbol) or element.duration.isGrace:
            continue
        pitches = () if element.isRest else tuple(pitch.midi for pitch in element.pitches)
        elements.append((pitches, Fraction(element.quarterLength).limit_denominator(1000)))
    return elements


def our_elements(text: str) -> list[tuple[tuple[int, ...], Fraction]]:
    return [
        (token.pitches, Fraction(4 * token.length, WHOLE))
        for token in tokens(text)
        if isinstance(token, Element)
    ]


def test_a_tune_with_key_meter_and_unit_changes_reads_as_music21_reads_it():
    assert our_elements(FOX_CHASE) == music21_elements(FOX_CHASE)  # 725 notes, chords and rests


def test_key_meter_and_unit_changes_are_tokens_where_music21_has_them():
    score = music21_score(FOX_CHASE)
    changes = [t for t in tokens(FOX_CHASE) if isinstance(t, KeyChange | MeterChange | UnitChange)]
    keys = [change.key.fifths for change in changes if isinstance(change, KeyChange)]
    assert [1, *keys] == [
        signature.sharps for signature in score.getElementsByClass("KeySignature")
    ]
    meters = [Fraction(c.bar_ticks, WHOLE) for c in changes if isinstance(c, MeterChange)]
    expected = score.getElementsByClass("TimeSignature")
    assert [1, *meters] == [Fraction(meter.barDuration.quarterLength) / 4 for meter in expected]
    units = [Fraction(c.unit_ticks, WHOLE) for c in changes if isinstance(c, UnitChange)]
    assert units == [Fraction(1, 16), Fraction(1, 8)]
    assert [c.beat_ticks for c in changes if isinstance(c, MeterChange)] == [
        WHOLE // 4, WHOLE // 4, WHOLE * 3 // 8, WHOLE // 4, WHOLE * 3 // 8
    ]  # fmt: skip


def test_inline_fields_read_as_field_lines_do():
    # The Fox Chase with each body field line moved into the next music line as `[K:D]`.
    lines, pending, inline = FOX_CHASE.splitlines(), "", []
    key_line = read_tune_setup(FOX_CHASE).header.key_line
    for line in lines[key_line + 1 :]:
        if line[:2] in ("K:", "M:", "L:"):
            pending += f"[{line}]"
        else:
            inline.append(pending + line)
            pending = ""
    inline_text = "\n".join([*lines[: key_line + 1], *inline]) + "\n"
    assert inline_text.count("[K:") == 2 and inline_text.count("[M:") == 5
    assert tokens(inline_text) == tokens(FOX_CHASE)


def test_the_header_of_a_real_tune():
    setup = read_tune_setup(NORTHERN_LASSES)
    header = setup.header
    assert (header.title, header.meter_text, header.unit_text, header.key.name) == (
        "Northern Lasses", "C|", "1/8", "G"
    )  # fmt: skip
    lines = NORTHERN_LASSES.splitlines()
    assert lines[header.key_line] == "K:G"
    assert setup.body[0] == (header.key_line + 2, lines[header.key_line + 1])
    assert (setup.meter, setup.beat, setup.unit) == (1, Fraction(1, 2), Fraction(1, 8))
    assert (setup.bar_ticks, setup.beat_ticks, setup.unit_ticks) == (WHOLE, WHOLE // 2, WHOLE // 8)


@pytest.mark.parametrize(
    ("meter", "unit"),
    [("2/4", Fraction(1, 16)), ("3/4", Fraction(1, 8)), ("6/8", Fraction(1, 8)),
     ("none", Fraction(1, 8)), ("C", Fraction(1, 8))],
)  # fmt: skip
def test_the_default_unit_length(meter, unit):
    setup = read_tune_setup(tune("ABcd", header=f"M:{meter}\nK:D"))
    assert setup.unit == unit


def test_a_key_field_with_only_a_clef_keeps_the_key():
    body = tokens(tune("^F F [K:clef=bass] F [K:D] F =F | F", header="M:4/4\nL:1/8\nK:C"))
    keys = [token.key for token in body if isinstance(token, KeyChange)]
    assert keys[0] is None and keys[1].name == "D" and keys[1].signature["F"] == 1
    # The clef keeps the bar's ^F; the new key clears it and sounds F#, until =F and the bar line.
    pitches = [token.pitches[0] for token in body if isinstance(token, Element)]
    assert pitches == [66, 66, 66, 66, 65, 66]


def test_only_the_first_voice_is_read():
    body = tokens(tune("[V:1] C D [V:2] E F [V:1] G", header="M:4/4\nL:1/8\nV:1\nK:C"))
    assert [token.pitches for token in body if isinstance(token, Element)] == [(60,), (62,), (67,)]


def test_bars_endings_parts_and_tempo_are_tokens():
    body = tokens(tune("P:A\n|:C [Q:1/4=90] D|[1 E:|[2 F||", header="M:4/4\nL:1/4\nK:C"))
    kinds = [type(token) for token in body]
    assert kinds == [Part, Bar, Element, Tempo, Element, Bar, Ending, Element, Bar, Ending,
                     Element, Bar]  # fmt: skip
    assert body[0] == Part("A")
    assert body[1] == Bar(start_repeat=True)
    assert body[3] == Tempo(Fraction(1, 4), 90.0)
    assert body[5] == Bar() and body[8] == Bar(end_repeat=True)
    assert body[6].passes == {1} and body[9].passes == {2}
    assert body[11] == Bar(section_end=True)


def test_lengths_resolve_units_tuplets_broken_rhythm_and_chords():
    body = tokens(tune("[L:1/16] A (3Bcd e>f [ce]2 z/", header="M:4/4\nL:1/8\nK:C"))
    lengths = [Fraction(token.length, WHOLE) for token in body if isinstance(token, Element)]
    sixteenth = Fraction(1, 16)
    assert lengths == [sixteenth, *[sixteenth * 2 / 3] * 3, sixteenth * 3 / 2, sixteenth / 2,
                       sixteenth * 2, sixteenth / 2]  # fmt: skip
    chord = [token for token in body if isinstance(token, Element)][-2]
    assert chord.pitches == (72, 76)


def test_ties_carry_an_accidental_over_the_bar_line():
    body = tokens(tune("^c-|c c", header="M:4/4\nL:1/8\nK:C"))
    elements = [token for token in body if isinstance(token, Element)]
    assert [(e.pitches, e.ties) for e in elements] == [((73,), (True,)), ((73,), (False,)),
                                                       ((72,), (False,))]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "reason"),
    [("[K:D", "unclosed-field"), ("[M:x] C", "bad-header"), ("[K:H#] C", "bad-key"),
     ("C [L:0] D", "bad-header"), ("C |0 D", "unbalanced-repeat"), ("> C", "bad-rhythm"),
     ("C ? D", "unsupported")],
)  # fmt: skip
def test_what_cannot_be_read_names_its_reason(body, reason):
    with pytest.raises(RenderError) as raised:
        tokens(tune(body))
    assert raised.value.reason == reason


def test_no_key_and_music_before_it():
    with pytest.raises(RenderError, match="no K:") as raised:
        read_tune_setup("X:1\nT:t\nM:4/4\n")
    assert raised.value.reason == "no-key"
    with pytest.raises(RenderError, match="music before") as raised:
        read_tune_setup("X:1\nABC\nK:G\n")
    assert raised.value.reason == "no-key"


@pytest.mark.parametrize("mode", ["major", "minor", "dorian", "mixolydian", "lydian", "phrygian",
                                  "locrian", "aeolian", "ionian"])  # fmt: skip
@pytest.mark.parametrize("tonic", ["C", "G", "D", "A", "E", "B", "F#", "F", "Bb", "Eb", "C#"])
def test_keys_and_modes_have_music21s_signatures(tonic, mode):
    music21 = pytest.importorskip("music21")
    written = {"major": "", "minor": "m"}.get(mode, mode[:3])
    key = abc_reader.parse_key(tonic + written)
    expected = music21.key.Key(tonic.replace("b", "-"), mode)
    assert key.fifths == expected.sharps
    for letter in theory.LETTERS:
        accidental = expected.accidentalByStep(letter)
        assert key.signature[letter] == (int(accidental.alter) if accidental else 0), letter


def test_key_names_options_and_explicit_accidentals():
    assert abc_reader.parse_key("A Mixolydian").name == "A Mixolydian"
    assert abc_reader.parse_key("Ebm clef=bass").name == "Ebm"
    assert abc_reader.parse_key("clef=bass") == abc_reader.parse_key("C")
    assert abc_reader.parse_key("D exp ^f").signature == {**theory.key_signature(0), "F": 1}
    assert abc_reader.parse_key("HP").fifths == 2 and abc_reader.parse_key("none").name == "none"


def test_comments_and_escaped_percent_signs():
    assert abc_reader.split_comment(r"T:50\% off % a note") == (r"T:50\% off ", "% a note")
    assert abc_reader.strip_comment("abc % d") == "abc "
    assert abc_reader.strip_comment("abc") == "abc"


def test_tokens_are_public_dataclasses():
    # Other modules hold and compare tokens: all but Element (which reading extends) are frozen.
    for kind in (Bar, Ending, Part, Tempo, KeyChange, MeterChange, UnitChange):
        assert dataclasses.fields(kind) and kind.__dataclass_params__.frozen


def test_a_tie_or_broken_rhythm_reaches_back_over_a_key_or_unit_change_only():
    for between in ("[K:D]", "[K:clef=bass]", "[L:1/16]"):
        body = tokens(tune(f"A{between}>B A{between}-A"))
        elements = [token for token in body if isinstance(token, Element)]
        # `>` makes the A before the change a dotted eighth; `-` ties the A before it.
        assert elements[0].length == WHOLE * 3 // 16 and elements[2].ties == (True,)
    with pytest.raises(RenderError, match="follows no note") as raised:
        tokens(tune("A[M:3/4]>B"))
    assert raised.value.reason == "bad-rhythm"
