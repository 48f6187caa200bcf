"""Pitch spelling and keys: letters and their steps, the line of fifths, key signatures, modes and
key names, and the marks ABC writes accidentals and octaves with.

One table of each for every module that reads or writes notes: the ABC reader (`abc_reader`),
render's MIDI key signature, `transpose`, `form`, `checks` and `midi_in`. Nothing here reads ABC
text; the reader turns a K: field into these numbers.

Positions on the line of fifths count fifths up from C: F is -1, C 0, G 1 ... B 5, F# 6, Bb -2. A
key signature is a number of fifths too, its sharps (> 0) or flats (< 0): the position of its
major key's tonic, so D major is 2 and Bb major -2.
"""

from __future__ import annotations

STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}  # semitones above C
LETTERS = "CDEFGAB"
LINE_OF_FIFTHS = "FCGDAEB"  # the naturals, at positions -1 to 5
SIGNS = {"": 0, "#": 1, "b": -1}  # in note and key names: "F#", "Bb", "Ebm"

# ABC's accidental marks, in semitones, and the mark for each alteration.
ACCIDENTALS = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}
ACCIDENTAL_MARKS = {alter: mark for mark, alter in ACCIDENTALS.items()}

# Fifths from a mode's signature to its major key's: A Dorian has G major's signature, two fifths
# below A major's. The keys are ABC's: the first three letters of a mode, "m" for minor.
MODE_FIFTHS = {
    "maj": 0, "ion": 0, "mix": -1, "dor": -2, "min": -3, "aeo": -3, "m": -3, "phr": -4, "loc": -5,
    "lyd": 1,
}  # fmt: skip
# How a key's name ends in each mode: "G", "Em", "A Dorian".
MODE_NAMES = {
    "maj": "", "ion": " Ionian", "mix": " Mixolydian", "dor": " Dorian", "min": "m", "m": "m",
    "aeo": " Aeolian", "phr": " Phrygian", "loc": " Locrian", "lyd": " Lydian",
}  # fmt: skip


def position(letter: str, alter: int) -> int:
    """A spelled note's position on the line of fifths: ("C", 0) 0, ("F", 1) 6, ("B", -1) -2."""
    return LINE_OF_FIFTHS.index(letter.upper()) - 1 + 7 * alter


def spelling(position: int) -> tuple[str, int]:
    """The (letter, alteration in semitones) at a position: 6 ("F", 1), -2 ("B", -1)."""
    alter, index = divmod(position + 1, 7)
    return LINE_OF_FIFTHS[index], alter


def pitch_class(position: int) -> int:
    """The pitch class (0 is C) of a position on the line of fifths."""
    return 7 * position % 12


def note_name(letter: str, alter: int) -> str:
    """A note's name with sharps or flats: ("F", 1) "F#", ("B", -2) "Bbb"."""
    return letter + ("#" * alter if alter > 0 else "b" * -alter)


def octave(letter: str, marks: str) -> int:
    """The octave of an ABC note: 0 for `C`-`B` (middle C up), 1 for `c`-`b`, each `'` one up and
    each `,` one down."""
    return (letter > "Z") + marks.count("'") - marks.count(",")


def abc_note(letter: str, octave: int) -> str:
    """How ABC writes a letter (upper case) in an octave: "C," (-1), "C" (0), "c" (1), "c'" (2)."""
    if octave >= 1:
        return letter.lower() + "'" * (octave - 1)
    return letter + "," * -octave


def key_signature(fifths: int) -> dict[str, int]:
    """Letter -> semitones the signature adds: sharps from F# up the line of fifths, flats from Bb
    down it (beyond seven, double sharps or flats)."""
    signature = dict.fromkeys(STEPS, 0)
    order = LINE_OF_FIFTHS if fifths > 0 else LINE_OF_FIFTHS[::-1]
    for index in range(abs(fifths)):
        signature[order[index % 7]] += 1 if fifths > 0 else -1
    return signature


def scale(signature: dict[str, int]) -> frozenset[int]:
    """The pitch classes of a signature's seven notes."""
    return frozenset((STEPS[letter] + alter) % 12 for letter, alter in signature.items())


def midi_key_name(fifths: int, minor: bool) -> str:
    """The name a MIDI key-signature event gives a key (mido's): "Bb", "F#m".

    Args:
        fifths: the signature, -7 to 7.
        minor: the minor key of that signature rather than the major.
    """
    return note_name(*spelling(fifths + 3 * minor)) + ("m" if minor else "")


# Every key a MIDI key-signature event can name: its name -> (fifths, minor).
MIDI_KEYS = {midi_key_name(fifths, minor): (fifths, minor)
             for minor in (False, True) for fifths in range(-7, 8)}  # fmt: skip
