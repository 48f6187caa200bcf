"""The streamed, encoded and cached corpus (musicgen.data.encoded) on real tunes: the same tunes,
split, vocabulary and id streams as the in-memory path; the cache is used, invalidated and rebuilt;
a resumed run's vocabulary wins; memory stays bounded; `musicgen train` uses it end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import large_corpus  # bench/large_corpus.py, on the path through setup.cfg
import numpy as np
import pytest
from cli_checks import MICRO_RUN
from click.testing import CliRunner

from musicgen.data import corpus as corpus_module
from musicgen.data import encoded_build
from musicgen.data.corpus import load_corpus, music21_corpus_folder
from musicgen.data.encoded import default_cache_dir, load_encoded_corpus
from musicgen.data.vocab import BOS, EOS, Vocabulary
from musicgen.errors import CorpusError, VocabularyError
from musicgen.music.keyroot import to_common_root

TUNEBOOK = Path(__file__).parent / "data" / "abc" / "tunebook.abc"  # 4 good tunes, 3 broken
MUSIC21 = music21_corpus_folder()
ONEILLS = MUSIC21 / "oneills1850" / "0001-0050.abc"
LATIN1 = "X:1\nT:Slán Go Fóill\nM:6/8\nL:1/8\nK:G\n|:GAG GAB|ABA ABd|edd gdd|edB dBA:|\n"


@pytest.fixture(scope="module")
def bundled():
    """The bundled corpus the old way (every tune in memory) and encoded, with no cache."""
    tunes, report = load_corpus()
    return tunes, report, load_encoded_corpus(use_cache=False)


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Real tunebooks, a duplicate of one, a Latin-1 book, a broken book and a binary file."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(ONEILLS, folder / "a-oneills.abc")
    shutil.copy(MUSIC21 / "oneills1850" / "0051-0100.abc", folder / "b-oneills.abc")
    shutil.copy(ONEILLS, folder / "c-again.abc")  # 50 duplicates
    shutil.copy(TUNEBOOK, folder / "d-half-broken.abc")
    (folder / "e-latin1.abc").write_bytes(LATIN1.encode("latin-1"))
    (folder / "f-binary.abc").write_bytes(bytes(range(256)))
    return folder


def test_bundled_corpus_streams_to_the_same_tunes_split_vocabulary_and_ids(bundled):
    from musicgen.data.split import split_tunes
    from musicgen.data.tune_split import encode_stream, tune_start_positions

    tunes, report, corpus = bundled
    train, validation = split_tunes(tunes)
    vocab = Vocabulary.from_texts(t.text for t in tunes)
    assert corpus.characters == vocab.characters
    assert corpus.report.summary() == report.summary()
    assert list(corpus.texts("train")) == [t.text for t in train]
    assert list(corpus.texts("validation")) == [t.text for t in validation]
    assert corpus.tune_sources["validation"] == tuple(t.source for t in validation)
    assert corpus.tune_sources["train"] == tuple(t.source for t in train)
    assert corpus.train.dtype == np.uint8 and not corpus.train.flags.writeable
    assert np.array_equal(corpus.train, encode_stream(train, vocab))
    assert np.array_equal(corpus.validation, encode_stream(validation, vocab))
    assert np.array_equal(corpus.train_starts, tune_start_positions(encode_stream(train, vocab)))
    assert corpus.characters_in["validation"] == sum(len(t.text) for t in validation)


def test_skips_and_duplicates_are_counted_as_the_in_memory_path_counts_them(mixed_folder):
    tunes, report = load_corpus([mixed_folder])
    corpus = load_encoded_corpus([mixed_folder], use_cache=False)
    assert corpus.report.summary() == report.summary()
    assert report.skipped["duplicate"] >= 50 and report.skipped["binary"] == 1
    texts = [*corpus.texts("train"), *corpus.texts("validation")]
    assert sorted(texts) == sorted(t.text for t in tunes)
    assert "á" in corpus.characters
    # A duplicate's error cannot name the first copy (its source is not kept), only count it.
    duplicates = [e for e in corpus.report.errors if e.reason == "duplicate"]
    assert len(duplicates) == report.skipped["duplicate"]
    assert "same tune as an earlier one" in str(duplicates[0])
    assert [str(e) for e in corpus.report.file_errors()] == [str(e) for e in report.file_errors()]
    assert corpus.sources["train"][0] == str(mixed_folder / "a-oneills.abc")


def test_a_vocabulary_of_more_than_256_ids_is_stored_as_uint16(tmp_path):
    from musicgen.data.split import split_tunes
    from musicgen.data.tune_split import encode_stream

    tunes = load_corpus([ONEILLS])[0][:30]
    # Titles in 300 CJK characters, ten a tune: 252 characters would still fit a byte.
    texts = [
        t.text.replace("T:", "T:" + "".join(chr(0x4E00 + 10 * i + k) for k in range(10)), 1)
        for i, t in enumerate(tunes)
    ]
    book = tmp_path / "wide.abc"
    book.write_text("\n".join(texts), encoding="utf-8")
    reference = load_corpus([book])[0]
    corpus = load_encoded_corpus([book], use_cache=False)
    vocab = Vocabulary.from_texts(t.text for t in reference)
    assert len(vocab) > 256 and corpus.characters == vocab.characters
    assert corpus.train.dtype == np.uint16
    train, validation = split_tunes(reference)
    assert np.array_equal(corpus.train, encode_stream(train, vocab))
    assert list(corpus.texts("validation")) == [t.text for t in validation]


def test_duplicate_hashes_survive_merging(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module._SeenHashes, "MERGE_EVERY", 7)
    folder = tmp_path / "books"
    texts = [t.text for t in load_corpus([ONEILLS])[0]]
    large_corpus.write_tiled_corpus(folder, texts, 120, per_file=30)
    shutil.copy(folder / "book-00000.abc", folder / "book-00009.abc")  # 30 duplicates, read last
    corpus = load_encoded_corpus([folder], use_cache=False)
    assert corpus.report.kept == 120 and corpus.report.skipped["duplicate"] == 30


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.3, 1.0, 2.0])
def test_small_corpora_split_as_split_tunes_splits_them(tmp_path, fraction):
    from musicgen.data.split import split_tunes

    folder = tmp_path / "five"
    folder.mkdir()
    five = load_corpus([ONEILLS])[0][:5]
    for i, tune in enumerate(five):
        (folder / f"{i}.abc").write_text(tune.text)
    train, validation = split_tunes(five, fraction)
    corpus = load_encoded_corpus([folder], fraction=fraction, use_cache=False)
    assert list(corpus.texts("train")) == [t.text for t in train]
    assert list(corpus.texts("validation")) == [t.text for t in validation]
    for split, tunes in (("train", train), ("validation", validation)):  # "...#X:12" -> "X:12"
        numbers = [source.rsplit("#", 1)[1] for source in corpus.tune_sources[split]]
        assert numbers == [tune.source.rsplit("#", 1)[1] for tune in tunes]
    for ids, starts in (
        (corpus.train, corpus.train_starts),
        (corpus.validation, corpus.validation_starts),
    ):
        assert np.array_equal(np.flatnonzero(ids == BOS), starts)
        assert len(ids) == 0 or ids[-1] == EOS


def test_a_corpus_past_the_limit_records_its_files_not_each_tune(tmp_path, monkeypatch):
    monkeypatch.setattr(encoded_build, "TUNE_SOURCES_UP_TO", 100)
    texts = [t.text for t in load_corpus([ONEILLS])[0]]
    large_corpus.write_tiled_corpus(tmp_path / "books", texts, 250, per_file=100)
    corpus = load_encoded_corpus([tmp_path / "books"], fraction=0.2, use_cache=False)
    assert corpus.tune_sources is None
    books = [str(tmp_path / "books" / f"book-{i:05d}.abc") for i in range(3)]
    train, validation = corpus.split_records()
    assert train.per == validation.per == "file"
    assert train.sources == validation.sources == tuple(books)
    assert train.tunes + validation.tunes == 250 and validation.tunes == corpus.tune_count(
        "validation"
    )


def test_second_load_reads_the_cache_without_parsing(tmp_path, monkeypatch, mixed_folder):
    first = load_encoded_corpus([mixed_folder], cache_dir=tmp_path / "cache")
    assert not first.from_cache and first.folder.parent == tmp_path / "cache"

    def no_parsing(*args):
        raise AssertionError("parsed a file although the cache holds it")

    monkeypatch.setattr(corpus_module, "_read_file", no_parsing)
    second = load_encoded_corpus([mixed_folder], cache_dir=tmp_path / "cache")
    assert second.from_cache and second.folder == first.folder
    assert second.report.summary() == first.report.summary()
    assert np.array_equal(second.train, first.train)
    assert list(second.texts("validation")) == list(first.texts("validation"))
    # Other settings are other entries.
    with pytest.raises(AssertionError, match="parsed a file"):
        load_encoded_corpus([mixed_folder], cache_dir=tmp_path / "cache", fraction=0.1)


def test_a_changed_file_invalidates_the_cache(tmp_path, mixed_folder):
    cache = tmp_path / "cache"
    before = load_encoded_corpus([mixed_folder], cache_dir=cache)
    book = mixed_folder / "e-latin1.abc"
    book.write_bytes(
        book.read_bytes() + ("\n" + LATIN1.replace("Slán", "Slán Eile")).encode("latin-1")
    )
    after = load_encoded_corpus([mixed_folder], cache_dir=cache)
    assert not after.from_cache and after.folder != before.folder
    assert after.report.kept == before.report.kept + 1
    (mixed_folder / "g-new.abc").write_text(LATIN1.replace("GAG", "GAB"))
    assert load_encoded_corpus([mixed_folder], cache_dir=cache).report.kept == after.report.kept + 1


def _truncate(entry: Path) -> None:
    path = entry / "train.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_record(entry: Path, **changes) -> None:
    record = json.loads((entry / "corpus.json").read_text())
    (entry / "corpus.json").write_text(json.dumps({**record, **changes}))


DAMAGE = {
    "truncated ids": _truncate,
    "corpus.json not JSON": lambda entry: (entry / "corpus.json").write_text("{not json"),
    "starts missing": lambda entry: (entry / "validation_starts.npy").unlink(),
    "ids shifted": lambda entry: np.save(entry / "train.npy", np.load(entry / "train.npy")[1:]),
    "another format": lambda entry: _edit_record(entry, format=99),
    "a vocabulary with a repeated character": lambda entry: _edit_record(
        entry, characters=["a"] * 2
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_entry_is_rebuilt_with_a_one_line_warning(tmp_path, damage):
    cache = tmp_path / "cache"
    good = load_encoded_corpus([ONEILLS], cache_dir=cache)
    expected = np.array(good.train)
    DAMAGE[damage](good.folder)
    warnings = []
    rebuilt = load_encoded_corpus([ONEILLS], cache_dir=cache, log=warnings.append)
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"musicgen: warning: {good.folder}: unusable cached corpus")
    assert not rebuilt.from_cache and np.array_equal(rebuilt.train, expected)
    assert load_encoded_corpus([ONEILLS], cache_dir=cache, log=warnings.append).from_cache
    assert len(warnings) == 1


def test_a_half_written_entry_is_never_used(tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(encoded_build, "_write_json", disk_full)
    with pytest.raises(OSError, match="No space"):
        load_encoded_corpus([ONEILLS], cache_dir=cache)
    assert list(cache.iterdir()) == []  # the staging folder went too
    monkeypatch.undo()
    assert not load_encoded_corpus([ONEILLS], cache_dir=cache).from_cache


def test_no_usable_tune_is_a_corpus_error_and_leaves_no_entry(tmp_path):
    bad = tmp_path / "bad.abc"
    bad.write_text("X:1\nT:No Key\n|:GAG:|\n")
    with pytest.raises(CorpusError, match="no usable tune"):
        load_encoded_corpus([bad], cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_default_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("MUSICGEN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "musicgen" / "corpus"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "musicgen" / "corpus"


def test_ids_remap_to_a_saved_vocabulary_with_more_characters(tmp_path):
    corpus = load_encoded_corpus([ONEILLS], use_cache=False)
    saved = Vocabulary.from_texts([*corpus.characters, "é", "~", "\u00a0"])
    assert saved.characters != corpus.characters
    train, validation = corpus.ids_in(saved)
    texts = list(corpus.texts("train"))
    pieces = np.split(train, corpus.train_starts[1:])
    assert [saved.decode(piece) for piece in pieces] == texts
    assert saved.decode(validation) == "".join(corpus.texts("validation"))
    assert corpus.ids_in(corpus.vocabulary())[0] is corpus.train  # its own vocabulary: no copy
    with pytest.raises(VocabularyError, match="'A'"):
        corpus.ids_in(Vocabulary(c for c in corpus.characters if c != "A"))


def test_peak_memory_stays_bounded_while_encoding_50k_tunes(tmp_path):
    """Streaming 50,000 tunes (about 14 MB of text) grows the process by under 25 MB (measured:
    12 MB), while reading them into memory the old way grows it by more than that (48 MB)."""
    texts = [t.text for t in load_corpus()[0]]
    large_corpus.write_tiled_corpus(tmp_path / "tiled", texts, 50_000)
    streamed = large_corpus.run_child("ingest", str(tmp_path / "tiled"), str(tmp_path / "cache"))
    in_memory = large_corpus.run_child("memory", str(tmp_path / "tiled"))
    assert streamed["tunes"] == in_memory["tunes"] == 50_000
    streamed_growth = streamed["peak_rss_mb"] - streamed["after_import_rss_mb"]
    in_memory_growth = in_memory["peak_rss_mb"] - in_memory["after_import_rss_mb"]
    assert streamed_growth < 25, streamed
    assert streamed_growth < in_memory_growth, (streamed, in_memory)


# --- training from the encoded corpus ------------------------------------------------------------

TINY = [*MICRO_RUN, "--eval-every", "2", "--checkpoint-every", "2"]


def train_cli(*args: str, cache: Path):
    from musicgen.cli import main

    return CliRunner(env={"MUSICGEN_CACHE_DIR": str(cache)}).invoke(main, ["train", *args, *TINY])


@pytest.fixture(scope="module")
def tiled_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiled")
    texts = [t.text for t in load_corpus([ONEILLS])[0]]
    large_corpus.write_tiled_corpus(folder, texts, 400, per_file=100)
    return folder


@pytest.mark.slow
def test_cli_trains_twice_on_a_folder_and_the_second_run_uses_the_cache(tiled_folder, tmp_path):
    cache = tmp_path / "cache"
    first = train_cli(
        "--data", str(tiled_folder), "--run-dir", str(tmp_path / "one"), "--steps", "3", cache=cache
    )
    assert first.exit_code == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0] == "read 400 tunes from 4 files: kept 400, skipped 0"
    assert "cached corpus" not in first.stderr
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "train.npy").is_file()

    second = train_cli(
        "--data", str(tiled_folder), "--run-dir", str(tmp_path / "two"), "--steps", "3", cache=cache
    )
    assert second.exit_code == 0, second.stderr
    lines = second.stderr.splitlines()
    assert lines[0] == "read 400 tunes from 4 files: kept 400, skipped 0"
    assert lines[1] == f"used the cached corpus {entries[0]} (files unchanged; --no-cache re-reads)"
    record = json.loads((tmp_path / "two" / "corpus.json").read_text())
    assert record["tunes"] == 400 and record["sources_per"] == "tune"
    tunes = load_corpus([tiled_folder])[0]
    assert sorted(record["train_sources"] + record["validation_sources"]) == sorted(
        t.source for t in tunes
    )
    assert not set(record["train_sources"]) & set(record["validation_sources"])
    characters = sum(len(to_common_root(t.text)[0]) for t in tunes)  # read at root C
    assert record["train_characters"] + record["validation_characters"] == characters
    vocab_one = (tmp_path / "one" / "vocab.json").read_text()
    assert (tmp_path / "two" / "vocab.json").read_text() == vocab_one

    third = train_cli(
        "--data",
        str(tiled_folder),
        "--run-dir",
        str(tmp_path / "three"),
        "--steps",
        "1",
        "--no-cache",
        cache=cache,
    )
    assert third.exit_code == 0, third.stderr
    assert "cached corpus" not in third.stderr and len(list(cache.iterdir())) == 1


@pytest.mark.slow
def test_resume_keeps_the_saved_vocabulary_and_remaps_the_cached_ids(tmp_path):
    """A run trained on two books resumes on one of them: the saved vocabulary (with the other
    book's accented letters) wins; a book with a letter it lacks is one clear error."""
    from musicgen.training.streams import Streams

    cache = tmp_path / "cache"
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy(ONEILLS, both / "oneills.abc")
    (both / "latin1.abc").write_bytes(LATIN1.encode("latin-1"))
    run = tmp_path / "run"
    first = train_cli("--data", str(both), "--run-dir", str(run), "--steps", "2", cache=cache)
    assert first.exit_code == 0, first.stderr

    again = train_cli(
        "--data", str(ONEILLS), "--run-dir", str(run), "--resume", "--steps", "3", cache=cache
    )
    assert again.exit_code == 0, again.stderr
    saved = Vocabulary.load(run / "vocab.json")
    assert "á" in saved.characters
    oneills = load_encoded_corpus([ONEILLS], cache_dir=cache, common_root=True)  # the default
    assert oneills.from_cache and "á" not in oneills.characters
    streams = Streams.of(oneills, saved, 32)
    assert saved.decode(streams.train) == "".join(oneills.texts("train"))
    assert np.array_equal(streams.train_starts, np.flatnonzero(streams.train == BOS))

    other = tmp_path / "other.abc"
    other.write_text(LATIN1.replace("Sl\u00e1n", "S\u00e9an"))
    failed = train_cli(
        "--data", str(other), "--run-dir", str(run), "--resume", "--steps", "4", cache=cache
    )
    assert failed.exit_code != 0
    assert failed.stderr.splitlines()[-1].startswith("musicgen: error: these tunes hold")
    assert "lacks: 'é'" in failed.stderr and "Traceback" not in failed.stderr


def test_evaluate_finds_the_runs_validation_tunes(tmp_path, tiled_folder):
    from musicgen.config import DataConfig, RunConfig
    from musicgen.evaluation.evaluate import run_inputs

    config = RunConfig(data=DataConfig(paths=(str(tiled_folder),)))
    inputs = run_inputs(config)
    corpus = load_encoded_corpus([tiled_folder], cache_dir=tmp_path / "cache", common_root=True)
    assert list(inputs.validation_texts) == list(corpus.texts("validation"))
    assert list(inputs.train_texts) == list(corpus.texts("train"))


@pytest.mark.slow
def test_a_bad_file_among_good_ones_is_skipped_and_counted_by_the_cli(mixed_folder, tmp_path):
    result = train_cli(
        "--data",
        str(mixed_folder),
        "--run-dir",
        str(tmp_path / "run"),
        "--steps",
        "1",
        cache=tmp_path / "cache",
    )
    assert result.exit_code == 0, result.stderr
    _, report = load_corpus([mixed_folder])
    assert report.skipped["duplicate"] >= 50 and report.skipped["binary"] == 1
    assert result.stderr.splitlines()[:2] == report.summary().splitlines()


def test_an_unwritable_cache_folder_is_a_warning_not_an_error(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    warnings = []
    corpus = load_encoded_corpus([ONEILLS], cache_dir=blocked / "cache", log=warnings.append)
    assert not corpus.from_cache and corpus.report.kept == 50
    assert len(warnings) == 1 and "cannot write the corpus cache" in warnings[0], warnings


def test_the_library_does_not_need_tensorflow():
    code = textwrap.dedent(
        f"""
        import sys
        from musicgen.data.encoded import load_encoded_corpus
        load_encoded_corpus([{str(ONEILLS)!r}], use_cache=False)
        assert "tensorflow" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
