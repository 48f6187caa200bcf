"""Pitch spelling and keys (`musicgen.music.theory`), each table against an independent source:
music21's key signatures, mido's key-signature bytes, and ABC notes read back by music21."""

from __future__ import annotations

import mido
import pytest

from musicgen.music import theory


@pytest.mark.parametrize("fifths", range(-7, 8))
def test_key_signatures_are_music21s(fifths):
    music21 = pytest.importorskip("music21")
    expected = music21.key.KeySignature(fifths)
    for letter in theory.LETTERS:
        accidental = expected.accidentalByStep(letter)
        assert theory.key_signature(fifths)[letter] == (int(accidental.alter) if accidental else 0)


@pytest.mark.parametrize("minor", [False, True])
@pytest.mark.parametrize("fifths", range(-7, 8))
def test_midi_key_names_are_the_bytes_mido_writes(fifths, minor):
    name = theory.midi_key_name(fifths, minor)
    data = mido.MetaMessage("key_signature", key=name).bytes()
    # FF 59 02 sf mi: sharps (two's complement) and 1 for minor.
    assert data[:3] == [0xFF, 0x59, 2]
    assert (data[3] - 256 if data[3] > 127 else data[3], data[4]) == (fifths, int(minor))
    assert theory.MIDI_KEYS[name] == (fifths, minor)
    assert len(theory.MIDI_KEYS) == 30


def test_positions_on_the_line_of_fifths():
    assert [theory.position(letter, 0) for letter in "FCGDAEB"] == list(range(-1, 6))
    assert theory.position("F", 1) == 6 and theory.position("b", -1) == -2
    for letter in theory.LETTERS:
        for alter in range(-2, 3):
            position = theory.position(letter, alter)
            assert theory.spelling(position) == (letter, alter)
            assert theory.pitch_class(position) == (theory.STEPS[letter] + alter) % 12


def test_note_names_and_scales():
    assert [theory.note_name("F", 1), theory.note_name("B", -1), theory.note_name("E", -2)] == [
        "F#", "Bb", "Ebb"
    ]  # fmt: skip
    assert theory.scale(theory.key_signature(2)) == {2, 4, 6, 7, 9, 11, 1}  # D major
    assert theory.scale(theory.key_signature(-3)) == {3, 5, 7, 8, 10, 0, 2}  # Eb major


def test_accidental_marks_read_and_written():
    assert theory.ACCIDENTALS == {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}
    assert {theory.ACCIDENTALS[mark] for mark in theory.ACCIDENTAL_MARKS.values()} == {
        -2, -1, 0, 1, 2
    }  # fmt: skip
    assert all(theory.ACCIDENTALS[theory.ACCIDENTAL_MARKS[a]] == a for a in range(-2, 3))


def test_abc_octaves_are_music21s():
    music21 = pytest.importorskip("music21")
    notes = [(letter, octave) for octave in range(-2, 4) for letter in "CFB"]
    written = " ".join(theory.abc_note(letter, octave) for letter, octave in notes)
    score = music21.converter.parse(f"X:1\nT:t\nM:none\nL:1/4\nK:C\n{written}\n", format="abc")
    pitches = [note.pitch.midi for note in score.flatten().notes]
    assert pitches == [60 + 12 * octave + theory.STEPS[letter] for letter, octave in notes]
    for text, (_, octave) in zip(written.split(), notes, strict=True):
        assert theory.octave(text[0], text[1:]) == octave, text
