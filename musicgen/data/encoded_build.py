"""Building an encoded corpus: its tunes read, split, encoded and written into an entry's folder.

`build` streams the tunes from the files (`corpus.stream_corpus`); each goes to training or
validation by the one split rule (`musicgen.data.split`), is encoded and appended to a file, so
nothing holds the corpus as Python objects (`musicgen.data.encoded` reads the entry back and caches
it). An entry is a folder:

    corpus.json                  format version, key, vocabulary characters, the ingestion report
                                 (summary, counts, skipped files and the first skipped tunes) and
                                 per split: tune and character counts, source files, and each
                                 tune's source up to TUNE_SOURCES_UP_TO tunes
    train.npy, validation.npy    ids BOS tune EOS BOS tune EOS ..., uint8 (uint16 when the
                                 vocabulary has more than 256 ids)
    train_starts.npy, ...        int64 position of each tune's BOS (validation_starts.npy too)

With `transpose` (`DataConfig.transpose`, see `musicgen.data.augment`), each training tune is
followed in `train.npy` by its transposed copies, and corpus.json's "augmentation" counts the
copies made and skipped; validation tunes are never transposed.
"""

from __future__ import annotations

import array
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicgen.data.augment import AugmentReport, copy_source, transposed_copies
from musicgen.data.corpus import CorpusReport, empty_report, stream_corpus, unkeep
from musicgen.data.split import SPLITS, is_held_out, rebalance, tune_bucket
from musicgen.data.vocab import BOS, EOS, SPECIAL_TOKENS
from musicgen.errors import CorpusError, RenderError
from musicgen.music.keyroot import Homes, to_common_root, unmovable_error

FORMAT_VERSION = 1
_CHUNK = 1 << 20  # ids copied at a time when writing or remapping a stream (a few MB)
_PROVISIONAL = np.uint16  # ids while reading, before the sorted vocabulary is known
TUNE_SOURCES_UP_TO = 20_000  # corpora up to this many tunes keep each tune's source


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
    dtype = ids_dtype(len(SPECIAL_TOKENS) + len(characters))
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


def ids_dtype(vocab_size: int):
    """The streams' id type for `vocab_size` ids: uint8 up to 256, else uint16."""
    return np.uint8 if vocab_size <= 256 else np.uint16


def remapped(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`ids` mapped through `table` into a new array in memory, a chunk at a time."""
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
