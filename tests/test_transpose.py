"""The transposer (`musicgen.music.transpose`) on real tunes: every note's MIDI pitch moves by
exactly the interval, read back by our renderer and by abc2midi (an independent reader, its files
read with mido); keys, accidentals and octave marks respelled; a tune leaving MIDI's range refused;
and `musicgen render --transpose`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.data.corpus import load_corpus
from musicgen.errors import RenderError
from musicgen.music import render
from musicgen.music.abc import parse_tune, read_text_file
from musicgen.music.transpose import transpose_tune

DATA = Path(__file__).resolve().parent / "data"
NORTHERN_LASSES = parse_tune(
    read_text_file(DATA / "render" / "northern_lasses_oneills_1532.abc"), "northern lasses"
).text
needs_abc2midi = pytest.mark.skipif(shutil.which("abc2midi") is None, reason="needs abc2midi")
ABC2MIDI_CHUNK = 200  # tunes per abc2midi run


@pytest.fixture(scope="module")
def corpus_tunes() -> list[str]:
    """The bundled corpus's tunes that render."""
    tunes, _ = load_corpus()
    playable = []
    for tune in tunes:
        try:
            render.abc_to_performance(tune.text)
        except RenderError:
            continue
        playable.append(tune.text)
    return playable


def shift_for(index: int) -> int:
    """Every interval from -5 to +7 semitones, tune by tune."""
    return (index % 12) - 5 or 7


def our_pitches(text: str) -> list[tuple[float, int]]:
    return [(note.start, note.pitch) for note in render.abc_to_performance(text).notes]


def body(text: str) -> str:
    return text.split("\nK:", 1)[1].split("\n", 1)[1]


def key_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("K:"))


# ------------------------------------------------------------------------------------------------
# abc2midi, read back with mido


def melody(path: Path) -> list[tuple[int, int]] | None:
    """(tick, pitch) of every note on MIDI channel 1, abc2midi's melody (its chords go on 2-3)."""
    try:
        midi = mido.MidiFile(path)
    except (OSError, EOFError, ValueError):
        return None
    notes = []
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0 and message.channel == 0:
                notes.append((tick, message.note))
    return sorted(notes)


def abc2midi_melodies(texts: list[str], folder: Path) -> list[list[tuple[int, int]] | None]:
    """Each tune's melody by abc2midi, `ABC2MIDI_CHUNK` tunes to a run (one MIDI file per X:)."""
    folder.mkdir(parents=True, exist_ok=True)
    melodies = []
    for start in range(0, len(texts), ABC2MIDI_CHUNK):
        chunk = texts[start : start + ABC2MIDI_CHUNK]
        lines = []
        for number, text in enumerate(chunk, start=1):
            lines += [f"X:{number}", *[x for x in text.splitlines() if not x.startswith("X:")], ""]
        name = f"tunes{start}"
        (folder / f"{name}.abc").write_text("\n".join(lines) + "\n", encoding="utf-8")
        subprocess.run(
            ["abc2midi", f"{name}.abc"], cwd=folder, capture_output=True, timeout=600, check=False
        )
        melodies += [melody(folder / f"{name}{n}.mid") for n in range(1, len(chunk) + 1)]
    return melodies


def abc2midi_alone(text: str, folder: Path) -> list[tuple[int, int]] | None:
    return abc2midi_melodies([text], folder)[0]


def round_trip(texts: list[str], folder: Path) -> dict:
    """Each tune moved by `shift_for(index)`, its pitches compared with the original's, by our
    renderer and by abc2midi (a tune abc2midi reads differently inside a tunebook, where an
    earlier tune's state can leak into it, is run again alone)."""
    shifts = [shift_for(index) for index in range(len(texts))]
    moved = [transpose_tune(text, shift) for text, shift in zip(texts, shifts)]
    ours_exact = sum(
        [(t, p + shift) for t, p in our_pitches(text)] == our_pitches(after)
        for text, after, shift in zip(texts, moved, shifts)
    )
    theirs_exact = None
    if shutil.which("abc2midi"):
        before = abc2midi_melodies(texts, folder / "before")
        after = abc2midi_melodies(moved, folder / "after")
        theirs_exact = alone_runs = 0
        for index, shift in enumerate(shifts):
            if before[index] is None or [(t, p + shift) for t, p in before[index]] != after[index]:
                alone_runs += 1
                alone = folder / f"alone{index}"
                before[index] = abc2midi_alone(texts[index], alone / "before")
                after[index] = abc2midi_alone(moved[index], alone / "after")
            theirs_exact += (
                before[index] is not None
                and [(t, p + shift) for t, p in before[index]] == after[index]
            )
    figures = {"tunes": len(texts), "ours_exact": ours_exact, "abc2midi_exact": theirs_exact}
    if theirs_exact is not None:
        figures["abc2midi_run_again_alone"] = alone_runs
    return figures


# ------------------------------------------------------------------------------------------------
# Real tunes


def test_a_sample_of_real_tunes_moves_exactly(corpus_tunes, tmp_path):
    sample = corpus_tunes[::150]  # about 30 tunes of every collection, keys, modes, ornaments
    figures = round_trip(sample, tmp_path)
    assert figures["ours_exact"] == len(sample)
    assert figures["abc2midi_exact"] in (None, len(sample))


@pytest.mark.slow
def test_every_tune_of_the_bundled_corpus_moves_exactly(corpus_tunes, tmp_path):
    figures = round_trip(corpus_tunes, tmp_path)
    print(f"transposed round trip over the bundled corpus: {figures}")
    assert figures["tunes"] > 4000
    assert figures["ours_exact"] == figures["tunes"]
    assert figures["abc2midi_exact"] in (None, figures["tunes"])


def test_keys_and_notes_are_respelled():
    # The Northern Lasses (O'Neill 1532) is in G: up a tone it is in A, every letter one step up.
    up = transpose_tune(NORTHERN_LASSES, 2)
    assert key_line(up) == "K:A"
    assert [(t, p + 2) for t, p in our_pitches(NORTHERN_LASSES)] == our_pitches(up)
    assert not any(c in body(up) for c in "^_=")  # G major's notes are A major's, moved
    down = transpose_tune(NORTHERN_LASSES, -1)
    assert key_line(down) == "K:F#"  # six sharps rather than Gb's six flats: the nearer spelling
    assert key_line(transpose_tune(NORTHERN_LASSES, 1)) == "K:Ab"  # not G#'s eight sharps


@pytest.mark.parametrize(
    ("key", "semitones", "moved"),
    [
        ("Ador", 2, "Bdor"),
        ("A Dorian", -2, "G Dorian"),
        ("Emin", 3, "Gmin"),
        ("Dmix", 5, "Gmix"),
        ("Bm", 1, "Cm"),
        ("F", 6, "B"),
        ("C", 6, "Gb"),
        ("D exp ^f ^c", 3, "F exp =a =e"),  # F# and C# up a minor third: A and E
        ("G clef=treble", 2, "A clef=treble"),
        ("HP", 2, "E"),
        ("none", 4, "none"),
    ],
)
def test_key_fields_keep_their_mode(key, semitones, moved):
    text = f"X:1\nT:t\nM:4/4\nL:1/8\nK:{key}\nDEFG ABcd|efga g4|]\n"
    after = transpose_tune(text, semitones)
    assert key_line(after) == f"K:{moved}"
    assert [(t, p + semitones) for t, p in our_pitches(text)] == our_pitches(after)


def test_accidentals_are_respelled_in_the_new_key():
    text = "X:1\nT:t\nM:4/4\nL:1/8\nK:D\n=f^gab =c'2c'2|^^G,__B, =F,F,- F,4|]\n"
    after = transpose_tune(text, 1)  # D up a semitone is Eb
    assert key_line(after) == "K:Eb"
    # F natural in D is G flat in Eb; G sharp is A natural; G double sharp (an A) is A sharp;
    # B double flat (A below middle C) is C double flat, in the octave of middle C.
    assert body(after).startswith("_g=abc' _d'2d'2|^A,__C _G,G,- G,4|]")
    assert [(t, p + 1) for t, p in our_pitches(text)] == our_pitches(after)


def test_accidentals_are_written_where_the_new_key_needs_them_or_the_tune_had_one():
    # G up a semitone is Ab. G's F# (from the key) is Ab's G, natural in Ab: no accidental; the
    # written courtesy ^F keeps one (=G). G's F natural (=F) is Ab's Gb, which needs a flat.
    text = "X:1\nT:t\nM:4/4\nL:1/8\nK:G\nF^FfF =FF=ff|e4 E4|]\n"
    after = transpose_tune(text, 1)
    assert body(after).startswith("G=GgG _GG_gg|f4 F4|]")
    assert [(t, p + 1) for t, p in our_pitches(text)] == our_pitches(after)


def test_octave_marks_follow_the_pitch():
    text = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\nC,G,B,C Bcb c'|g'4 z4|]\n"
    assert body(transpose_tune(text, 1)).startswith("D,A,CD cdc' d'|a'4 z4|]")  # in Db
    assert body(transpose_tune(text, -12)).startswith("C,,G,,B,,C, B,CB c|g4 z4|]")
    assert body(transpose_tune(text, 24)).startswith("cgbc' b'c''b'' c'''|g'''4")


def test_chords_grace_notes_chord_names_and_inline_keys():
    text = 'X:1\nT:t\nM:4/4\nL:1/8\nK:G\n"D7/F#"[DFA]2 {ag}f2 "Em"e4|[K:Em]"^fine"[E2G2B2] z6|]\n'
    after = transpose_tune(text, 2)
    assert body(after).startswith('"E7/G#"[EGB]2 {ba}g2 "F#m"f4|[K:F#m]"^fine"[F2A2c2] z6|]')
    assert [(t, p + 2) for t, p in our_pitches(text)] == our_pitches(after)


@needs_abc2midi
def test_accidentals_abc2midi_reads_differently_are_kept_apart(tmp_path):
    # abc2midi lets an accidental reach every octave of its letter, and grace notes' accidentals
    # too; render.py only the same octave and no grace note. Both readings move exactly.
    text = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n^f F {^c}c C e2 c2|\n"
    after = transpose_tune(text, 3)
    assert [(t, p + 3) for t, p in our_pitches(text)] == our_pitches(after)
    before_midi = abc2midi_alone(text, tmp_path / "before")
    after_midi = abc2midi_alone(after, tmp_path / "after")
    assert [(t, p + 3) for t, p in before_midi] == after_midi


def test_leaving_midis_range_is_refused():
    with pytest.raises(RenderError) as error:
        transpose_tune(NORTHERN_LASSES, 48)
    assert error.value.reason == "bad-note"
    with pytest.raises(RenderError):
        transpose_tune("X:1\nT:t\nM:4/4\nL:1/8\nK:C\nC,,,,,D|]\n", -1)
    assert transpose_tune(NORTHERN_LASSES, 0) == NORTHERN_LASSES
    with pytest.raises(ValueError):
        transpose_tune(NORTHERN_LASSES, 49)


def test_render_transpose_writes_moved_midi(tmp_path):
    source = tmp_path / "lasses.abc"
    source.write_text(NORTHERN_LASSES, encoding="utf-8")
    args = ["render", str(source), "--no-audio", "--no-score", "--transpose", "-3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    moved = [note for _, note in melody(tmp_path / "lasses-down3.mid")]
    original = [note.pitch for note in render.abc_to_performance(NORTHERN_LASSES).notes]
    assert moved == [pitch - 3 for pitch in original]
    result = CliRunner().invoke(main, [*args[:-1], "48"])
    assert result.exit_code == 1
    assert "cannot transpose by 48" in result.output + result.stderr
