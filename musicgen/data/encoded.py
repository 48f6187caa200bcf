"""The corpus encoded once into id files on disk, and a cache of them keyed by the input files.

`musicgen train` reads its corpus through here, so memory stays bounded as the corpus grows: the
tunes are streamed from the files, split and encoded into an entry's files on disk
(`musicgen.data.encoded_build`, which lists them), and the streams are then read back memory-mapped.

The ids are those of `Vocabulary.from_texts` over every kept tune, which is what a new run uses, so
a new run reads them as they are; a resumed run whose saved vocabulary differs gets them remapped.

The cache lives in `$MUSICGEN_CACHE_DIR`, else `$XDG_CACHE_HOME/musicgen/corpus`, else
`~/.cache/musicgen/corpus`, one folder per key: a hash of the format version, musicgen's version
(its ingestion rules may change), the MIDI grid, the validation fraction, the transposition
intervals (when there are any) and each input file's resolved path, size and modification time, in
reading order. An entry is written into a temporary folder and renamed into place, so a
half-written one is never used; one that fails to load is rebuilt with a one-line warning.
Entries of files since changed are not removed: deleting the cache folder at any time is safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from musicgen import __version__
from musicgen.data.augment import AugmentReport
from musicgen.data.corpus import CorpusReport, corpus_files
from musicgen.data.encoded_build import FORMAT_VERSION, build, ids_dtype, remapped
from musicgen.data.split import SPLITS, SplitRecord
from musicgen.data.vocab import BOS, EOS, SPECIAL_TOKENS, Vocabulary
from musicgen.errors import ParseError, VocabularyError, first_line
from musicgen.music.keyroot import Homes
from musicgen.music.midi_in import DEFAULT_GRID

_STALE_SECONDS = 24 * 3600  # an unfinished entry this old was left by a process that died


def default_cache_dir() -> Path:
    """`$MUSICGEN_CACHE_DIR`, else `$XDG_CACHE_HOME/musicgen/corpus`, else
    `~/.cache/musicgen/corpus`."""
    if os.environ.get("MUSICGEN_CACHE_DIR"):
        return Path(os.environ["MUSICGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "musicgen" / "corpus"


def cache_key(
    files: Sequence[tuple[str, Path]],
    grid: int,
    fraction: float,
    transpose: Sequence[int] = (),
    common_root: bool = False,
) -> str:
    """The cache key of reading `files` (in this order) with `grid`, validation `fraction`, the
    training tunes also transposed by `transpose` semitones, and every tune moved to root C with
    `common_root`."""
    described = []
    for _, path in files:
        resolved = Path(os.path.realpath(path))  # never raises on a symlink loop
        try:
            stat = resolved.stat()
            described.append([str(resolved), stat.st_size, stat.st_mtime_ns])
        except OSError:
            described.append([str(resolved), None, None])  # read as "unreadable" when building
    parts = {
        "format": FORMAT_VERSION,
        "musicgen": __version__,
        "grid": grid,
        "fraction": fraction,
        "files": described,
    }
    if transpose:  # absent without augmentation: older entries keep their keys
        parts["transpose"] = [int(s) for s in transpose]
    if common_root:
        parts["common_root"] = True
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class EncodedCorpus:
    """A corpus encoded on disk, its id streams memory-mapped: a `tune_split.SplitCorpus`.

    Attributes:
        folder: the entry's folder (already deleted when the corpus was read without the cache:
            the mapped streams stay readable until dropped).
        characters: the vocabulary's characters, `Vocabulary.from_texts` over every kept tune.
        train: 1-D read-only ids of the training tunes, BOS tune EOS ..., in `vocabulary()`'s ids.
        validation: likewise for the validation tunes.
        train_starts: int64 position of each training tune's BOS in `train`.
        validation_starts: likewise in `validation`.
        report: what ingestion read, kept and skipped (`report.errors`: the skipped files and the
            first skipped tunes).
        sources: split name -> labels of the files its tunes came from, in reading order.
        tune_sources: split name -> each tune's source (as `Tune.source`), or None for a corpus
            of more than TUNE_SOURCES_UP_TO tunes.
        characters_in: split name -> characters of its tunes (BOS and EOS not counted).
        fraction: the validation fraction the tunes were split with.
        from_cache: read from an entry an earlier call wrote, without parsing the files.
        augmentation: what transposing the training tunes made (None without `transpose`); the
            training counts and streams include the copies.
        homes: with `common_root`, the roots the training tunes had before they were moved to C
            (`musicgen.music.keyroot`); None without.
    """

    folder: Path
    characters: tuple[str, ...]
    train: np.ndarray
    validation: np.ndarray
    train_starts: np.ndarray
    validation_starts: np.ndarray
    report: CorpusReport
    sources: dict[str, tuple[str, ...]]
    tune_sources: dict[str, tuple[str, ...]] | None
    characters_in: dict[str, int]
    fraction: float
    from_cache: bool
    augmentation: AugmentReport | None = None
    homes: Homes | None = None

    @property
    def transpose(self) -> tuple[int, ...]:
        return self.augmentation.shifts if self.augmentation else ()

    @property
    def common_root(self) -> bool:
        return self.homes is not None

    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.characters)

    def tune_count(self, split: str) -> int:
        return len(self.train_starts if split == "train" else self.validation_starts)

    def unknown_characters(self, vocab: Vocabulary) -> list[str]:
        """The corpus's characters that `vocab` lacks, in code-point order."""
        return [c for c in self.characters if c not in vocab]

    def ids_in(self, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) streams in `vocab`'s ids.

        The mapped streams themselves when `vocab` is the corpus's own vocabulary; otherwise
        remapped copies in memory (a resumed run whose saved vocabulary has other characters).

        Raises:
            VocabularyError: the corpus holds characters `vocab` lacks.
        """
        if vocab.characters == self.characters:
            return self.train, self.validation
        unknown = self.unknown_characters(vocab)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:8])
            raise VocabularyError(f"characters not in the vocabulary: {shown}")
        table = np.array(
            [*range(len(SPECIAL_TOKENS)), *(vocab.encode(c)[0] for c in self.characters)],
            dtype=ids_dtype(len(vocab)),
        )
        return remapped(self.train, table), remapped(self.validation, table)

    def check_data(self, data) -> None:
        """Raises ValueError unless the corpus was split and prepared as `data` (a DataConfig)
        says (`tune_split.SplitCorpus`)."""
        if self.fraction != data.validation_fraction:
            raise ValueError("the encoded corpus was split with another validation fraction")
        if self.transpose != data.transpose:
            raise ValueError("the encoded corpus was augmented with other transpositions")
        if self.common_root != data.common_root:
            raise ValueError("the encoded corpus was read with another common_root")

    def streams(self, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training ids, validation ids, each training tune's BOS position) in `vocab`'s ids
        (`ids_in`)."""
        train, validation = self.ids_in(vocab)
        return train, validation, np.asarray(self.train_starts)

    def split_records(self) -> list[SplitRecord]:
        """corpus.json's record of the splits: each tune's source, or for a corpus of more than
        TUNE_SOURCES_UP_TO tunes the files they came from."""
        per = "tune" if self.tune_sources is not None else "file"
        sources = self.tune_sources if per == "tune" else self.sources
        return [
            SplitRecord(self.tune_count(s), self.characters_in[s], sources[s], per)
            for s in SPLITS
        ]

    def texts(self, split: str) -> Iterator[str]:
        """The text of each tune of `split` ("train" or "validation"), in reading order."""
        ids = self.train if split == "train" else self.validation
        starts = self.train_starts if split == "train" else self.validation_starts
        # Code point of each id; the special tokens never occur inside a tune.
        points = np.array([0] * len(SPECIAL_TOKENS) + [ord(c) for c in self.characters], np.uint32)
        ends = [*starts[1:], len(ids)]
        for start, end in zip(starts, ends):
            yield points[ids[start + 1 : end - 1]].tobytes().decode("utf-32-le", "surrogatepass")


def load_encoded_corpus(
    paths: Sequence[str | Path] | None = None,
    *,
    grid: int = DEFAULT_GRID,
    fraction: float = 0.05,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    log: Callable[[str], object] | None = None,
    transpose: Sequence[int] = (),
    common_root: bool = False,
) -> EncodedCorpus:
    """The corpus of `paths`, from the cache when an entry for these very files exists, else read,
    encoded (and, with `use_cache`, stored in the cache).

    Args:
        paths: ABC files, MIDI files and folders; None or empty for the default corpus.
        grid: steps a quarter note that MIDI onsets are quantised to (see `midi_in`).
        fraction: roughly the share of tunes held out for validation (see `musicgen.data.split`).
        use_cache: read and write the cache; False reads the files into a temporary folder.
        cache_dir: the cache's folder; default `default_cache_dir()`.
        log: where one-line warnings go (an unusable entry rebuilt, an unwritable cache).
        transpose: semitones every training tune is also transposed by (`musicgen.data.augment`).
        common_root: every tune moved so its key's root is C (`musicgen.music.keyroot`).

    Raises:
        CorpusError: as `corpus.load_corpus` (a missing path, no usable tune...).
        OSError: the encoded corpus cannot be written (e.g. the disk is full).
    """
    log = log or (lambda message: None)
    files = corpus_files(paths)
    transpose = tuple(transpose)
    key = cache_key(files, grid, fraction, transpose, common_root)
    if use_cache:
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        entry = root / key
        if entry.exists():
            try:
                return _open(entry, key, files, from_cache=True)
            except _Unusable as exc:
                log(f"musicgen: warning: {entry}: unusable cached corpus ({exc}); rebuilding it")
                _remove(entry)
        try:
            root.mkdir(parents=True, exist_ok=True)
            _remove_stale(root)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
        except OSError as exc:
            log(
                f"musicgen: warning: cannot write the corpus cache in {root} "
                f"({exc.strerror or exc}); reading the corpus without it"
            )
        else:
            return _build_into_cache(
                files, staging, entry, key, grid, fraction, transpose, common_root
            )
    with tempfile.TemporaryDirectory(prefix="musicgen-corpus-", ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp) / key
        build(
            files, folder, key=key, grid=grid, fraction=fraction, transpose=transpose,
            common_root=common_root,
        )  # fmt: skip
        # Memory maps outlive the files they map: the temporary folder may go.
        return _open(folder, key, files, from_cache=False)


# ------------------------------------------------------------------------------------------------
# The cache


class _Unusable(Exception):
    """A cache entry that cannot be used as it is; the message says why."""


def _build_into_cache(
    files, staging: Path, entry: Path, key: str, grid: int, fraction: float, transpose=(),
    common_root=False,
):  # fmt: skip
    """Builds in `staging`, then renames it to `entry`: an entry is complete or absent."""
    try:
        build(
            files, staging / "entry", key=key, grid=grid, fraction=fraction, transpose=transpose,
            common_root=common_root,
        )  # fmt: skip
    except BaseException:
        _remove(staging)
        raise
    try:
        os.rename(staging / "entry", entry)
    except OSError:
        # Another process stored the same corpus meanwhile: use ours, then let it go.
        corpus = _open(staging / "entry", key, files, from_cache=False)
        _remove(staging)
        return corpus
    _remove(staging)
    _fsync_folder(entry.parent)
    return _open(entry, key, files, from_cache=False)


def _open(folder: Path, key: str, files, *, from_cache: bool) -> EncodedCorpus:
    """Maps an entry's streams and checks they are whole.

    Raises:
        _Unusable: a file is missing, truncated or not what corpus.json describes.
    """
    try:
        record = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        if record.get("format") != FORMAT_VERSION:
            raise _Unusable(f"format {record.get('format')!r}, expected {FORMAT_VERSION}")
        if record.get("key") != key or len(record["files"]) != len(files):
            raise _Unusable("written for other files")
        streams = {split: _open_split(folder, split, record) for split in SPLITS}
        characters = Vocabulary(record["characters"]).characters  # checks them
        return EncodedCorpus(
            folder=folder,
            characters=characters,
            train=streams["train"][0],
            validation=streams["validation"][0],
            train_starts=streams["train"][1],
            validation_starts=streams["validation"][1],
            report=_report_from_json(record["report"]),
            sources={
                split: tuple(files[i][0] for i in record["splits"][split]["files"])
                for split in SPLITS
            },
            tune_sources=_tune_sources(record, files),
            characters_in={s: int(record["splits"][s]["characters"]) for s in SPLITS},
            fraction=float(record["validation_fraction"]),
            from_cache=from_cache,
            augmentation=(
                AugmentReport.from_json(record["augmentation"])
                if "augmentation" in record
                else None
            ),
            homes=Homes.from_json(record["homes"]) if "homes" in record else None,
        )
    except (OSError, ValueError, EOFError, KeyError, TypeError, IndexError) as exc:
        raise _Unusable(first_line(exc)) from None
    except VocabularyError as exc:
        raise _Unusable(f"corpus.json: {exc}") from None


def _tune_sources(record: dict, files) -> dict[str, tuple[str, ...]] | None:
    """Each tune's source, its file's label as given now followed by the recorded suffix."""
    splits = record["splits"]
    if any("tune_suffixes" not in splits[split] for split in SPLITS):
        return None
    sources = {}
    for split in SPLITS:
        tune_files, suffixes = splits[split]["tune_files"], splits[split]["tune_suffixes"]
        if not len(tune_files) == len(suffixes) == splits[split]["tunes"]:
            raise _Unusable(f"corpus.json: {split} tune sources do not match the tunes")
        sources[split] = tuple(files[i][0] + suffix for i, suffix in zip(tune_files, suffixes))
    return sources


def _open_split(folder: Path, split: str, record: dict) -> tuple[np.ndarray, np.ndarray]:
    expected = record["splits"][split]
    ids = np.load(folder / f"{split}.npy", mmap_mode="r")
    starts = np.load(folder / f"{split}_starts.npy", mmap_mode="r")
    if ids.ndim != 1 or ids.dtype != np.dtype(record["dtype"]) or len(ids) != expected["ids"]:
        raise _Unusable(f"{split}.npy does not hold {expected['ids']} {record['dtype']} ids")
    if starts.ndim != 1 or starts.dtype != np.int64 or len(starts) != expected["tunes"]:
        raise _Unusable(f"{split}_starts.npy does not hold {expected['tunes']} positions")
    if len(starts):
        # The first and last few tunes: cheap, and a truncated or shifted file fails here.
        probes = np.unique(np.concatenate([starts[:8], starts[-8:]]))
        ends = probes[probes > 0] - 1
        bos, eos = (ids[probes] == BOS).all(), (ids[ends] == EOS).all() and ids[-1] == EOS
        if starts[0] != 0 or not (bos and eos):
            raise _Unusable(f"{split}.npy: its tunes do not start and end where recorded")
    return ids, starts


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    """Deletes unfinished entries left by processes that died while writing them."""
    now = time.time()
    for staging in root.glob(".*.tmp"):
        try:
            if now - staging.stat().st_mtime > _STALE_SECONDS:
                _remove(staging)
        except OSError:
            pass


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _report_from_json(raw: dict) -> CorpusReport:
    return CorpusReport(
        files=int(raw["files"]),
        tunes_read=int(raw["tunes_read"]),
        kept=int(raw["kept"]),
        skipped=Counter({str(k): int(v) for k, v in raw["skipped"].items()}),
        errors=[ParseError(message, reason) for reason, message in raw["errors"]],
        midi_files=int(raw["midi_files"]),
    )
