"""Bundled models: trained weights shipped inside the package, so `generate` plays at once.

A bundled model is a folder `musicgen/bundled_models/NAME/` of the installed package:

    config.json    the RunConfig of the run it was exported from, as in a run directory
    vocab.json     its Vocabulary
    corpus.json    what that run trained on, with the header values `generate --key` accepts
    card.json      its card (`musicgen.runs.card`), whose `exported_from` names the run, the
                   checkpoint and step the weights are, and the float16 check's figures
    weights.npz    the weights as float16 arrays, one per `weights.model_weights` key

It holds no code and no pickle. The weights are a NumPy `.npz` rather than a TensorFlow checkpoint
of float16 tensors: one plain zip of `.npy` arrays, read with `allow_pickle=False` so that nothing
but numbers can come out of it, each member checked against its CRC-32 as it is read, and its
names and shapes listed without TensorFlow. Loading follows the rule of a run directory: the model
is rebuilt from config.json, every weight's name and shape is checked against it
(`weights.check_weight_shapes`), and the float16 values are cast into the float32 model.
`scripts/export_bundled.py` writes such a folder from a trained run (`export.export_bundled`).

A bundled model is asked for by its name (`--run-dir folk-lstm`, `--init folk-lstm`, `musicgen info
folk-lstm`), or as `bundled` for the default one: DEFAULT_NAME when it is there, else the first by
name. `MUSICGEN_BUNDLED_DIR` names another folder of bundled models to use instead of the package's
(tests, or trying an export before it is committed); set to an empty string, there are none. No
TensorFlow is imported here until weights are read into a model.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from musicgen.errors import CheckpointError, first_line

if TYPE_CHECKING:
    import numpy as np  # imported where used: `musicgen --help` stays quick

ENV_VAR = "MUSICGEN_BUNDLED_DIR"
PACKAGE_FOLDER = Path(__file__).parent.parent / "bundled_models"
DEFAULT_NAME = "folk-lstm"
ALIAS = "bundled"  # `--init bundled`, `--run-dir bundled`: the default bundled model
WEIGHTS_FILE = "weights.npz"
WEIGHTS_DTYPE = "float16"
MAX_WEIGHTS_BYTES = 10 * 2**20  # what the package may carry for one model
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LABEL_PREFIX = "bundled:"  # how a fine-tuned run's config.json names a bundled parent


def bundled_root() -> Path | None:
    """The folder the bundled models are looked for in: `$MUSICGEN_BUNDLED_DIR` when set (None
    when set to ""), else the package's own `bundled_models/`."""
    value = os.environ.get(ENV_VAR)
    if value is None:
        return PACKAGE_FOLDER
    return Path(value) if value.strip() else None


def is_bundled_folder(path: Path | str) -> bool:
    """True when `path` is a bundled model's folder (config.json and weights.npz, no ckpt/)."""
    path = Path(path)
    return (
        (path / WEIGHTS_FILE).is_file()
        and (path / "config.json").is_file()
        and not (path / "ckpt").exists()
    )


def bundled_names() -> list[str]:
    """The names of the bundled models there are, sorted."""
    root = bundled_root()
    if root is None or not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if NAME_PATTERN.match(p.name) and is_bundled_folder(p)
    )


def default_name() -> str | None:
    """The model `bundled` stands for: DEFAULT_NAME if present, else the first; None if none."""
    names = bundled_names()
    if not names:
        return None
    return DEFAULT_NAME if DEFAULT_NAME in names else names[0]


def find_bundled(name: str) -> Path | None:
    """The folder of the bundled model `name` (or of the default one for `bundled`), or None."""
    if name == ALIAS:
        name = default_name() or ""
    root = bundled_root()
    if root is None or not NAME_PATTERN.match(name) or name not in bundled_names():
        return None
    return root / name


def model_folder(value: Path | str) -> Path:
    """What `--run-dir VALUE` (or `--init VALUE`) names: a bundled model when VALUE is its bare
    name (or `bundled`), else the path VALUE.

    A path with a slash is always a path (`./NAME` means the folder). A bare name is a bundled
    model's unless a musicgen model folder of that name (one holding a config.json) is in the
    current folder: a run keeps the meaning it had before musicgen shipped a model of its name,
    and an unrelated folder (a tunebook folder called `bundled`) does not hide the model.

    Raises:
        CheckpointError: `value` is `bundled` and there is no bundled model.
    """
    folder = _named_bundled(value)
    if folder is not None:
        return folder
    if str(value) == ALIAS and not (Path(ALIAS) / "config.json").exists():
        raise CheckpointError(f"{ALIAS}: {no_bundled_model()}")
    return Path(value)


def _named_bundled(value: Path | str) -> Path | None:
    """The bundled model a bare name stands for (see `model_folder`), else None."""
    text = str(value)
    if "/" in text or os.sep in text or (Path(text) / "config.json").exists():
        return None
    return find_bundled(text)


def no_bundled_model() -> str:
    """Says that there is no bundled model, and where musicgen looked."""
    root = bundled_root()
    where = f"{ENV_VAR} is empty" if root is None else f"none in {root}"
    return f"this musicgen has no bundled model ({where}); train one with `musicgen train`"


def label_of(folder: Path) -> str:
    """How a run records a bundled parent: "bundled:NAME"."""
    return LABEL_PREFIX + Path(folder).name


def folder_of_label(label: str) -> Path | None:
    """The folder a "bundled:NAME" label names, None if `label` is not one.

    Raises:
        CheckpointError: it is one, but there is no such bundled model now.
    """
    if not label.startswith(LABEL_PREFIX):
        return None
    name = label[len(LABEL_PREFIX) :]
    folder = find_bundled(name)
    if folder is None:
        available = ", ".join(bundled_names()) or "none"
        raise CheckpointError(f"{label}: no such bundled model (bundled models: {available})")
    return folder


def refuse_training_into(run_dir: Path) -> None:
    """Raises CheckpointError when `run_dir` is a bundled model, by its folder or by its name
    (as `model_folder` reads it): it is part of the installed package and is never trained
    into; fine-tuning it starts a new run."""
    folder = Path(run_dir) if is_bundled_folder(run_dir) else _named_bundled(run_dir)
    if folder is not None:
        raise CheckpointError(
            f"{run_dir}: is the bundled model {folder.name}, which musicgen never trains into; "
            f"to fine-tune it, pass --init {folder.name} and a new --run-dir"
        )


# ------------------------------------------------------------------------------------------------
# Weights


def write_weights(path: Path, weights: dict[str, np.ndarray]) -> None:
    """Writes `weights` (key -> array) into `path` as float16 `.npz` arrays (no pickle)."""
    import numpy as np

    arrays = {key: np.asarray(value).astype(WEIGHTS_DTYPE) for key, value in weights.items()}
    with open(path, "wb") as handle:
        # Each key becomes a member "KEY.npy" of the zip ('/' in a key makes a folder there).
        np.savez(handle, allow_pickle=False, **arrays)
        handle.flush()
        os.fsync(handle.fileno())


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The float16 arrays of a bundled model's weights.npz, by `model_weights` key.

    Raises:
        CheckpointError: the file is missing, damaged (a CRC mismatch, cut short), holds anything
            but float16 arrays, or would need unpickling.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {_REINSTALL}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path}: damaged ({first_line(exc)}); {_REINSTALL}") from None
    odd = [key for key, array in arrays.items() if array.dtype != WEIGHTS_DTYPE]
    if odd:
        raise CheckpointError(
            f"{path}: {odd[0]} is {arrays[odd[0]].dtype}, not float16; {_REINSTALL}"
        )
    return arrays


_REINSTALL = "reinstall musicgen or export the model again"


def restore_bundled(model, path: Path) -> None:
    """Puts the float16 weights of `path` into the float32 `model`, every name and shape checked.

    Raises:
        CheckpointError: the file is damaged or its weights do not fit the model.
    """
    from musicgen.runs.weights import check_weight_shapes, model_weights

    arrays = read_weights(path)
    check_weight_shapes(model, {key: array.shape for key, array in arrays.items()}, Path(path))
    for key, variable in model_weights(model).items():
        variable.assign(arrays[key].astype(variable.dtype))


def bundled_checkpoint(folder: Path):
    """The `checkpoint.ChosenCheckpoint` of a bundled model: its weights.npz and the step of the
    run's checkpoint they were exported from (its card.json says which)."""
    from musicgen.runs.checkpoint import ChosenCheckpoint

    origin = exported_from(folder)
    return ChosenCheckpoint(
        prefix=str(Path(folder) / WEIGHTS_FILE),
        step=int(origin.get("step") or 0),
        which="bundled",
        val_bits_per_char=origin.get("val_bits_per_char"),
    )


def exported_from(folder: Path) -> dict:
    """What a bundled model's card.json says it was exported from (the run, checkpoint, step,
    validation figure and float16 check; `musicgen.training.export`); {} when it says nothing."""
    try:
        card = json.loads((Path(folder) / "card.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    origin = card.get("exported_from") if isinstance(card, dict) else None
    return origin if isinstance(origin, dict) else {}
