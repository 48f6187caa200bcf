"""Tests for musicgen.music.render: ABC -> Performance -> MIDI, checked by hand, by independent MIDI
readers, against abc2midi, and over the real O'Neill's, Ryan's and Aird's collections."""

from __future__ import annotations

import collections
import functools
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import mido
import music21
import pretty_midi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicgen.errors import RenderError
from musicgen.music.render import (
    DEFAULT_PROGRAM,
    Note,
    Performance,
    abc_to_midi,
    abc_to_performance,
    write_midi,
)

DATA = Path(__file__).parent / "data" / "render"
FIXTURES = sorted(DATA.glob("*.abc"))
CORPUS = Path(music21.__file__).parent / "corpus"
BOOKS = ("oneills1850", "ryansMammoth", "airdsAirs")
REASONS = {
    "no-key", "bad-key", "bad-header", "bad-note", "bad-length", "bad-rhythm", "bad-tuplet",
    "unbalanced-repeat", "unclosed-chord", "unclosed-grace", "unclosed-text", "unclosed-field",
    "unsupported", "no-notes", "too-long",
}  # fmt: skip


def tune(body: str, header: str = "M:4/4\nL:1/8\nQ:1/4=60") -> Performance:
    """A small tune: at Q:1/4=60 with L:1/8 every unit note lasts half a second."""
    key = "" if "K:" in header else "\nK:C"
    return abc_to_performance(f"X:1\nT:test\n{header}{key}\n{body}\n")


def pitches(performance: Performance) -> list[int]:
    return [note.pitch for note in performance.notes]


def timeline(performance: Performance) -> list[tuple[int, float, float]]:
    return [(n.pitch, round(n.start, 6), round(n.end, 6)) for n in performance.notes]


def split_tunes(text: str) -> list[str]:
    """Tunebook -> tunes, cut at lines starting `X:` (musicgen.music.abc is written alongside
    this)."""
    return [chunk for chunk in re.split(r"(?m)^(?=X:)", text) if chunk.startswith("X:")]


@functools.cache
def corpus_tunes() -> list[tuple[str, str]]:
    """(book/file X:n, text) for every tune of the three collections music21 ships."""
    tunes = []
    for book in BOOKS:
        for path in sorted((CORPUS / book).glob("*.abc")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for chunk in split_tunes(text):
                tunes.append((f"{book}/{path.name} {chunk.splitlines()[0]}", chunk))
    return tunes


needs_corpus = pytest.mark.skipif(not (CORPUS / BOOKS[0]).is_dir(), reason="music21 corpus missing")


# ------------------------------------------------------------------------------------------------
# Pitch


def test_accidental_lasts_to_the_end_of_the_bar_in_its_octave():
    # ^c sharpens the c after it, not c' an octave up, and not the c in the next bar.
    assert pitches(tune("^c c c' | c")) == [73, 73, 84, 72]


def test_natural_and_double_accidentals():
    assert pitches(tune("^^c =c __e _e e", header="L:1/8\nK:D")) == [74, 72, 74, 75, 75]


@pytest.mark.parametrize(
    "key",
    ["G", "Em", "Ador", "Dmix", "Bphr", "Clyd", "F#loc", "E Minor", "A Dorian", "D Mixolydian",
     "GMaj", "Eaeo", "Gion", "e min", "ADor clef=treble", "Dmix % a comment"],
)  # fmt: skip
def test_every_mode_spelled_for_one_sharp_plays_f_sharp_only(key):
    assert pitches(tune("f c g b", header=f"L:1/8\nK:{key}")) == [78, 72, 79, 83]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("K:D", [78, 73, 79, 83]),
        ("K:Dmix", [78, 72, 79, 83]),
        ("K:Bb", [77, 72, 79, 82]),
        ("K:F#", [78, 73, 80, 83]),
        ("K:HP", [78, 73, 79, 83]),
        ("K:none", [77, 72, 79, 83]),
        ("K:D exp _b", [77, 72, 79, 82]),
        ("K:D ^g", [78, 73, 80, 83]),
        ("K:D clef=bass middle=d octave=0", [78, 73, 79, 83]),
        ("K:clef=treble", [77, 72, 79, 83]),
        ("K:D\nK:clef=bass", [78, 73, 79, 83]),  # a clef change alone keeps the key
    ],
)
def test_key_signatures(key, expected):
    assert pitches(tune("f c g b", header=f"L:1/8\n{key}")) == expected


def test_octave_marks():
    assert pitches(tune("C, C c c' c'' C,,")) == [48, 60, 72, 84, 96, 36]


def test_inline_and_body_fields_change_key_length_meter_tempo():
    performance = tune("f [K:D] f | [L:1/4] C [Q:1/4=120] C C\nK:C\nf")
    assert pitches(performance) == [77, 78, 61, 61, 61, 77]  # C is C sharp in D
    starts = [round(note.start, 6) for note in performance.notes]
    # 1/8 at 60 qpm = 0.5 s; 1/4 = 1 s, then 0.5 s a quarter at 120 qpm.
    assert starts == [0.0, 0.5, 1.0, 2.0, 2.5, 3.0]


# ------------------------------------------------------------------------------------------------
# Time


def test_broken_rhythm():
    assert timeline(tune("A>B A<B A>>B")) == [
        (69, 0.0, 0.75), (71, 0.75, 1.0),
        (69, 1.0, 1.25), (71, 1.25, 2.0),
        (69, 2.0, 2.875), (71, 2.875, 3.0),
    ]  # fmt: skip


def test_triplet_and_general_tuplets():
    assert [round(n.start, 6) for n in tune("(3ABc d").notes] == [0.0, 0.333333, 0.666667, 1.0]
    # (p:q:r: three notes in the time of two, for the next two notes only.
    starts = [round(n.start, 6) for n in tune("(3:2:2AB c d").notes]
    assert starts == [0.0, 0.333333, 0.666667, 1.166667]
    # (2 in 6/8: two notes in the time of three.
    starts = [n.start for n in tune("(2AB c", header="M:6/8\nL:1/8\nQ:3/8=40").notes]
    assert starts == [0.0, 0.75, 1.5]


def test_ties_merge_into_one_note():
    assert timeline(tune("A2-A2 B")) == [(69, 0.0, 2.0), (71, 2.0, 2.5)]
    # Over a bar line the tied note keeps its sharp; the next c is natural again.
    assert timeline(tune("^c2-|c2 c")) == [(73, 0.0, 2.0), (72, 2.0, 2.5)]
    # A tie to another pitch cannot merge.
    assert timeline(tune("A-B")) == [(69, 0.0, 0.5), (71, 0.5, 1.0)]


def test_chords_sound_together_for_the_first_notes_length():
    assert timeline(tune("[CEG]2 [c/e/] [C2E]/ z")) == [
        (60, 0.0, 1.0), (64, 0.0, 1.0), (67, 0.0, 1.0),
        (72, 1.0, 1.25), (76, 1.0, 1.25),
        (60, 1.25, 1.75), (64, 1.25, 1.75),
    ]  # fmt: skip
    assert timeline(tune("[CE]-[CE] G")) == [(60, 0.0, 1.0), (64, 0.0, 1.0), (67, 1.0, 1.5)]


def test_rests_and_multi_measure_rests():
    performance = tune("C z D x2 E | Z2 | C")
    assert timeline(performance)[:3] == [(60, 0.0, 0.5), (62, 1.0, 1.5), (64, 2.5, 3.0)]
    # Two whole bars of 4/4 at one second a quarter.
    assert performance.notes[-1].start == pytest.approx(11.0)
    assert performance.bars == 4


def test_default_unit_length_follows_the_meter():
    assert tune("C", header="M:2/4\nQ:1/4=60").duration == 0.25  # 1/16 below 3/4
    assert tune("C", header="M:6/8\nQ:1/4=60").duration == 0.5
    assert tune("C", header="M:C|\nQ:1/4=60").duration == 0.5


@pytest.mark.parametrize(
    ("header", "qpm"),
    [("L:1/8", 120.0), ("Q:3/8=80", 120.0), ("L:1/8\nQ:120", 60.0), ('Q:"Allegro"', 120.0),
     ("Q:1/2=100", 200.0), ('Q:"Slow" 1/4=80', 80.0)],
)  # fmt: skip
def test_tempo_forms(header, qpm):
    assert tune("C", header=f"M:4/4\n{header}").tempo_qpm == qpm


# ------------------------------------------------------------------------------------------------
# What is skipped


def test_grace_notes_decorations_and_chord_symbols_do_not_sound():
    body = '{g}A ~B .c !trill!d +fermata+e "G"f "^hi"g Hc uA vB (3(ABc) {/ag}d TA ! `C'
    assert pitches(tune(body)) == [69, 71, 72, 74, 76, 77, 79, 72, 69, 71, 69, 71, 72, 74, 69, 60]


def test_comments_continuations_and_the_end_of_the_tune():
    performance = tune("C D \\\nE F % a comment with |: :|\n%%MIDI program 1\nG\n\nX:2\nK:C\nA")
    assert pitches(performance) == [60, 62, 64, 65, 67]


def test_byte_order_mark_and_windows_line_ends():
    assert pitches(abc_to_performance("\ufeffX:1\r\nK:G\r\nf g\r\n")) == [78, 79]


def test_only_the_first_voice_is_rendered():
    body = "V:1\nC D|\nV:2\nE F|\nV:1\nG A|\n[V:2] B c|"
    assert pitches(tune(body)) == [60, 62, 67, 69]


# ------------------------------------------------------------------------------------------------
# Repeats


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("|: C D |1 E :|2 F |]", "C D E C D F"),
        ("|: C D [1 E :| [2 F |]", "C D E C D F"),
        ("|: C :|: D :|", "C C D D"),
        ("|: C :: D :|", "C C D D"),
        ("C :| D", "C C D"),
        ("C | D :| E :|", "C D C D E E"),  # a :| after a finished repeat starts after it
        ("C || D :|", "C D C D"),  # || alone does not start a repeat (abc2midi)
        ("C :| D || E :|", "C C D E E"),  # ... but does once the tune has had one
        ("|: C |1,2 D :|3 E |]", "C D C D C E"),
        ("|: C |1 D :|2 E || F :|", "C D C E F F"),  # || closes the last ending
    ],
)
def test_repeats_and_endings_expand_in_order(body, expected):
    names = {60: "C", 62: "D", 64: "E", 65: "F"}
    assert " ".join(names[p] for p in pitches(tune(body))) == expected


def test_part_order_from_the_header():
    body = "P:A\nC D|\nP:B\nE F|"
    assert pitches(tune(body, header="L:1/8\nP:ABA")) == [60, 62, 64, 65, 60, 62]
    assert pitches(tune(body, header="L:1/8\nP:(AB)2")) == [60, 62, 64, 65] * 2
    # Without a header order the parts play as written.
    assert pitches(tune(body, header="L:1/8")) == [60, 62, 64, 65]


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("X:1\nT:no key\nCDE|", "no-key"),
        ("X:1\nT:t\nM:4/4\n", "no-key"),
        ("X:1\nK:C\n", "no-notes"),
        ("X:1\nK:C\nz4 | x2 |]", "no-notes"),
        ("X:1\nK:H#\nC", "bad-key"),
        ("X:1\nK:Gfoo\nC", "bad-key"),
        ("X:1\nM:3/0\nK:C\nC", "bad-header"),
        ("X:1\nL:0\nK:C\nC", "bad-header"),
        ("X:1\nQ:fast\nK:C\nC", "bad-header"),
        ("X:1\nK:C\nC ^ D", "bad-note"),
        ("X:1\nK:C\nC ,D", "bad-note"),
        ("X:1\nK:C\n[] C", "bad-note"),
        ("X:1\nK:C\nc''''''", "bad-note"),
        ("X:1\nK:C\n|- C", "bad-note"),
        ("X:1\nK:C\nC0 D", "bad-length"),
        ("X:1\nK:C\nC/0 D", "bad-length"),
        ("X:1\nK:C\nC 2 D", "bad-length"),
        ("X:1\nK:C\nC99999999", "bad-length"),
        ("X:1\nK:C\n> C", "bad-rhythm"),
        ("X:1\nK:C\nC>>>>D", "bad-rhythm"),
        ("X:1\nK:C\n(1C D", "bad-tuplet"),
        ("X:1\nK:C\n(12abc", "bad-tuplet"),
        ("X:1\nK:C\nC |1 D |2 E |]", "unbalanced-repeat"),
        ("X:1\nK:C\n|: C [12 D :|", "unbalanced-repeat"),
        ("X:1\nK:C\n[CEG D", "unclosed-chord"),
        ("X:1\nK:C\n{g A", "unclosed-grace"),
        ('X:1\nK:C\n"G A', "unclosed-text"),
        ("X:1\nK:C\n[K:D C", "unclosed-field"),
        ("X:1\nK:C\nC & D", "unsupported"),
        ("X:1\nK:C\nC @ D", "unsupported"),
        ("X:1\nL:1\nQ:1/4=1\nK:C\nC64 C64", "too-long"),
    ],
)
def test_invalid_tunes_raise_render_error_with_a_reason(text, reason):
    with pytest.raises(RenderError) as info:
        abc_to_performance(text)
    assert info.value.reason == reason


def test_unsupported_character_is_named_with_its_line_and_column():
    with pytest.raises(RenderError, match=r"'&' at line 3, column 3"):
        abc_to_performance("X:1\nK:C\nC & D")


ABC_CHARACTERS = st.sampled_from(list("ABCDEFGabcdefgzxZ^_=,'/23>< |:[]()-{}\"!+.~HTuv\n%\\K:1LV"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(st.text(max_size=200), st.text(ABC_CHARACTERS, max_size=200)),
    header=st.sampled_from(["", "X:1\nK:C\n", "X:1\nM:6/8\nL:1/8\nK:Dmix\n", "K:"]),
)
def test_random_text_raises_only_render_error(header, body):
    try:
        performance = abc_to_performance(header + body)
    except RenderError as exc:
        assert exc.reason in REASONS
        return
    assert performance.notes
    assert all(0 <= n.pitch <= 127 and 0 <= n.start < n.end for n in performance.notes)
    assert list(performance.notes) == sorted(performance.notes, key=lambda n: (n.start, n.pitch))
    with tempfile.TemporaryDirectory() as folder:
        write_midi(performance, Path(folder) / "tune.mid")  # any valid tune makes a valid file
        assert len(mido.MidiFile(Path(folder) / "tune.mid").tracks) == 2


# ------------------------------------------------------------------------------------------------
# Real tunes


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_fixture_tunes_render(path):
    performance = abc_to_performance(path.read_text())
    assert performance.title
    assert performance.bars >= 16
    assert 10 < performance.duration < 120


def test_northern_lasses_by_hand():
    performance = abc_to_performance((DATA / "northern_lasses_oneills_1532.abc").read_text())
    assert (performance.title, performance.key, performance.meter) == ("Northern Lasses", "G", "C|")
    assert performance.tempo_qpm == 120.0
    # A part (pickup + 8 bars) and B part (pickup + 8 bars) played twice: the B part's :| goes back
    # to the start, as no repeat mark comes before it.
    assert performance.bars == 36
    assert pitches(performance)[:7] == [74, 76, 78, 79, 67, 67, 67]  # (3def gG (3GGG
    assert performance.notes[1].start - performance.notes[0].start == pytest.approx(1 / 6)


@needs_corpus
def test_real_collections_render():
    tunes = corpus_tunes()
    reasons = collections.Counter()
    started = time.perf_counter()
    for _, text in tunes:
        try:
            abc_to_performance(text)
        except RenderError as exc:
            reasons[exc.reason] += 1
    elapsed = time.perf_counter() - started
    failed = sum(reasons.values())
    print(f"\n{len(tunes) - failed}/{len(tunes)} tunes render, "
          f"{1000 * elapsed / len(tunes):.2f} ms a tune; failures: {dict(reasons)}")  # fmt: skip
    assert len(tunes) > 4000
    assert failed / len(tunes) <= 0.02
    assert set(reasons) <= REASONS


# ------------------------------------------------------------------------------------------------
# MIDI out, read back by mido and pretty_midi


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_midi_reads_back_with_mido_and_pretty_midi(path, tmp_path):
    midi_path = tmp_path / "tune.mid"
    performance = abc_to_midi(path.read_text(), midi_path)
    assert [p.name for p in tmp_path.iterdir()] == ["tune.mid"]  # no temporary file left behind

    midi = mido.MidiFile(midi_path)
    messages = [m for track in midi.tracks for m in track]
    assert sum(m.type == "note_on" and m.velocity > 0 for m in messages) == len(performance.notes)
    assert [m.program for m in messages if m.type == "program_change"] == [DEFAULT_PROGRAM]
    tempo = next(m.tempo for m in messages if m.type == "set_tempo")
    assert mido.tempo2bpm(tempo) == pytest.approx(performance.tempo_qpm)

    pm = pretty_midi.PrettyMIDI(str(midi_path))
    (instrument,) = pm.instruments
    read = sorted(instrument.notes, key=lambda n: (n.start, n.pitch))
    assert [n.pitch for n in read] == pitches(performance)
    tick = 60.0 / performance.tempo_qpm / 480
    for ours, theirs in zip(performance.notes, read, strict=True):
        assert theirs.start == pytest.approx(ours.start, abs=tick)
        assert theirs.end == pytest.approx(ours.end, abs=tick)
        assert theirs.velocity == ours.velocity
    assert pm.time_signature_changes and pm.key_signature_changes


def test_write_midi_meta_events_and_program(tmp_path):
    performance = tune("f c", header="M:6/8\nL:1/8\nQ:3/8=60\nK:Ador")
    write_midi(performance, tmp_path / "x.mid", program=73)
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "x.mid"))
    assert pm.instruments[0].program == 73
    signature = pm.time_signature_changes[0]
    assert (signature.numerator, signature.denominator) == (6, 8)
    # A Dorian has G major's signature; MIDI only knows major and minor.
    assert pretty_midi.key_number_to_key_name(pm.key_signature_changes[0].key_number) == "G Major"
    with pytest.raises(ValueError):
        write_midi(performance, tmp_path / "y.mid", program=128)


def test_note_and_performance_are_frozen():
    performance = tune("C D")
    with pytest.raises(AttributeError):
        performance.notes[0].pitch = 1  # type: ignore[misc]
    assert isinstance(performance.notes[0], Note)
    assert performance.duration == 1.0


# ------------------------------------------------------------------------------------------------
# Against abc2midi

# abc2midi plays ornaments (T trill, ~ and R rolls, H fermata, !trill!...) and swings R:hornpipe;
# we play the written notes, so those are taken out of the copy abc2midi reads.
_ORNAMENTS = re.compile(r'("[^"]*")|![^!\s]*!|\+[^+\s]*\+|[~TRH]')


def _plain_for_abc2midi(text: str) -> str:
    lines, in_body = [], False
    for line in text.splitlines():
        if not in_body and line.startswith("R:"):
            continue
        if in_body and not re.match(r"[A-Za-z+]:(?![|:])", line):
            line = _ORNAMENTS.sub(lambda match: match.group(1) or "", line)
        in_body = in_body or line.startswith("K:")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _onsets(path: Path) -> list[tuple[int, float]]:
    """(pitch, onset in quarter notes) of the first track's notes; chord notes (which abc2midi
    staggers by a few ticks) grouped and sorted by pitch."""
    pm = pretty_midi.PrettyMIDI(str(path))
    events = sorted(
        (pm.time_to_tick(n.start) / pm.resolution, n.pitch) for n in pm.instruments[0].notes
    )
    groups: list[list[tuple[float, int]]] = []
    for onset, pitch in events:
        if groups and onset - groups[-1][0][0] < 0.07:
            groups[-1].append((onset, pitch))
        else:
            groups.append([(onset, pitch)])
    return [(pitch, group[0][0]) for group in groups for pitch in sorted(p for _, p in group)]


def _compare_with_abc2midi(text: str, folder: Path) -> str:
    """'same', 'onsets' (same pitches, different times) or a kind of pitch mismatch."""
    ours, theirs, source = folder / "ours.mid", folder / "theirs.mid", folder / "tune.abc"
    theirs.unlink(missing_ok=True)
    abc_to_midi(text, ours)
    source.write_text(_plain_for_abc2midi(text))
    command = ["abc2midi", str(source), "-o", str(theirs), "-silent", "-NGRA", "-NGUI", "-NFER"]
    subprocess.run(command, capture_output=True, timeout=30, check=False)
    if not theirs.exists():
        return "abc2midi-failed"
    a, b = _onsets(ours), _onsets(theirs)
    if [p for p, _ in a] != [p for p, _ in b]:
        return "fewer-notes" if len(a) < len(b) else "more-notes" if len(a) > len(b) else "pitch"
    same_times = all(abs(x - y) < 0.05 for (_, x), (_, y) in zip(a, b, strict=True))
    return "same" if same_times else "onsets"


@needs_corpus
@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi (Debian abcmidi) missing")
def test_agrees_with_abc2midi_on_real_tunes(tmp_path):
    sample = corpus_tunes()[::40]  # about 106 tunes across the three books
    kinds = collections.Counter()
    for _, text in sample:
        try:
            abc_to_performance(text)
        except RenderError:
            continue
        kinds[_compare_with_abc2midi(text, tmp_path)] += 1
    compared = sum(kinds.values()) - kinds["abc2midi-failed"]
    same_pitches = kinds["same"] + kinds["onsets"]
    print(f"\nabc2midi: {same_pitches}/{compared} same pitch sequence, "
          f"{kinds['same']}/{compared} same onsets too; {dict(kinds)}")  # fmt: skip
    assert compared >= 90
    assert same_pitches / compared >= 0.90
    assert kinds["same"] / same_pitches >= 0.90


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi (Debian abcmidi) missing")
@pytest.mark.parametrize(
    "body",
    ["|: C D |1 E :|2 F |]", "A>B A<B (3ABc d", "^c c | c", "[CEG]2 [c/e/] z", "A2-A2 B",
     "|: C :|: D :|", "C, C c c' c''"],
)  # fmt: skip
def test_hand_cases_agree_with_abc2midi(body, tmp_path):
    text = f"X:1\nT:t\nM:4/4\nL:1/8\nK:Dmix\n{body}\n"
    assert _compare_with_abc2midi(text, tmp_path) == "same"
