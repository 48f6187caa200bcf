"""Tests for musicgen.data.corpus on the real default corpus and on small real tunebooks."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path

import midi_samples  # noqa: E402
import mido
import pytest

from musicgen.data import corpus
from musicgen.data.corpus import (
    DEFAULT_COLLECTIONS,
    default_corpus_files,
    load_corpus,
    tunebook_text,
)
from musicgen.errors import CorpusError
from musicgen.music.abc import HEADER_FIELDS, parse_tune
from musicgen.music.render import abc_to_midi

TUNEBOOK = Path(__file__).parent / "data" / "abc" / "tunebook.abc"
SOURCE = re.compile(r"^music21:(oneills1850|ryansMammoth|airdsAirs|miscFolk)/[^#]+\.abc#X:\d+$")


@pytest.fixture(scope="module")
def default_corpus():
    return load_corpus()


def _write_midi(path: Path) -> Path:
    midi = mido.MidiFile()
    track = mido.MidiTrack()
    track.append(mido.Message("note_on", note=62, velocity=64, time=0))
    track.append(mido.Message("note_off", note=62, velocity=0, time=480))
    midi.tracks.append(track)
    midi.save(path)
    return path


def test_default_corpus_counts_are_plausible(default_corpus):
    tunes, report = default_corpus
    assert report.files == 1106
    assert 4000 <= report.tunes_read <= 4600
    assert 3500 <= report.kept == len(tunes) <= 4600
    assert report.kept + sum(report.skipped.values()) == report.tunes_read
    assert report.skipped["duplicate"] > 0
    assert re.fullmatch(
        r"read \d+ tunes from 1106 files: kept \d+, skipped \d+( \(.+\))?", report.summary()
    )


def test_default_corpus_provenance(default_corpus):
    tunes, _ = default_corpus
    assert all(SOURCE.match(t.source) for t in tunes)
    collections = Counter(t.source.split(":")[1].split("/")[0] for t in tunes)
    assert set(collections) == set(DEFAULT_COLLECTIONS)
    assert collections["ryansMammoth"] > 1000 and collections["oneills1850"] > 1900
    assert "music21:oneills1850/0001-0050.abc#X:1" in {t.source for t in tunes}


def test_default_corpus_texts_are_clean_and_unique(default_corpus):
    tunes, _ = default_corpus
    for tune in tunes:
        lines = tune.text.split("\n")
        key_line = next(i for i, line in enumerate(lines) if line.startswith("K:"))
        assert lines[0].startswith("X:") and lines[-1] == "" and "" not in lines[:-1]
        assert all(line[0] in HEADER_FIELDS and line[1] == ":" for line in lines[:key_line])
        assert "@" not in tune.text and "%" not in tune.text
        assert not [line for line in lines if line[:2] in {"Z:", "N:", "B:", "S:", "I:", "C:"}]
    assert len({t.text.partition("\n")[2] for t in tunes}) == len(tunes)


def test_default_corpus_is_stable_under_renormalisation(default_corpus):
    tunes, _ = default_corpus
    assert all(parse_tune(t.text, t.source) == t for t in tunes)


def _music21_reading(score):
    time_signature = score.recurse().getElementsByClass("TimeSignature").first()
    key_signature = score.recurse().getElementsByClass("KeySignature").first()
    pitches = [p.nameWithOctave for n in score.recurse().notes for p in n.pitches]
    return key_signature.sharps, time_signature.ratioString, pitches


def test_music21_reads_the_same_music_from_kept_and_original_tunes(default_corpus):
    """music21, an independent ABC reader, hears the same key, meter and notes in our normalised
    text as in the tune it finds by number in the original file."""
    converter = pytest.importorskip("music21.converter")
    abc_format = pytest.importorskip("music21.abcFormat")
    tunes, _ = default_corpus
    files = dict(default_corpus_files())
    for tune in tunes[:: len(tunes) // 20][:20]:
        label, number = tune.source.rsplit("#X:", 1)
        original = converter.parseData(
            files[label].read_text(encoding="latin-1"), format="abc", number=int(number)
        )
        ours = _music21_reading(converter.parseData(tune.text, format="abc"))
        assert ours == _music21_reading(original), tune.source
        assert len(ours[2]) > 0
        key = abc_format.ABCMetadata("K:" + tune.key)
        key.preParse()
        assert key.getKeySignatureObject().sharps == ours[0], tune.source
        assert {"C": "4/4", "C|": "2/2"}.get(tune.meter, tune.meter) == ours[1], tune.source


def test_tunebook_counts_reasons_and_summary():
    tunes, report = load_corpus([TUNEBOOK])
    assert [t.source.rsplit("#", 1)[1] for t in tunes] == ["X:2", "X:3", "X:15", "X:0041"]
    assert all(t.source.startswith(str(TUNEBOOK)) for t in tunes)
    assert (report.files, report.tunes_read, report.kept) == (1, 7, 4)
    assert report.skipped == Counter({"no-key": 1, "no-notes": 1, "duplicate": 1})
    assert report.summary() == (
        "read 7 tunes from 1 file: kept 4, skipped 3 (duplicate 1, no-key 1, no-notes 1)"
    )
    duplicate = next(e for e in report.errors if e.reason == "duplicate")
    assert str(duplicate).startswith(f"{TUNEBOOK}#X:92: same tune as {TUNEBOOK}#X:2")


def test_folders_are_searched_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    shutil.copy(TUNEBOOK, tmp_path / "b" / "deeper" / "book.abc")
    shutil.copy(TUNEBOOK, tmp_path / ".hidden" / "book.abc")
    (tmp_path / "a.abc").write_text("X:1\nT:Lone\nK:G\n|:GAG GAB|ABA ABd:|\n", encoding="utf-8")
    _write_midi(tmp_path / "b" / "tune.mid")
    (tmp_path / "b" / "notes.txt").write_text("X:1\nK:G\nabc\n", encoding="utf-8")
    tunes, report = load_corpus([tmp_path])
    assert (report.files, report.midi_files) == (3, 1)
    assert [t.title for t in tunes] == [
        "Lone",
        "Fare You Well",
        "HEY, CA' THRO' -- JIG",
        "Norman Toy",
        "My Wifes a Wanton wee thing.",
        "tune",
    ]
    assert tunes[1].source == f"{tmp_path / 'b' / 'deeper' / 'book.abc'}#X:2"
    assert tunes[-1].source == f"{tmp_path / 'b' / 'tune.mid'}#track:1"


def test_mixed_files_and_folders_read_each_file_once(tmp_path):
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    tunes, report = load_corpus([tmp_path / "book.abc", str(tmp_path)])
    assert report.files == 1 and report.kept == len(tunes) == 4


def test_binary_abc_among_good_files_is_skipped_with_reason(tmp_path):
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    _write_midi(tmp_path / "really-midi.abc")
    tunes, report = load_corpus([tmp_path])
    assert report.files == 2 and report.kept == 4
    assert report.skipped["binary"] == 1
    assert report.summary().splitlines()[1] == "skipped 1 file (binary 1)"
    assert "really-midi.abc" in str(next(e for e in report.errors if e.reason == "binary"))


def test_dangling_link_among_good_files_is_skipped_as_unreadable(tmp_path):
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    (tmp_path / "moved.abc").symlink_to(tmp_path / "gone.abc")
    _, report = load_corpus([tmp_path])
    assert report.files == 2 and report.kept == 4
    assert report.skipped["unreadable"] == 1
    unreadable = next(e for e in report.errors if e.reason == "unreadable")
    assert "moved.abc: cannot read the file" in str(unreadable)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_among_good_files_is_skipped(tmp_path):
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    locked = tmp_path / "locked.abc"
    shutil.copy(TUNEBOOK, locked)
    locked.chmod(0)
    try:
        _, report = load_corpus([tmp_path])
    finally:
        locked.chmod(0o600)
    assert report.skipped["unreadable"] == 1 and report.kept == 4


def test_nonexistent_path_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match=r"nowhere\.abc: no such file or folder"):
        load_corpus([TUNEBOOK, tmp_path / "nowhere.abc"])


def test_folder_without_abc_or_midi_files_is_a_corpus_error(tmp_path):
    (tmp_path / "tune.txt").write_text("X:1\nK:G\nabc\n", encoding="utf-8")
    (tmp_path / ".hidden.mid").write_bytes(b"")
    message = f"{re.escape(str(tmp_path))}: folder holds no .abc, .mid or .midi files"
    with pytest.raises(CorpusError, match=message):
        load_corpus([tmp_path])


# ------------------------------------------------------------------------------------------------
# MIDI files


@pytest.mark.parametrize("name", ["tune.mid", "TUNE.MIDI"])
def test_explicit_midi_file_becomes_one_tune(tmp_path, name):
    tunes, report = load_corpus([_write_midi(tmp_path / name)])
    assert (report.files, report.midi_files, report.kept) == (1, 1, 1)
    assert tunes[0].text.endswith("K:D\nD2|]\n")
    assert report.summary() == "read 1 tune from 1 file: kept 1, skipped 0"


def test_midi_and_abc_mixed_feed_the_same_vocabulary(tmp_path, default_corpus):
    """Real tunes through musicgen's MIDI writer, read back beside an ABC tunebook: every converted
    tune uses only characters the bundled corpus already has."""
    from musicgen.data.vocab import Vocabulary

    corpus_tunes, _ = default_corpus
    (tmp_path / "midi").mkdir()
    for index, tune in enumerate(corpus_tunes[10::450]):
        abc_to_midi(tune.text, tmp_path / "midi" / f"{index:02d}.midi")
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    tunes, report = load_corpus([tmp_path])
    converted = [t for t in tunes if "#track:" in t.source]
    assert report.midi_files == len(converted) == len(corpus_tunes[10::450])
    assert report.kept == len(converted) + 4
    vocab = Vocabulary.from_texts(t.text for t in corpus_tunes)
    assert all(not vocab.unknown_characters(t.text) for t in converted)
    assert all(parse_tune(t.text, t.source) == t for t in converted)


def test_bad_midi_files_among_good_ones_are_skipped_and_counted(tmp_path):
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    for kind in midi_samples.BAD_KINDS:
        midi_samples.bad_midi(tmp_path, kind)
    tunes, report = load_corpus([tmp_path])
    assert report.kept == len(tunes) == 4
    assert report.files == 1 + len(midi_samples.BAD_KINDS) and report.midi_files == 0
    assert report.skipped == Counter(
        {"no-key": 1, "no-notes": 1, "duplicate": 1}
        | Counter(midi_samples.BAD_REASONS[kind] for kind in midi_samples.BAD_KINDS)
    )
    lines = report.summary().splitlines()
    assert lines[0] == (
        "read 7 tunes from 12 files: kept 4, skipped 3 (duplicate 1, no-key 1, no-notes 1)"
    )
    assert lines[1] == (
        "skipped 11 files (midi-bad-tempo 2, midi-too-large 2, midi-corrupt 1, midi-drums-only 1, "
        "midi-no-notes 1, midi-smpte 1, midi-too-long 1, midi-truncated 1, midi-type-2 1)"
    )
    assert len(report.file_errors()) == len(midi_samples.BAD_KINDS)
    assert all(str(e).startswith(str(tmp_path)) for e in report.file_errors())


@pytest.mark.parametrize("kind", midi_samples.BAD_KINDS)
def test_single_bad_midi_file_is_a_corpus_error_naming_it(tmp_path, kind):
    path = midi_samples.bad_midi(tmp_path, kind)
    with pytest.raises(CorpusError, match=rf"no usable tune: {re.escape(str(path))}: .+; .+"):
        load_corpus([path])


def test_folder_of_bad_midi_files_says_what_the_first_problem_is(tmp_path):
    midi_samples.bad_midi(tmp_path, "drums-only")
    midi_samples.bad_midi(tmp_path, "no-notes")
    with pytest.raises(CorpusError, match=r"no usable tune in 2 files .*first: .*drums-only\.mid"):
        load_corpus([tmp_path])


def test_tunebook_text_numbers_tunes_and_reads_back(tmp_path):
    tunes, _ = load_corpus([TUNEBOOK, _write_midi(tmp_path / "tune.mid")])
    text = tunebook_text(tunes)
    assert [line for line in text.splitlines() if line.startswith("X:")] == [
        f"X:{n}" for n in range(1, len(tunes) + 1)
    ]
    assert f"% source: {tmp_path / 'tune.mid'}#track:1" in text
    book = tmp_path / "book.abc"
    book.write_text(text, encoding="utf-8")
    again, report = load_corpus([book])
    assert [t.text.partition("\n")[2] for t in again] == [t.text.partition("\n")[2] for t in tunes]


def test_single_file_with_nothing_usable_is_a_corpus_error(tmp_path):
    path = tmp_path / "broken.abc"
    path.write_text("X:5\nT:No Key\nM:6/8\n|:GAG GAB|ABA ABd:|\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no usable tune: .*broken\.abc#X:5: no K:"):
        load_corpus([path])


def test_many_files_with_nothing_usable_is_a_corpus_error(tmp_path):
    _write_midi(tmp_path / "a.abc")
    (tmp_path / "b.abc").write_text("% only a comment\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no usable tune in 2 files \(.*binary 1, no-tunes 1\)"):
        load_corpus([tmp_path])


def test_default_corpus_files_labels_and_paths():
    files = default_corpus_files()
    order = {f"music21:{name}": i for i, name in enumerate(DEFAULT_COLLECTIONS)}
    assert len(files) == 1106
    assert files == sorted(files, key=lambda f: (order[f[0].split("/")[0]], f[1]))
    assert files[0][0] == "music21:oneills1850/0001-0050.abc"
    assert all(path.is_file() and path.suffix == ".abc" for _, path in files)


def test_default_corpus_without_music21_is_a_corpus_error(monkeypatch):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError, match="music21 package, which is not installed"):
        load_corpus()


def test_vocabulary_round_trips_every_kept_tune(default_corpus):
    from musicgen.data.vocab import Vocabulary

    tunes, _ = default_corpus
    vocab = Vocabulary.from_texts(t.text for t in tunes)
    assert 60 < len(vocab) < 140
    assert all(vocab.decode(vocab.encode_tune(t.text)) == t.text for t in tunes)
