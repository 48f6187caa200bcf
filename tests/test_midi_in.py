"""Tests for musicgen.music.midi_in: MIDI files -> ABC tunes.

Hand-made files (written with mido by tests/midi_samples.py) with ABC worked out by hand; real tunes
of the bundled corpus through our MIDI writer, music21's and abc2midi's and back; the converted ABC
read by independent readers (music21, abc2midi, pretty_midi); every kind of broken file; random
bytes.
"""

from __future__ import annotations

import collections
import functools
import io
import re
import shutil
import subprocess
from pathlib import Path

import midi_samples as samples  # noqa: E402
import mido
import pretty_midi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicgen.data.corpus import load_corpus
from musicgen.errors import ParseError, RenderError
from musicgen.music.abc import header_fields
from musicgen.music.midi_in import MIDI_REASONS, midi_bytes_to_tune, midi_to_tune
from musicgen.music.render import abc_to_performance, write_midi

needs_abc2midi = pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi missing")


def body(tune) -> str:
    """The music lines of a converted tune, joined."""
    return "\n".join(tune.text.split("\n")[6:]).strip()


def convert(tmp_path, notes, name="tune", **conductor_options):
    return midi_to_tune(samples.melody_file(tmp_path / f"{name}.mid", notes, **conductor_options))


def played(text: str) -> list[tuple[float, int]]:
    """(onset in quarter notes, pitch) of an ABC tune, as musicgen's renderer plays it."""
    performance = abc_to_performance(text)
    beat = 60 / performance.tempo_qpm
    return [(round(note.start / beat, 4), note.pitch) for note in performance.notes]


# ------------------------------------------------------------------------------------------------
# By hand


def test_header_and_a_scale_by_hand(tmp_path):
    pitches = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62]
    notes = [*samples.scale_notes(pitches), (7.0, 1.0, 60)]
    tune = convert(tmp_path, notes, title="Up and Down", qpm=100, meter=(4, 4), key="C")
    assert tune.text.split("\n")[:6] == [
        "X:1", "T:Up and Down", "M:4/4", "L:1/8", "Q:1/4=100", "K:C",
    ]  # fmt: skip
    assert body(tune) == "CD EF GA Bc|BA GF ED C2|]"
    assert (tune.title, tune.key, tune.meter) == ("Up and Down", "C", "4/4")
    assert tune.source == f"{tmp_path / 'tune.mid'}#track:2"


def test_octave_marks(tmp_path):
    notes = [(i, 1, pitch) for i, pitch in enumerate([36, 48, 60, 72, 84, 96, 59, 71])]
    assert body(convert(tmp_path, notes)) == "C,,2 C,2 C2 c2|c'2 c''2 B,2 B2|]"


def test_accidentals_are_bar_scoped_and_naturals_marked(tmp_path):
    bar1 = [66, 65, 66, 67, 69, 77, 78, 79]  # F# F F# G A f f# g in G major
    notes = [*samples.scale_notes(bar1), (4, 2, 66), (6, 2, 67)]
    tune = convert(tmp_path, notes, key="G")
    assert tune.key == "G"
    assert body(tune) == "F=F ^FG A=f ^fg|F4 G4|]"


def test_an_accidental_in_another_octave_is_marked_for_every_reader(tmp_path):
    # ABC 2.1 scopes ^c to its octave, abc2midi to every octave: "=C" makes both read C natural.
    notes = samples.scale_notes([73, 60, 62, 73, 72, 74, 76, 72])
    tune = convert(tmp_path, notes)
    assert body(tune) == "^c=C D^c =cd ec|]"
    assert [pitch for _, pitch in played(tune.text)] == [73, 60, 62, 73, 72, 74, 76, 72]


def test_notes_tied_across_bar_lines_and_rests(tmp_path):
    notes = [(0, 1, 60, 110), (1, 1, 60), (2, 1, 60), (3, 2, 62), (5, 0.5, 64), (6, 1, 64),
             (7, 1, 64), (8, 4, 65, 110)]  # fmt: skip
    assert body(convert(tmp_path, notes)) == "C2 C2 C2 D2-|D2 Ez E2 E2|F8|]"


def test_pickup_bar_found_from_long_and_loud_notes(tmp_path):
    # A jig with an eighth-note upbeat: downbeats louder, as a player or abc2midi stresses them.
    jig = [62, 67, 69, 67, 67, 69, 71, 69, 71, 69, 71, 74, 79, 74]
    lengths = [0.5] * 10 + [1.0, 0.5, 1.5, 1.5]
    notes, start = [], 0.0
    for pitch, length in zip(jig, lengths):
        loud = (start - 0.5) % 3 == 0
        notes.append((start, length, pitch, 110 if loud else 80))
        start += length
    tune = convert(tmp_path, notes, meter=(6, 8), key="G")
    assert body(tune) == "D|GAG GAB|ABA B2d|g3 d3|]"


def test_triplets_are_kept(tmp_path):
    third = 1 / 3
    eighth_triplet = [(0, third, 60), (third, third, 62), (2 * third, third, 64), (1, 1, 65)]
    assert body(convert(tmp_path, eighth_triplet, meter=(2, 4))) == "(3CDE F2|]"
    sixth = 1 / 6
    sixteenth_triplet = [(0, sixth, 60), (sixth, sixth, 62), (2 * sixth, sixth, 64),
                         (0.5, 0.5, 65), (1, 1, 67)]  # fmt: skip
    tune = convert(tmp_path, sixteenth_triplet, meter=(2, 4))
    assert body(tune) == "(3C/D/E/F G2|]"
    assert played(tune.text) == [(0, 60), (0.1667, 62), (0.3333, 64), (0.5, 65), (1.0, 67)]


def test_onsets_snap_to_the_grid_and_grid_option(tmp_path):
    # A player's timing: up to a 32nd early or late.
    wobbly = [(0.05, 0.45, 60), (0.45, 0.5, 62), (1.04, 0.9, 64), (1.97, 2.0, 65)]
    path = samples.melody_file(tmp_path / "wobbly.mid", wobbly)
    assert body(midi_to_tune(path)) == "CD E2 F4|]"
    quick = samples.scale_notes([60, 62, 64, 65], 0.125)
    quick = samples.melody_file(tmp_path / "quick.mid", quick)
    assert body(midi_to_tune(quick, grid=8)) == "C/4D/4E/4F/4|]"
    with pytest.raises(ValueError, match="grid"):
        midi_to_tune(quick, grid=3)


@pytest.mark.parametrize(
    "pitches, key",
    [
        ([57, 59, 60, 62, 64, 62, 60, 59, 57, 64, 62, 59, 57, 57], "Ador"),  # A B C D E, F# absent
        ([62, 66, 69, 72, 69, 66, 64, 62, 67, 69, 72, 69, 66, 62], "Dmix"),  # D with C natural
        ([64, 66, 67, 71, 67, 66, 64, 71, 72, 71, 67, 66, 64, 64], "Em"),
        ([62, 66, 69, 73, 74, 69, 66, 64, 62, 71, 69, 66, 64, 62], "D"),
        ([65, 69, 72, 70, 69, 67, 65, 72, 70, 69, 67, 65, 64, 65], "F"),
    ],
)
def test_key_and_mode_inferred_without_a_key_signature(tmp_path, pitches, key):
    assert convert(tmp_path, samples.scale_notes(pitches), key=None).key == key


def test_key_signature_gives_the_sharps_and_notes_the_mode(tmp_path):
    dorian = samples.scale_notes([57, 59, 60, 62, 64, 62, 60, 59, 57, 64, 62, 59, 57, 57])
    assert convert(tmp_path, dorian, key="G").key == "Ador"
    assert convert(tmp_path, dorian, key="Em").key == "Ador"


@pytest.mark.parametrize(
    "pattern, meter",
    [
        ([(1, 1), (0.5, 0), (1.5, 0), (0.5, 1), (0.5, 0), (0.5, 0), (0.5, 0), (0.5, 0), (0.5, 0)],
         "6/8"),
        ([(2, 1), (1, 0), (1, 1), (1, 0), (1, 0)], "3/4"),
    ],
)
def test_meter_inferred_without_a_time_signature(tmp_path, pattern, meter):
    """Two bars of a jig and of a waltz, four times over, loud on downbeats."""
    notes, start = [], 0.0
    for index in range(4 * len(pattern)):
        length, loud = pattern[index % len(pattern)]
        notes.append((start, length, 60 + index % 7, 110 if loud else 80))
        start += length
    assert convert(tmp_path, notes, meter=None).meter == meter


def test_tempo_title_and_defaults(tmp_path):
    notes = samples.scale_notes([60, 62, 64, 65, 67, 65, 64, 62])
    path = samples.save(tmp_path / "My Reel.mid", [samples.note_track(notes, name="Track 1")])
    tune = midi_to_tune(path)
    fields = header_fields(tune.text)
    assert (fields["T"], fields["Q"], fields["M"]) == ("My Reel", "1/4=120", "4/4")
    named = samples.save(tmp_path / "x.mid", [samples.note_track(notes, name="The Kesh")])
    assert midi_to_tune(named).title == "The Kesh"
    fast = convert(tmp_path, notes, title="Fast", qpm=183.4)
    assert header_fields(fast.text)["Q"] == "1/4=183"


# ------------------------------------------------------------------------------------------------
# Which notes are the melody


TUNE = [72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72, 74, 76, 74, 72, 72]


def test_melody_is_the_tune_not_the_bass_chords_or_drums(tmp_path):
    tune = samples.scale_notes(TUNE)
    bass = samples.scale_notes([36 + (i % 5) for i in range(16)])  # as busy as the tune, lower
    chords = [(2 * i, 2, pitch) for i in range(4) for pitch in (55, 60, 64)]  # above the bass
    drums = [(i / 2, 0.25, 42) for i in range(16)]
    path = samples.save(
        tmp_path / "band.mid",
        [
            samples.conductor(title="Band"),
            samples.note_track(chords, channel=1, name="Chords"),
            samples.note_track(bass, channel=2, name="Bass"),
            samples.note_track(drums, channel=9, name="Drums"),
            samples.note_track(tune, channel=0, name="Fiddle"),
        ],
    )
    converted = midi_to_tune(path)
    assert [pitch for _, pitch in played(converted.text)] == TUNE
    assert converted.source.endswith("#track:5") and converted.title == "Band"


def test_type_0_file_parts_are_split_by_channel(tmp_path):
    tune = samples.note_track(samples.scale_notes(TUNE), channel=3)
    bass = samples.note_track(samples.scale_notes([40] * 16), channel=5)
    merged = mido.merge_tracks([tune, bass])
    converted = midi_to_tune(samples.save(tmp_path / "zero.mid", [merged], kind=0))
    assert [pitch for _, pitch in played(converted.text)] == TUNE


def test_piano_with_both_hands_on_one_channel_gives_its_top_voice(tmp_path):
    right = samples.scale_notes(TUNE)
    left = [(2 * i, 2, pitch) for i in range(4) for pitch in (48, 55)]  # held chords under it
    piano = samples.note_track(sorted(right + left), channel=0)
    converted = midi_to_tune(samples.save(tmp_path / "piano.mid", [samples.conductor(), piano]))
    assert [pitch for _, pitch in played(converted.text)] == TUNE


def test_a_grace_note_gives_way_to_the_note_it_ornaments(tmp_path):
    # A high grace note played 30 ms before the beat: on a sixteenth grid both land on the beat.
    notes = [(0, 1, 60), (1.94, 0.06, 74), (2, 2, 67), (4, 1, 64), (5, 1, 62), (6, 2, 60)]
    assert body(convert(tmp_path, notes)) == "C2 z2 G4|E2 D2 C4|]"


def test_overlapping_legato_notes_are_cut_at_the_next_onset(tmp_path):
    notes = [(i * 0.5, 0.8, pitch) for i, pitch in enumerate([60, 62, 64])] + [(1.5, 0.5, 65)]
    assert body(convert(tmp_path, notes)) == "CD EF|]"


# ------------------------------------------------------------------------------------------------
# Real tunes: bundled corpus -> our MIDI -> ABC -> MIDI


def _melody_of_midi(path: Path) -> list[tuple[float, int]]:
    """(onset in quarter notes, top pitch at that onset), read by pretty_midi."""
    midi = pretty_midi.PrettyMIDI(str(path))
    qpm = midi.get_tempo_changes()[1][0]
    top: dict[float, int] = {}
    for instrument in midi.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            onset = round(note.start * qpm / 60, 4)
            top[onset] = max(top.get(onset, 0), note.pitch)
    return sorted(top.items())


def _on_grid(beats: float) -> bool:
    """On a sixteenth or on a third of an eighth (triplets)."""
    return any(abs(beats * n - round(beats * n)) < 2e-3 for n in (4, 6))


def _compare(before, after) -> str:
    """"same", or the kind of difference between two melodies."""
    off_grid_input = not all(_on_grid(onset - before[0][0]) for onset, _ in before)
    if [pitch for _, pitch in before] != [pitch for _, pitch in after]:
        return "pitches differ (input finer than the grid)" if off_grid_input else "pitches differ"
    for (onset, _), (onset_after, _) in zip(before, after):
        onset, onset_after = onset - before[0][0], onset_after - after[0][0]
        if _on_grid(onset) and abs(onset - onset_after) > 0.01:
            return "onset moved"
        if abs(onset - onset_after) > 0.26:
            return "onset moved over a grid step"
    return "same"


@functools.cache
def _corpus_tunes():
    return load_corpus()[0]


def _round_trip(tune, folder: Path) -> str:
    first, second = folder / "first.mid", folder / "second.mid"
    write_midi(abc_to_performance(tune.text), first)
    converted = midi_to_tune(first)
    try:
        write_midi(abc_to_performance(converted.text), second)
    except RenderError as error:
        return f"converted ABC does not render ({error.reason})"
    return _compare(_melody_of_midi(first), _melody_of_midi(second))


@pytest.mark.slow
def test_round_trip_keeps_pitches_and_onsets_of_real_tunes(tmp_path):
    """Bundled-corpus ABC -> our MIDI -> ABC -> MIDI, on every 15th tune that renders."""
    kinds: collections.Counter = collections.Counter()
    for tune in _corpus_tunes()[::15]:
        try:
            abc_to_performance(tune.text)
        except RenderError:
            continue
        kinds[_round_trip(tune, tmp_path)] += 1
    total = sum(kinds.values())
    share = kinds["same"] / total
    print(f"\nround trip: {kinds['same']}/{total} same ({share:.1%}); {dict(kinds)}")
    assert total > 250
    assert kinds["same"] >= 0.95 * total
    assert not [kind for kind in kinds if kind.startswith("converted")]


def _without_meta(path: Path, kinds: tuple[str, ...]) -> bytes:
    midi = mido.MidiFile(path)
    for track in midi.tracks:
        track[:] = [message for message in track if message.type not in kinds]
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def test_meter_and_key_of_real_tunes_without_signatures(tmp_path):
    """Real tunes through our MIDI writer with their time and key signatures removed: how often the
    inferred meter and key are the transcriber's."""
    from musicgen.music.abc_reader import parse_key

    counts: collections.Counter = collections.Counter()
    same_beat = {("2/2", "2/4"), ("4/4", "2/4"), ("2/4", "4/4"), ("2/2", "4/4"), ("12/8", "6/8")}
    for tune in _corpus_tunes()[::20]:
        try:
            key = parse_key(tune.key).name
            write_midi(abc_to_performance(tune.text), tmp_path / "a.mid")
        except RenderError:
            continue
        meter = {"C": "4/4", "C|": "2/2"}.get(tune.meter, tune.meter)
        with_key = midi_to_tune(tmp_path / "a.mid")
        bare = midi_bytes_to_tune(
            _without_meta(tmp_path / "a.mid", ("time_signature", "key_signature")), "a", "a"
        )
        counts["tunes"] += 1
        counts["meter"] += bare.meter == meter
        counts["meter, same beat"] += bare.meter == meter or (meter, bare.meter) in same_beat
        counts["key"] += parse_key(bare.key).name == key
        counts["key with signature"] += parse_key(with_key.key).name == key
    shares = {name: round(n / counts["tunes"], 3) for name, n in counts.items() if name != "tunes"}
    print(f"\nwithout signatures, {counts['tunes']} tunes: {shares}")
    assert counts["tunes"] > 200
    assert shares["meter"] >= 0.6 and shares["meter, same beat"] >= 0.9
    assert shares["key"] >= 0.65 and shares["key with signature"] >= 0.8


def _written_by_music21(tune, path: Path) -> None:
    from music21 import converter

    score = converter.parseData(tune.text, format="abc")
    score.write("midi", fp=str(path))


@pytest.mark.slow
def test_midi_written_by_music21(tmp_path):
    """music21's MIDI writer (its own ticks, tracks and meta events) instead of ours."""
    kinds: collections.Counter = collections.Counter()
    for tune in _corpus_tunes()[7::400]:
        path = tmp_path / "music21.mid"
        try:
            _written_by_music21(tune, path)
        except Exception:  # noqa: BLE001  (music21 fails on some tunes; not what we test)
            continue
        converted = midi_to_tune(path)
        assert header_fields(converted.text)["M"] == (
            {"C": "4/4", "C|": "2/2"}.get(tune.meter, tune.meter)
        ), tune.source
        (tmp_path / "ours.mid").unlink(missing_ok=True)
        write_midi(abc_to_performance(converted.text), tmp_path / "ours.mid")
        kinds[_compare(_melody_of_midi(path), _melody_of_midi(tmp_path / "ours.mid"))] += 1
    print(f"\nmusic21's MIDI: {dict(kinds)}")
    assert sum(kinds.values()) >= 8
    assert kinds["same"] >= sum(kinds.values()) - 1


def _abc2midi(text: str, folder: Path, *options: str) -> Path:
    source, target = folder / "in.abc", folder / "abc2midi.mid"
    source.write_text(text, encoding="utf-8")
    target.unlink(missing_ok=True)
    done = subprocess.run(
        ["abc2midi", str(source), "-o", str(target), "-silent", *options],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and target.exists(), done.stdout + done.stderr
    return target


def _with_chords(text: str) -> str:
    """The tune without ornaments (abc2midi plays them, we do not) and with the key's chord at the
    start of every bar, which abc2midi plays as a bass and chord accompaniment."""
    from test_render import _plain_for_abc2midi

    header, _, music = _plain_for_abc2midi(text).partition("\nK:")
    key_line, _, music = music.partition("\n")
    chord = key_line[0] + ("m" if key_line[1:].lower().startswith(("m", "min", "aeo")) else "")
    music = re.sub(r"\|\s*(?=[A-Ga-gz^_=(])", f'|"{chord}"', re.sub(r'"[^"\n]*"', "", music))
    return f"{header}\nK:{key_line}\n{music}"


@needs_abc2midi
@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature:RuntimeWarning")  # pretty_midi
def test_midi_written_by_abc2midi_with_its_chord_accompaniment(tmp_path):
    """abc2midi plays chord symbols as bass and chords on other channels: the melody must still be
    found. The reference is abc2midi's rendering of the same tune without the chords."""
    kinds: collections.Counter = collections.Counter()
    for tune in _corpus_tunes()[5::300]:
        text = _with_chords(tune.text)
        plain = _melody_of_midi(_abc2midi(text, tmp_path, "-NGUI", "-NGRA", "-NFER"))
        midi = _abc2midi(text, tmp_path, "-NGRA", "-NFER")
        assert len(pretty_midi.PrettyMIDI(str(midi)).instruments) > 1 or '"' not in text
        converted = midi_to_tune(midi)
        write_midi(abc_to_performance(converted.text), tmp_path / "ours.mid")
        kinds[_compare(plain, _melody_of_midi(tmp_path / "ours.mid"))] += 1
    print(f"\nabc2midi's MIDI: {dict(kinds)}")
    assert sum(kinds.values()) >= 12
    assert kinds["same"] >= sum(kinds.values()) - 1


# ------------------------------------------------------------------------------------------------
# The converted ABC read by other readers


@functools.cache
def _converted_sample(folder: Path) -> list[tuple[list[int], str]]:
    """(melody pitches of our MIDI, converted ABC) for 12 tunes across the corpus."""
    pairs = []
    for index, tune in enumerate(_corpus_tunes()[3::370]):
        path = folder / f"{index}.mid"
        write_midi(abc_to_performance(tune.text), path)
        pairs.append(([p for _, p in _melody_of_midi(path)], midi_to_tune(path).text))
    return pairs


def _merge_music21_ties(notes) -> list[int]:
    pitches = []
    for note in notes:
        if note.tie is not None and note.tie.type in ("stop", "continue"):
            continue
        pitches.append(max(p.midi for p in note.pitches))
    return pitches


def test_music21_reads_the_converted_abc(tmp_path):
    """music21 reads the notes we meant, and every bar but the pickup and the last lasts a bar."""
    from music21 import converter

    for pitches, text in _converted_sample(tmp_path):
        score = converter.parseData(text, format="abc")
        assert _merge_music21_ties(score.recurse().notes) == pitches, text
        meter = score.recurse().getElementsByClass("TimeSignature").first()
        bars = list(score.parts[0].getElementsByClass("Measure"))
        lengths = {bar.duration.quarterLength for bar in bars[1:-1]}
        assert lengths == {meter.barDuration.quarterLength}, text
        assert 0 < bars[0].duration.quarterLength <= meter.barDuration.quarterLength


@needs_abc2midi
def test_abc2midi_accepts_the_converted_abc(tmp_path):
    for pitches, text in _converted_sample(tmp_path):
        theirs = _abc2midi(text, tmp_path)
        assert [p for _, p in _melody_of_midi(theirs)] == pitches, text


# ------------------------------------------------------------------------------------------------
# Bad files


@pytest.mark.parametrize("kind", samples.BAD_KINDS)
def test_bad_midi_raises_parse_error_with_a_reason(tmp_path, kind):
    path = samples.bad_midi(tmp_path, kind)
    with pytest.raises(ParseError) as caught:
        midi_to_tune(path)
    assert caught.value.reason == samples.BAD_REASONS[kind] in MIDI_REASONS
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "; " in message


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(ParseError, match="cannot read the file") as caught:
        midi_to_tune(tmp_path / "gone.mid")
    assert caught.value.reason == "unreadable"


def test_notes_never_released_end_with_their_track(tmp_path):
    track = mido.MidiTrack([mido.Message("note_on", note=62, velocity=80, time=0),
                            mido.Message("note_on", note=64, velocity=80, time=480),
                            mido.MetaMessage("end_of_track", time=480)])  # fmt: skip
    path = samples.save(tmp_path / "held.mid", [samples.conductor(), track])
    assert body(midi_to_tune(path)) == "D2 E2|]"


@functools.cache
def _good_bytes() -> bytes:
    midi = mido.MidiFile(ticks_per_beat=samples.TPB)
    midi.tracks += [samples.conductor(), samples.note_track(samples.scale_notes(TUNE))]
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def _only_parse_errors(data: bytes) -> None:
    try:
        tune = midi_bytes_to_tune(data, "random", "random.mid")
    except ParseError as error:
        assert error.reason in MIDI_REASONS, error.reason
        return
    assert tune.text.startswith("X:1\n") and "K:" in tune.text


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_parse_error(data):
    _only_parse_errors(data)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 2), st.integers(1, 4), st.integers(-2, 960))
def test_random_tracks_behind_a_valid_header_raise_only_parse_error(payload, kind, tracks, tpb):
    header = b"MThd" + (6).to_bytes(4, "big") + kind.to_bytes(2, "big") + tracks.to_bytes(2, "big")
    header += tpb.to_bytes(2, "big", signed=True)
    chunk = b"MTrk" + len(payload).to_bytes(4, "big") + payload
    _only_parse_errors(header + chunk * tracks)


@FUZZ
@given(st.lists(st.tuples(st.integers(14, 400), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_good_files_raise_only_parse_error(flips):
    data = bytearray(_good_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    _only_parse_errors(bytes(data))


METER_CHOICES = [None, (4, 4), (3, 4), (6, 8), (2, 2), (5, 8), (7, 4), (1, 32), (12, 8), (3, 16),
                 (2, 1), (3, 2), (32, 32)]  # fmt: skip
KEY_CHOICES = [None, "C", "G", "Bb", "F#", "Ebm", "C#", "Cb"]


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(1, 80), st.integers(21, 108),
                  st.integers(1, 127)),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from(METER_CHOICES),
    st.sampled_from(KEY_CHOICES),
    st.sampled_from([1, 3, 96, 480, 1000]),
    st.sampled_from([2, 4, 8]),
)  # fmt: skip
def test_any_melody_becomes_abc_that_plays(notes, meter, key, ticks_per_beat, grid):
    """Random notes (onsets and lengths in 1/24ths of a quarter, any pitch and velocity), any meter
    and key signature, any resolution: the ABC parses, plays every one of its notes, and never has
    more notes than the file."""
    track = mido.MidiTrack()
    events = []
    for start, length, pitch, velocity in notes:
        on, off = start * ticks_per_beat // 24, (start + length) * ticks_per_beat // 24
        events += [(on, 1, mido.Message("note_on", note=pitch, velocity=velocity)),
                   (max(off, on + 1), 0, mido.Message("note_off", note=pitch))]  # fmt: skip
    now = 0
    for tick, _, message in sorted(events, key=lambda event: event[:2]):
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks += [samples.conductor(meter=meter, key=key), track]
    buffer = io.BytesIO()
    midi.save(file=buffer)
    tune = midi_bytes_to_tune(buffer.getvalue(), "random", "random.mid", grid=grid)
    performance = abc_to_performance(tune.text)
    assert 0 < len(performance.notes) <= len({start for start, *_ in notes})
    assert {note.pitch for note in performance.notes} <= {pitch for _, _, pitch, _ in notes}
