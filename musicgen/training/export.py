"""A trained run exported as a bundled model (`musicgen.runs.bundled`); `scripts/export_bundled.py`.

The run's best checkpoint (its last when it has no best one) becomes float16 weights beside the
run's config.json, vocab.json and corpus.json, and a card.json whose `exported_from` says which
run, checkpoint and step the weights are. Before anything is published, the float16 weights are
read back through the loader `generate` uses and the model's logits on real tunes compared with
the float32 model's: further apart than the tolerance anywhere, and nothing is exported.

LOGIT_TOLERANCE: float16 rounds each weight by at most 2^-11 of itself (0.05%). A logit sums a few
hundred products of weights and activations whose roundings mostly cancel: on the default-size
LSTM (2 x 384 units, trained 900 steps on the bundled corpus) the largest difference over 16 real
tunes was 0.003 nats, and bits/char agreed to five decimals. 0.05 nats leaves room for larger
models, is far below the gaps between likely and unlikely characters (several nats), and still
catches a loader that casts wrongly (a weight beyond float16's 65,504 is refused beforehand).

The folder is written under a hidden temporary name beside its destination, then renamed into
place, so a crash never leaves half a model under the real name; an existing model is replaced
only with `force`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from musicgen.data.vocab import BOS, EOS, PAD, Vocabulary
from musicgen.errors import CheckpointError, CorpusError
from musicgen.files import atomic_write_text
from musicgen.runs.bundled import (
    ALIAS,
    MAX_WEIGHTS_BYTES,
    NAME_PATTERN,
    PACKAGE_FOLDER,
    WEIGHTS_FILE,
    bundled_root,
    is_bundled_folder,
    restore_bundled,
    write_weights,
)
from musicgen.runs.rundir import RunPaths

LOGIT_TOLERANCE = 0.05  # nats: the largest logit difference float16 storage may make
CHECK_TUNES = 8  # real tunes the float16 model is compared on
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class Export:
    """What `export_bundled` wrote.

    Attributes:
        folder: the bundled model's folder.
        checkpoint: "best" or "last": which checkpoint of the run the weights are.
        step: that checkpoint's step.
        weights_bytes: the size of weights.npz.
        check: the float16 check's figures (card.json's `exported_from.float16_check`).
    """

    folder: Path
    checkpoint: str
    step: int
    weights_bytes: int
    check: dict


def export_bundled(
    run_dir: Path,
    name: str,
    *,
    root: Path | None = None,
    force: bool = False,
    tunes: Sequence[str] | None = None,
    tolerance: float = LOGIT_TOLERANCE,
    warn: Callable[[str], object] | None = None,
    why: str | None = None,
) -> Export:
    """Writes the bundled model `name` from the run in `run_dir`.

    Args:
        run_dir: a run directory written by `musicgen train`.
        name: the model's name (lower-case letters, digits, '.', '_', '-'; not "bundled").
        root: the folder of bundled models to write into; default `$MUSICGEN_BUNDLED_DIR` when
            set, else the package's `musicgen/bundled_models/`.
        force: replace a bundled model of the same name.
        tunes: real tunes (ABC texts) to compare the float16 and float32 models on; default the
            first CHECK_TUNES validation tunes of the run's corpus.
        tolerance: the largest logit difference accepted, in nats.
        warn: where a warning about a damaged checkpoint goes.
        why: why this family, size and recipe, in a sentence or two; `musicgen info` prints it
            (card.json's `why`). Default: the run's card keeps what it says, if anything.

    Raises:
        CheckpointError: a bad name, an existing model without `force`, a run that cannot be
            loaded, weights too large, or float16 logits further than `tolerance` from float32's.
        CorpusError: the run's corpus cannot be read for the check (pass `tunes`).
    """
    from musicgen.runs.checkpoint import choose_checkpoint, restore_model
    from musicgen.runs.runfiles import load_run
    from musicgen.runs.weights import model_weights

    run_dir = Path(run_dir)
    destination = _destination(root, name, force)
    if is_bundled_folder(run_dir):
        raise CheckpointError(f"{run_dir}: is a bundled model already; export a run directory")
    config, vocab = load_run(run_dir)
    chosen = choose_checkpoint(run_dir, "best", warn)
    model = restore_model(config, chosen)
    weights = {key: variable.numpy() for key, variable in model_weights(model).items()}
    _check_float16_range(weights, chosen.prefix)
    texts = list(tunes) if tunes is not None else _check_tunes(config)
    if not texts:
        raise CorpusError("no real tunes to compare the float16 model on; pass some tunes")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{name}.export-"))
    try:
        weights_path = staging / WEIGHTS_FILE
        write_weights(weights_path, weights)
        size = weights_path.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise CheckpointError(
                f"{run_dir}: its weights take {size / 2**20:.1f} MB in float16, more than the "
                f"{MAX_WEIGHTS_BYTES / 2**20:.0f} MB a bundled model may; export a smaller model"
            )
        paths = RunPaths(run_dir)
        for source in (paths.config, paths.vocab, paths.corpus):
            if source.is_file():
                shutil.copyfile(source, staging / source.name)
        check = float16_check(model, config, vocab, weights_path, texts, tolerance)
        if check["max_logit_difference"] > tolerance:
            raise CheckpointError(
                f"{run_dir}: float16 weights move the logits by up to "
                f"{check['max_logit_difference']:.4f} on {check['tunes']} real tunes, more than "
                f"the tolerance {tolerance}; not exported"
            )
        _write_card(staging, run_dir, name, chosen, check, why)
        os.chmod(staging, 0o755)  # mkdtemp made it private; a package's folders are readable
        _publish(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Export(destination, chosen.which, chosen.step, size, check)


def _destination(root: Path | None, name: str, force: bool) -> Path:
    """`root/name`, checked: a usable name, and no existing model unless `force`."""
    if not NAME_PATTERN.match(name) or name == ALIAS:
        raise CheckpointError(
            f"{name!r}: not a bundled model name; use lower-case letters, digits, '.', '_' and "
            f"'-' (at most 64), not {ALIAS!r}"
        )
    root = Path(root) if root is not None else (bundled_root() or PACKAGE_FOLDER)
    destination = root / name
    if destination.exists() and not force:
        raise CheckpointError(f"{destination}: already exists; pass --force to replace it")
    if destination.exists() and not is_bundled_folder(destination):
        raise CheckpointError(f"{destination}: exists and is not a bundled model; not replaced")
    return destination


def _check_float16_range(weights: dict[str, np.ndarray], source: str) -> None:
    for key, array in weights.items():
        if array.size and float(np.max(np.abs(array))) > FLOAT16_MAX:
            raise CheckpointError(
                f"{source}: weight {key} reaches {float(np.max(np.abs(array))):.4g}, beyond "
                "float16's range; this run cannot be bundled"
            )


def _check_tunes(config) -> list[str]:
    """The first CHECK_TUNES validation tunes of the run's corpus (training ones if none)."""
    from musicgen.data.encoded import load_encoded_corpus

    data = config.data
    corpus = load_encoded_corpus(  # the entry training cached (validation is never transposed)
        list(data.paths) or None, fraction=data.validation_fraction, transpose=data.transpose
    )
    texts = []
    for split in ("validation", "train"):
        for text in corpus.texts(split):
            if len(texts) == CHECK_TUNES:
                return texts
            texts.append(text)
    return texts


def float16_check(model, config, vocab: Vocabulary, weights_path: Path, texts, tolerance) -> dict:
    """The float32 `model` against the same model loaded from float16 `weights_path`, on `texts`:
    the largest logit difference at any position, and both models' bits/char."""
    import tensorflow as tf

    from musicgen.evaluation.evaluate import score_tunes
    from musicgen.runs.weights import build_model_for

    restored = build_model_for(config, policy="float32")
    restore_bundled(restored, weights_path)
    rows = [[BOS, *vocab.encode(text, strict=False), EOS] for text in texts]
    ids = np.full((len(rows), max(map(len, rows))), PAD, np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row  # padding after a tune leaves its own logits as they are
    reference, stored = (
        tf.function(m.sequence_logits)(tf.constant(ids)).numpy() for m in (model, restored)
    )  # (tunes, time, vocab)
    inside = ids != PAD
    largest = float(np.max(np.abs(reference - stored)[inside]))
    bits32 = score_tunes(model, vocab, texts).bits_per_char
    bits16 = score_tunes(restored, vocab, texts).bits_per_char
    return {
        "tunes": len(texts),
        "max_logit_difference": largest,
        "tolerance": tolerance,
        "bits_per_char_float32": bits32,
        "bits_per_char_float16": bits16,
    }


def _write_card(staging: Path, run_dir: Path, name: str, chosen, check: dict, why) -> None:
    from musicgen.runs.card import build_card

    card = build_card(run_dir)
    card.update(name=name, run_dir=str(run_dir))
    if why:
        card["why"] = " ".join(why.split())
    card["exported_from"] = {
        "run_dir": str(run_dir),
        "checkpoint": chosen.which,
        "prefix": chosen.prefix,
        "step": chosen.step,
        "val_bits_per_char": chosen.val_bits_per_char,
        "weights": "float16",
        "float16_check": check,
    }
    atomic_write_text(staging / "card.json", json.dumps(card, indent=1) + "\n")


def _publish(staging: Path, destination: Path) -> None:
    """Renames `staging` to `destination`; an existing model there is moved aside first and
    deleted once the new one is in place (put back if the rename fails)."""
    aside = None
    if destination.exists():
        aside = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
        os.rename(destination, aside / destination.name)
    try:
        os.rename(staging, destination)
    except OSError:
        if aside is not None:
            os.rename(aside / destination.name, destination)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
