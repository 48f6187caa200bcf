"""The run directory's JSON files beside the checkpoints: config.json with vocab.json read back,
and corpus.json written (`musicgen.runs.checkpoint` lists everything a run directory holds).

No TensorFlow here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from musicgen.config import RunConfig
from musicgen.data.split import SplitRecord
from musicgen.data.vocab import Vocabulary
from musicgen.errors import CheckpointError, VocabularyError
from musicgen.files import atomic_write_text
from musicgen.runs.rundir import RunPaths


def load_run(run_dir: Path) -> tuple[RunConfig, Vocabulary]:
    """Reads `config.json` and `vocab.json` and checks that they belong together.

    Raises:
        CheckpointError: naming the directory or the file that is missing or bad.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise CheckpointError(f"{paths.root}: no such run directory")
    config = RunConfig.load(paths.config)
    try:
        vocab = Vocabulary.load(paths.vocab)
    except VocabularyError as exc:
        raise CheckpointError(str(exc)) from None
    if config.model.vocab_size != len(vocab):
        raise CheckpointError(
            f"{paths.vocab}: {len(vocab)} tokens, but {paths.config} expects "
            f"{config.model.vocab_size}; the two files come from different runs"
        )
    return config, vocab


def write_corpus_record(
    run_dir: Path,
    train_tunes: Sequence | SplitRecord,
    validation_tunes: Sequence | SplitRecord,
    summary: str = "",
    headers: dict | None = None,
    homes: dict | None = None,
) -> None:
    """Writes `corpus.json`: how many tunes trained and validated the run, and where they came from.

    Its keys: summary, tunes, train_tunes, validation_tunes, train_characters,
    validation_characters, train_sources, validation_sources, sources_per ("tune" when the
    source lists name each tune, "file" when they name the files of a large corpus), and headers
    when given.

    Args:
        run_dir: the run directory.
        train_tunes: objects with `text` and `source` attributes, or a SplitRecord of them.
        validation_tunes: likewise.
        summary: the corpus loader's one-line ingestion summary.
        headers: the header values the training tunes use (`musicgen.data.controls.KnownHeaders`'s
            JSON), which `generate --key/--meter/--type` are checked against.
        homes: with `DataConfig.common_root`, the roots the training tunes had (`keyroot.Homes`'s
            JSON), which generated tunes are moved back into.
    """
    train, validation = (
        tunes if isinstance(tunes, SplitRecord) else SplitRecord.of_tunes(tunes)
        for tunes in (train_tunes, validation_tunes)
    )
    record = {
        "summary": summary,
        "tunes": train.tunes + validation.tunes,
        "train_tunes": train.tunes,
        "validation_tunes": validation.tunes,
        "train_characters": train.characters,
        "validation_characters": validation.characters,
        "train_sources": list(train.sources),
        "validation_sources": list(validation.sources),
        "sources_per": train.per,
    }
    if headers is not None:
        record["headers"] = headers
    if homes is not None:
        record["homes"] = homes
    atomic_write_text(RunPaths(Path(run_dir)).corpus, json.dumps(record, indent=1) + "\n")
