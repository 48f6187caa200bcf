"""The corpus encoded once into id files on disk, and a cache of them keyed by the input files.

`musicgen train` reads its corpus through here, so memory stays bounded as the corpus grows: tunes
are streamed from the files (`corpus.stream_corpus`), each goes to training or validation by
the one split rule (`musicgen.split`), is encoded and appended to a file; nothing holds
the corpus as Python objects. The streams are then read back memory-mapped. An entry is a folder:

    corpus.json                  format version, key, vocabulary characters, the ingestion report
                                 (summary, counts, skipped files and the first skipped tunes) and
                                 per split: tune and character counts, source files, and each
                                 tune's source up to TUNE_SOURCES_UP_TO tunes
    train.npy, validation.npy    ids BOS tune EOS BOS tune EOS ..., uint8 (uint16 when the
                                 vocabulary has more than 256 ids)
    train_starts.npy, ...        int64 position of each tune's BOS (validation_starts.npy too)

With `transpose` (`DataConfig.transpose`, see `musicgen.augment`), each training tune is followed in
`train.npy` by its transposed copies, and corpus.json's "augmentation" counts the copies made and
skipped; validation tunes are never transposed.

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

import array
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
from musicgen.augment import AugmentReport, copy_source, transposed_copies
from musicgen.corpus import CorpusReport, corpus_files, empty_report, stream_corpus, unkeep
from musicgen.errors import CorpusError, ParseError, RenderError, VocabularyError, first_line
from musicgen.keyroot import Homes, to_common_root, unmovable_error
from musicgen.midi_in import DEFAULT_GRID
from musicgen.split import is_held_out, rebalance, tune_bucket
from musicgen.vocab import BOS, EOS, SPECIAL_TOKENS, Vocabulary

FORMAT_VERSION = 1
SPLITS = ("train", "validation")
_CHUNK = 1 << 20  # ids copied at a time when writing or remapping a stream (a few MB)
_PROVISIONAL = np.uint16  # ids while reading, before the sorted vocabulary is known
_STALE_SECONDS = 24 * 3600  # an unfinished entry this old was left by a process that died
TUNE_SOURCES_UP_TO = 20_000  # corpora up to this many tunes keep each tune's source


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
    """A corpus encoded on disk, its id streams memory-mapped.

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
            (`musicgen.keyroot`); None without.
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
            dtype=_ids_dtype(len(vocab)),
        )
        return _remapped(self.train, table), _remapped(self.validation, table)

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
        fraction: roughly the share of tunes held out for validation (see `musicgen.split`).
        use_cache: read and write the cache; False reads the files into a temporary folder.
        cache_dir: the cache's folder; default `default_cache_dir()`.
        log: where one-line warnings go (an unusable entry rebuilt, an unwritable cache).
        transpose: semitones every training tune is also transposed by (`musicgen.augment`).
        common_root: every tune moved so its key's root is C (`musicgen.keyroot`).

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


def build(
    files: Sequence[tuple[str, Path]],
    folder: Path,
    *,
    key: str,
    grid: int,
    fraction: float,
    transpose: Sequence[int] = (),
    common_root: bool = False,
) -> None:
    """Reads `files` tune by tune and writes an encoded corpus into `folder` (created).

    With `transpose`, each training tune is followed by its transposed copies. (A tune moved into
    training only because validation would otherwise be all of a tiny corpus gets none.) With
    `common_root`, every tune is first moved to root C, its split still decided by its text as
    written (the same validation tunes as without), and a tune that cannot be moved is skipped
    and counted in the report; the copies are then made from the moved tune.

    Memory: one file's tunes, the duplicate hashes of `stream_corpus`, and for each kept tune its
    stream position and file index (12 bytes); up to TUNE_SOURCES_UP_TO tunes, their sources too.

    Raises:
        CorpusError: no usable tune, or more distinct characters than 16-bit ids can hold.
    """
    folder.mkdir(parents=True)
    report = empty_report(files)
    encoder = _Encoder()
    writers = {split: _SplitWriter(folder / f"{split}.tmp") for split in SPLITS}
    augmentation = AugmentReport(tuple(transpose)) if transpose else None
    homes = Homes() if common_root else None
    try:
        for file_index, tune in stream_corpus(files, report, grid):
            bucket = tune_bucket(tune.text)
            split = "validation" if is_held_out(bucket, fraction) else "train"
            text = tune.text
            if homes is not None:
                try:
                    text, root = to_common_root(text)
                except RenderError as exc:
                    unkeep(report, unmovable_error(tune.source, exc))
                    continue
                if split == "train":
                    homes.add(root)
            suffix = tune.source.removeprefix(files[file_index][0])
            writers[split].add(encoder.encode(text), bucket, file_index, suffix)
            if split == "train" and augmentation:
                for shift, moved in transposed_copies(text, augmentation):
                    copy = encoder.encode(moved)
                    writers[split].add(copy, None, file_index, copy_source(suffix, shift))
            if sum(len(w.starts) for w in writers.values()) > TUNE_SOURCES_UP_TO:
                for writer in writers.values():
                    writer.suffixes = None
    finally:
        for writer in writers.values():
            writer.close()
    characters, table = encoder.final_table()
    dtype = _ids_dtype(len(SPECIAL_TOKENS) + len(characters))
    parts = _final_parts(writers, fraction, report.kept)
    splits = {}
    for split, part in parts.items():
        _write_ids(folder / f"{split}.npy", part, table, dtype)
        _save(folder / f"{split}_starts.npy", part.starts)
        splits[split] = {
            "tunes": len(part.starts),
            "ids": part.length,
            "characters": part.length - 2 * len(part.starts),
            "files": sorted({int(i) for i in part.files}),
        }
        if part.suffixes is not None:
            splits[split].update(tune_files=part.files.tolist(), tune_suffixes=part.suffixes)
    for writer in writers.values():
        writer.path.unlink()
    record = {
        "format": FORMAT_VERSION,
        "key": key,
        "grid": grid,
        "validation_fraction": fraction,
        "dtype": np.dtype(dtype).name,
        "characters": characters,
        "files": [label for label, _ in files],
        "report": _report_to_json(report),
        "splits": splits,
    }
    if augmentation:
        record["augmentation"] = augmentation.to_json()
    if homes is not None:
        record["homes"] = homes.to_json()
    _write_json(folder / "corpus.json", record)


# ------------------------------------------------------------------------------------------------
# Reading tunes into provisional streams


class _Encoder:
    """Ids in order of first appearance while reading: the vocabulary, sorted, is known only once
    every tune has been read, and `final_table` then maps these ids to it."""

    def __init__(self):
        self.ids = np.full(0x110000, -1, dtype=np.int32)  # code point -> provisional id (4.4 MB)
        self.characters: list[str] = []

    def encode(self, text: str) -> np.ndarray:
        """BOS text EOS as provisional uint16 ids."""
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = self.ids[points]
        if (ids < 0).any():
            for point in np.unique(points[ids < 0]):
                if len(SPECIAL_TOKENS) + len(self.characters) > np.iinfo(_PROVISIONAL).max:
                    raise CorpusError("the corpus holds more than 65,000 distinct characters")
                self.ids[point] = len(SPECIAL_TOKENS) + len(self.characters)
                self.characters.append(chr(point))
            ids = self.ids[points]
        out = np.empty(len(ids) + 2, dtype=_PROVISIONAL)
        out[0], out[1:-1], out[-1] = BOS, ids, EOS
        return out

    def final_table(self) -> tuple[list[str], np.ndarray]:
        """(the characters sorted by code point, as `Vocabulary.from_texts` orders them; a table
        from provisional id to final id)."""
        ordered = sorted(self.characters)
        rank = {c: len(SPECIAL_TOKENS) + i for i, c in enumerate(ordered)}
        table = np.arange(len(SPECIAL_TOKENS) + len(ordered), dtype=np.int64)
        for provisional, character in enumerate(self.characters, start=len(SPECIAL_TOKENS)):
            table[provisional] = rank[character]
        return ordered, table


class _SplitWriter:
    """Appends one split's tunes to a raw file of provisional ids, remembering where each starts."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = open(path, "wb")  # noqa: SIM115 (closed in close)
        self.length = 0
        self.starts = array.array("q")
        self.files = array.array("i")
        self.suffixes: list[str] | None = []  # each tune's source after its file's label
        self.lowest = (2.0, -1)  # (bucket, tune index) of the tune with the lowest bucket
        self.highest = (-1.0, -1)
        self.copies = array.array("b")  # 1 for a transposed copy of the tune before it

    def add(self, ids: np.ndarray, bucket: float | None, file_index: int, suffix: str) -> None:
        """Appends one tune; `bucket` None for a transposed copy of the last tune added."""
        index = len(self.starts)
        self.starts.append(self.length)
        self.files.append(file_index)
        self.copies.append(bucket is None)
        if self.suffixes is not None:
            self.suffixes.append(suffix)
        self.handle.write(ids.tobytes())
        self.length += len(ids)
        if bucket is not None:
            self.lowest = min(self.lowest, (bucket, index))
            self.highest = max(self.highest, (bucket, index))

    def close(self) -> None:
        self.handle.close()

    def span(self, index: int) -> tuple[int, int]:
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.length
        return self.starts[index], end

    def group_end(self, index: int) -> int:
        """The index after tune `index` and its transposed copies."""
        end = index + 1
        while end < len(self.copies) and self.copies[end]:
            end += 1
        return end


@dataclasses.dataclass
class _Part:
    """One final split: ranges of the raw files, and each tune's start, file index and source
    suffix (None for a large corpus)."""

    segments: list[tuple[Path, int, int]]
    starts: np.ndarray
    files: np.ndarray
    suffixes: list[str] | None

    @property
    def length(self) -> int:
        return sum(stop - start for _, start, stop in self.segments)

    @classmethod
    def whole(cls, writer: _SplitWriter) -> _Part:
        starts = np.frombuffer(writer.starts, dtype=np.int64).copy()
        files = np.frombuffer(writer.files, dtype=np.int32).copy()
        suffixes = None if writer.suffixes is None else list(writer.suffixes)
        return cls([(writer.path, 0, writer.length)], starts, files, suffixes)


def _final_parts(writers: dict[str, _SplitWriter], fraction: float, kept: int) -> dict[str, _Part]:
    """The splits as `split.split_tunes` makes them: with two or more tunes and fraction > 0,
    validation holds at least one (the lowest bucket) and training at least one (the highest)."""
    train, validation = writers["train"], writers["validation"]
    move = rebalance(fraction, kept, len(validation.starts), len(train.starts))
    if move == "lowest":
        rest, moved = _move_out(train, train.lowest[1])
        return {"train": rest, "validation": moved}
    if move == "highest":
        rest, moved = _move_out(validation, validation.highest[1])
        return {"train": moved, "validation": rest}
    return {split: _Part.whole(writer) for split, writer in writers.items()}


def _move_out(writer: _SplitWriter, index: int) -> tuple[_Part, _Part]:
    """(the writer's tunes without tune `index` and its transposed copies, that tune alone)."""
    whole = _Part.whole(writer)
    start, end = writer.span(index)
    after = writer.group_end(index)
    group_stop = writer.span(after - 1)[1]
    starts = np.concatenate([whole.starts[:index], whole.starts[after:] - (group_stop - start)])
    suffixes = whole.suffixes
    rest = _Part(
        [(writer.path, 0, start), (writer.path, group_stop, writer.length)],
        starts,
        np.delete(whole.files, range(index, after)),
        None if suffixes is None else suffixes[:index] + suffixes[after:],
    )
    moved = _Part(
        [(writer.path, start, end)],
        np.zeros(1, np.int64),
        whole.files[index : index + 1],
        None if suffixes is None else [suffixes[index]],
    )
    return rest, moved


# ------------------------------------------------------------------------------------------------
# Files


def _write_ids(path: Path, part: _Part, table: np.ndarray, dtype) -> None:
    """Writes the part's provisional ids, mapped through `table`, as a .npy file.

    Plain reads and writes a chunk at a time rather than memory maps, whose pages would count as
    this process's resident memory.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (part.length,)}  # fmt: skip
    table = table.astype(dtype)
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for raw_path, start, stop in part.segments:
            with open(raw_path, "rb") as raw:
                raw.seek(start * np.dtype(_PROVISIONAL).itemsize)
                for lo in range(start, stop, _CHUNK):
                    chunk = np.fromfile(raw, dtype=_PROVISIONAL, count=min(_CHUNK, stop - lo))
                    out.write(table[chunk].tobytes())
        out.flush()
        os.fsync(out.fileno())


def _save(path: Path, array_: np.ndarray) -> None:
    with open(path, "wb") as out:
        np.save(out, array_)
        out.flush()
        os.fsync(out.fileno())


def _write_json(path: Path, record: dict) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=1)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())


def _ids_dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 256 else np.uint16


def _remapped(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.empty(len(ids), dtype=table.dtype)
    for lo in range(0, len(ids), _CHUNK):
        out[lo : lo + _CHUNK] = table[ids[lo : lo + _CHUNK]]
    return out


def _report_to_json(report: CorpusReport) -> dict:
    return {
        "summary": report.summary(),
        "files": report.files,
        "tunes_read": report.tunes_read,
        "kept": report.kept,
        "skipped": dict(report.skipped),
        "midi_files": report.midi_files,
        "errors": [[error.reason, str(error)] for error in report.errors],
    }


def _report_from_json(raw: dict) -> CorpusReport:
    return CorpusReport(
        files=int(raw["files"]),
        tunes_read=int(raw["tunes_read"]),
        kept=int(raw["kept"]),
        skipped=Counter({str(k): int(v) for k, v in raw["skipped"].items()}),
        errors=[ParseError(message, reason) for reason, message in raw["errors"]],
        midi_files=int(raw["midi_files"]),
    )


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
