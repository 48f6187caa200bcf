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

import importlib.util
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from musicgen.abc import Tune, read_text_file, split_tunebook
from musicgen.errors import CorpusError, ParseError
from musicgen.midi_in import DEFAULT_GRID, MIDI_REASONS, MIDI_SUFFIXES, midi_to_tune

DEFAULT_COLLECTIONS = ("oneills1850", "ryansMammoth", "airdsAirs", "miscFolk")
# Reasons that skip a whole file rather than one tune.
FILE_REASONS = frozenset({"binary", "unreadable", "no-tunes"}) | MIDI_REASONS
CORPUS_SUFFIXES = (".abc", *MIDI_SUFFIXES)


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


def default_corpus_files() -> list[tuple[str, Path]]:
    """The ABC files of the default corpus, found inside the installed music21 package.

    Returns:
        (label, path) pairs in a fixed order, labels like "music21:oneills1850/0001-0050.abc".

    Raises:
        CorpusError: music21 is not installed, or lacks one of DEFAULT_COLLECTIONS.
    """
    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        raise CorpusError(
            "the default corpus comes from the music21 package, which is not installed; "
            "run `pip install music21` or pass --data with your own .abc files"
        )
    root = Path(spec.origin).parent / "corpus"
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

    Args:
        paths: ABC files, MIDI files and folders; None or empty for the default corpus.
        grid: steps a quarter note that MIDI onsets are quantised to (see `midi_in`).

    Returns:
        The kept tunes in reading order, and a report of what was read and skipped.

    Raises:
        CorpusError: a path does not exist or is a folder without .abc or MIDI files; or no usable
            tune was found at all (for a single file, the message says what is wrong with it).
    """
    files = _user_files(paths) if paths else default_corpus_files()
    tunes: list[Tune] = []
    errors: list[ParseError] = []
    first_source: dict[str, str] = {}  # text without its X: line -> source of the kept tune
    midi_files = 0
    for label, path in files:
        try:
            file_tunes, file_errors = _read_file(label, path, grid)
        except ParseError as error:
            errors.append(error)
            continue
        midi_files += path.suffix.lower() in MIDI_SUFFIXES
        errors += file_errors
        for tune in file_tunes:
            music = tune.text.partition("\n")[2]
            if music in first_source:
                errors.append(_duplicate_error(tune, first_source[music]))
            else:
                first_source[music] = tune.source
                tunes.append(tune)
    report = _report(len(files), tunes, errors)
    report.midi_files = midi_files
    if not tunes:
        raise CorpusError(_nothing_usable(files, report))
    return tunes, report


def _read_file(label: str, path: Path, grid: int) -> tuple[list[Tune], list[ParseError]]:
    """The tunes of one file and the errors of its skipped tunes; a ParseError skips the file."""
    if path.suffix.lower() in MIDI_SUFFIXES:
        return [midi_to_tune(path, source=label, grid=grid)], []
    return split_tunebook(read_text_file(path), label)


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
            found.setdefault(path.resolve(), (str(path), path))
    return list(found.values())


def _expand(path: Path) -> list[Path]:
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder; check the --data path")
    if path.is_dir():
        files = _abc_files_in(path, CORPUS_SUFFIXES)
        if not files:
            raise CorpusError(
                f"{path}: folder holds no .abc, .mid or .midi files; put tunebooks or MIDI files "
                "in it or pass another path"
            )
        return files
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


def _report(files: int, tunes: list[Tune], errors: list[ParseError]) -> CorpusReport:
    skipped = Counter(error.reason for error in errors)
    tune_skips = sum(n for reason, n in skipped.items() if reason not in FILE_REASONS)
    return CorpusReport(files, len(tunes) + tune_skips, len(tunes), skipped, errors)


def _nothing_usable(files: list[tuple[str, Path]], report: CorpusReport) -> str:
    if len(files) == 1 and report.errors:
        return f"no usable tune: {report.errors[0]}"
    first = f"; first: {report.errors[0]}" if report.errors else ""
    return (
        f"no usable tune in {len(files)} files ({report.summary().replace(chr(10), '; ')}); "
        f"pass ABC tunebooks whose tunes have X:, K: and notes, or MIDI files with a melody{first}"
    )
