"""Find tunebooks, read them into normalised Tunes, drop duplicates, and report what was skipped.

With no paths the corpus is the traditional tunes that ship inside the installed music21 package
(O'Neill's 1850, Ryan's Mammoth Collection, Aird's Airs and a folk miscellany), read straight from
its `corpus` folder with no network and without importing music21. Otherwise the paths may be any
mix of ABC files, MIDI files and folders; folders are searched recursively for `*.abc`, `*.mid` and
`*.midi`, skipping hidden files and folders, in sorted order so the corpus is the same on every run.
A `.mid` or `.midi` file becomes one tune through `midi_in.midi_to_tune` (its melody, as ABC); any
other file named explicitly is read as ABC whatever its extension.

One bad tune or file never sinks a corpus: each is counted under a short reason and kept as a
ParseError in the report (a bad MIDI file under one of `midi_in.MIDI_REASONS`). Tunes that are
identical after normalisation, ignoring their `X:` number, are kept once, the first time they are
seen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from musicgen.errors import CorpusError, ParseError
from musicgen.music.abc import Tune, read_text_file, split_tunebook
from musicgen.music.midi_in import DEFAULT_GRID, MIDI_REASONS, MIDI_SUFFIXES, midi_to_tune

DEFAULT_COLLECTIONS = ("oneills1850", "ryansMammoth", "airdsAirs", "miscFolk")
# Reasons that skip a whole file rather than one tune.
FILE_REASONS = frozenset({"binary", "unreadable", "no-tunes", "not-a-file"}) | MIDI_REASONS
CORPUS_SUFFIXES = (".abc", *MIDI_SUFFIXES)
MAX_KEPT_ERRORS = 100  # skipped tunes whose error a streamed load keeps (all are counted)


@dataclass
class CorpusReport:
    """What a corpus load read, kept and skipped.

    Attributes:
        files: files found and opened (or tried).
        tunes_read: tunes found in the files that could be read.
        kept: tunes returned.
        skipped: reason -> count, for tunes (e.g. "duplicate", "no-key") and for whole files
            (the reasons in FILE_REASONS).
        errors: one ParseError per skipped tune or file, in reading order.
        midi_files: MIDI files converted into a tune (counted in `files` too).
    """

    files: int
    tunes_read: int
    kept: int
    skipped: Counter
    errors: list[ParseError] = field(default_factory=list, repr=False)
    midi_files: int = 0

    def file_errors(self) -> list[ParseError]:
        """The errors that skipped a whole file (unreadable, binary, a bad MIDI file...)."""
        return [error for error in self.errors if error.reason in FILE_REASONS]

    def summary(self) -> str:
        """One line, or two when whole files were skipped, e.g.
        "read 20 tunes from 3 files: kept 18, skipped 2 (duplicate 1, no-key 1)"."""
        tune_reasons = Counter({r: n for r, n in self.skipped.items() if r not in FILE_REASONS})
        file_reasons = Counter({r: n for r, n in self.skipped.items() if r in FILE_REASONS})
        lines = [
            f"read {_count(self.tunes_read, 'tune')} from {_count(self.files, 'file')}: "
            f"kept {self.kept}, skipped {tune_reasons.total()}{_reasons(tune_reasons)}"
        ]
        if file_reasons:
            lines.append(f"skipped {_count(file_reasons.total(), 'file')}{_reasons(file_reasons)}")
        return "\n".join(lines)


def music21_corpus_folder() -> Path:
    """The `corpus` folder of the installed music21 package (found without importing it).

    Raises:
        CorpusError: music21 is not installed.
    """
    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        raise CorpusError(
            "the default corpus comes from the music21 package, which is not installed; "
            "run `pip install music21` or pass --data with your own .abc files"
        )
    return Path(spec.origin).parent / "corpus"


def default_corpus_files() -> list[tuple[str, Path]]:
    """The ABC files of the default corpus, found inside the installed music21 package.

    Returns:
        (label, path) pairs in a fixed order, labels like "music21:oneills1850/0001-0050.abc".

    Raises:
        CorpusError: music21 is not installed, or lacks one of DEFAULT_COLLECTIONS.
    """
    root = music21_corpus_folder()
    files = []
    for collection in DEFAULT_COLLECTIONS:
        folder = root / collection
        found = _abc_files_in(folder)
        if not found:
            raise CorpusError(
                f"{folder}: no .abc files in music21's {collection} collection; "
                "reinstall music21 or pass --data with your own .abc files"
            )
        files += [(f"music21:{collection}/{p.relative_to(folder).as_posix()}", p) for p in found]
    return files


def load_corpus(
    paths: Sequence[str | Path] | None = None, grid: int = DEFAULT_GRID
) -> tuple[list[Tune], CorpusReport]:
    """Reads every tune of the corpus, normalised, without duplicates.

    Holds the whole corpus in memory; `stream_corpus` reads a large one tune by tune.

    Args:
        paths: ABC files, MIDI files and folders; None or empty for the default corpus.
        grid: steps a quarter note that MIDI onsets are quantised to (see `midi_in`).

    Returns:
        The kept tunes in reading order, and a report of what was read and skipped.

    Raises:
        CorpusError: a path does not exist or is a folder without .abc or MIDI files; or no usable
            tune was found at all (for a single file, the message says what is wrong with it).
    """
    files = corpus_files(paths)
    report = empty_report(files)
    first_source: dict[str, str] = {}  # text without its X: line -> source of the kept tune

    def earlier(tune: Tune) -> str | None:
        first = first_source.get(_music(tune))
        if first is None:
            first_source[_music(tune)] = tune.source
        return first

    tunes = [tune for _, tune in _kept_tunes(files, grid, report, earlier)]
    return tunes, report


def corpus_files(paths: Sequence[str | Path] | None = None) -> list[tuple[str, Path]]:
    """The (label, path) of every file a corpus load reads, in reading order.

    Args:
        paths: ABC files, MIDI files and folders; None or empty for the default corpus.

    Raises:
        CorpusError: a path does not exist or is a folder without .abc or MIDI files.
    """
    return _user_files(paths) if paths else default_corpus_files()


def stream_corpus(
    files: Sequence[tuple[str, Path]], report: CorpusReport, grid: int = DEFAULT_GRID
) -> Iterator[tuple[int, Tune]]:
    """Yields the kept tunes of `files` one at a time, filling in `report` as it goes.

    Memory stays bounded as the corpus grows: one file's tunes at a time, plus, to drop duplicates,
    an 8-byte hash of each kept tune's text without its X: line (`_SeenHashes`: about 8 bytes a
    tune, 8 MB for a million; two different tunes share a hash with odds of about n^2 / 2^65).
    So a duplicate's error names no earlier source ("same tune as an earlier one"), and of the
    skipped tunes' errors only the first MAX_KEPT_ERRORS are kept in `report.errors` (all are
    counted in `report.skipped`); every skipped file's error is kept.

    Args:
        files: (label, path) pairs from `corpus_files`.
        report: an empty report for `files` (see `empty_report`); counts and errors are added.
        grid: steps a quarter note that MIDI onsets are quantised to (see `midi_in`).

    Yields:
        (index of the tune's file in `files`, tune), in reading order.

    Raises:
        CorpusError: once every file is read, when no tune was usable.
    """
    seen = _SeenHashes()

    def earlier(tune: Tune) -> str | None:
        digest = hashlib.blake2b(_music(tune).encode("utf-8"), digest_size=8).digest()
        return None if seen.add(int.from_bytes(digest, "big")) else "an earlier one"

    yield from _kept_tunes(files, grid, report, earlier, keep_errors=MAX_KEPT_ERRORS)


def empty_report(files: Sequence[tuple[str, Path]]) -> CorpusReport:
    """A report of nothing read yet from `files`, for `stream_corpus` to fill in."""
    return CorpusReport(files=len(files), tunes_read=0, kept=0, skipped=Counter())


def _kept_tunes(
    files: Sequence[tuple[str, Path]],
    grid: int,
    report: CorpusReport,
    earlier: Callable[[Tune], str | None],
    keep_errors: int | None = None,
) -> Iterator[tuple[int, Tune]]:
    """(file index, tune) for each tune `earlier` has not seen; `earlier` returns the source of
    the identical tune kept before (and remembers the tune), or None."""
    for index, (label, path) in enumerate(files):
        try:
            file_tunes, file_errors = _read_file(label, path, grid)
        except ParseError as error:
            report.skipped[error.reason] += 1
            report.errors.append(error)
            continue
        report.midi_files += path.suffix.lower() in MIDI_SUFFIXES
        for error in file_errors:
            _count_skipped_tune(report, error, keep_errors)
        for tune in file_tunes:
            first = earlier(tune)
            if first is not None:
                _count_skipped_tune(report, _duplicate_error(tune, first), keep_errors)
                continue
            report.tunes_read += 1
            report.kept += 1
            yield index, tune
    if not report.kept:
        raise CorpusError(_nothing_usable(files, report))


def unkeep(report: CorpusReport, error: ParseError, keep: int | None = MAX_KEPT_ERRORS) -> None:
    """Counts a tune `stream_corpus` or `load_corpus` kept as skipped after all, for `error`'s
    reason (a later step could not use it, e.g. `keyroot` could not move it to root C)."""
    report.kept -= 1
    report.tunes_read -= 1  # counted again as a read tune by _count_skipped_tune
    _count_skipped_tune(report, error, keep)


def _count_skipped_tune(report: CorpusReport, error: ParseError, keep: int | None) -> None:
    report.skipped[error.reason] += 1
    if error.reason not in FILE_REASONS:
        report.tunes_read += 1
    if keep is None or len(report.errors) < keep or error.reason in FILE_REASONS:
        report.errors.append(error)


class _SeenHashes:
    """A set of 64-bit hashes in about 8 bytes each: a sorted array, plus a Python set of the
    latest ones (about 70 bytes each) merged into it every MERGE_EVERY."""

    MERGE_EVERY = 1 << 16

    def __init__(self):
        self.merged = np.zeros(0, dtype=np.uint64)
        self.recent: set[int] = set()

    def add(self, key: int) -> bool:
        """Adds `key`; False if it was already there."""
        if key in self.recent:
            return False
        # A uint64 key: a plain int below 2**63 would make numpy compare as float64, copying the
        # whole array on every call.
        at = int(np.searchsorted(self.merged, np.uint64(key)))
        if at < len(self.merged) and int(self.merged[at]) == key:
            return False
        self.recent.add(key)
        if len(self.recent) >= self.MERGE_EVERY:
            recent = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
            self.merged = np.sort(np.concatenate([self.merged, recent]))
            self.recent.clear()
        return True


def _music(tune: Tune) -> str:
    """The tune's text without its X: line: what two copies of one tune share."""
    return tune.text.partition("\n")[2]


def _read_file(label: str, path: Path, grid: int) -> tuple[list[Tune], list[ParseError]]:
    """The tunes of one file and the errors of its skipped tunes; a ParseError skips the file."""
    _check_regular_file(label, path)
    if path.suffix.lower() in MIDI_SUFFIXES:
        return [midi_to_tune(path, source=label, grid=grid)], []
    return split_tunebook(read_text_file(path), label)


def _check_regular_file(label: str, path: Path) -> None:
    """Raises ParseError for what cannot be read as a file: opening a FIFO would block forever."""
    try:
        mode = path.stat().st_mode  # follows symlinks; a loop raises ELOOP
    except OSError as error:
        raise ParseError(
            f"{label}: cannot read the file ({error.strerror}); check it exists and is readable",
            "unreadable",
        ) from None
    if not stat.S_ISREG(mode):
        raise ParseError(f"{label}: not a regular file (a FIFO, device or socket)", "not-a-file")


def tunebook_text(tunes: Sequence[Tune]) -> str:
    """One ABC tunebook of `tunes`, numbered X:1, X:2... in order, each after a `%` comment line
    naming its source (comments are dropped when the tunebook is read back)."""
    blocks = []
    for number, tune in enumerate(tunes, start=1):
        music = tune.text.partition("\n")[2]
        source = " ".join(tune.source.split())
        blocks.append(f"% source: {source}\nX:{number}\n{music}")
    return "\n".join(blocks)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _reasons(counts: Counter) -> str:
    if not counts:
        return ""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return " (" + ", ".join(f"{reason} {n}" for reason, n in ordered) + ")"


def _user_files(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(label, path) for each file named or found in a named folder, each file once."""
    found: dict[Path, tuple[str, Path]] = {}
    for given in paths:
        for path in _expand(Path(given)):
            # realpath, unlike Path.resolve, never raises on a symlink loop.
            found.setdefault(Path(os.path.realpath(path)), (str(path), path))
    return list(found.values())


def _expand(path: Path) -> list[Path]:
    if not os.path.lexists(path):
        raise CorpusError(f"{path}: no such file or folder; check the --data path")
    try:
        path.stat()
    except OSError as error:
        raise CorpusError(
            f"{path}: cannot read it ({error.strerror}); check the --data path"
        ) from None
    if path.is_dir():
        files = _abc_files_in(path, CORPUS_SUFFIXES)
        if not files:
            raise CorpusError(
                f"{path}: folder holds no .abc, .mid or .midi files; put tunebooks or MIDI files "
                "in it or pass another path"
            )
        return files
    if not path.is_file():
        raise CorpusError(
            f"{path}: not a regular file (a FIFO, device or socket); pass .abc or MIDI files or "
            "folders to --data"
        )
    return [path]


def _abc_files_in(folder: Path, suffixes: tuple[str, ...] = (".abc",)) -> list[Path]:
    """The files under `folder` ending in `suffixes` (any case), any depth, hidden files and
    folders excluded, sorted."""
    files = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        files += [
            Path(parent, name)
            for name in names
            if name.lower().endswith(suffixes) and not name.startswith(".")
        ]
    return sorted(files)


def _duplicate_error(tune: Tune, first: str) -> ParseError:
    return ParseError(f"{tune.source}: same tune as {first}; kept only the first", "duplicate")


def _nothing_usable(files: list[tuple[str, Path]], report: CorpusReport) -> str:
    if len(files) == 1 and report.errors:
        return f"no usable tune: {report.errors[0]}"
    first = f"; first: {report.errors[0]}" if report.errors else ""
    return (
        f"no usable tune in {len(files)} files ({report.summary().replace(chr(10), '; ')}); "
        f"pass ABC tunebooks whose tunes have X:, K: and notes, or MIDI files with a melody{first}"
    )
