"""Fine-tuning: a new run that starts from the weights of a bundled model or of another run.

`musicgen train --init NAME` (a bundled model, `bundled` for the default one) or `--init RUN_DIR`
(that run's best checkpoint, its last when it has no best one). The run takes its parent's model
family and size; only the vocabulary may grow. Its config.json records the parent
(`config.InitConfig`), so `--resume`, `generate` and `evaluate` need nothing more; the optimizer
starts fresh (the parent's optimizer state is never read).

Characters of the new tunes that the parent lacks extend the vocabulary: they are appended after
the parent's, so every known character keeps its id, and each gets new entries in the weights
whose size is the vocabulary (the embedding's rows, the output layer's kernel columns and bias),
copied from the parent's unknown token (UNK). Before the first step the model therefore gives the
known characters exactly the parent's logits, and treats a new character as the parent treated
it as UNK: a character it never saw, seldom predicted. Nothing is mapped to UNK silently.

Defaults when `--init` is given and the option is not (`finetune_defaults`): --learning-rate
FINETUNE_LEARNING_RATE, a third of the default, since the weights are already good; and --steps
so that a run trains on FINETUNE_CHARACTERS characters: 300 steps of 64 windows of 128
characters (the default batch before issue 13), 2.46M characters, 150 steps of today's 32 whole
tunes of up to 512; about 5 minutes at 8,000 characters/s on this project's 2-core CPU, which
leaves a minute of the 6-minute budget for start-up and the validations. That is 14 passes
over a 700-tune tunebook of about 180,000 characters, near where such a tunebook's validation
figure stops improving when training from scratch (issue 14).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from musicgen.config import InitConfig, ModelConfig, RunConfig
from musicgen.data.vocab import SPECIAL_TOKENS, UNK, Vocabulary
from musicgen.errors import CheckpointError
from musicgen.runs.bundled import (
    WEIGHTS_FILE,
    bundled_names,
    folder_of_label,
    is_bundled_folder,
    label_of,
    model_folder,
    read_weights,
)

if TYPE_CHECKING:
    import numpy as np  # imported where used: `musicgen --help` stays quick

FINETUNE_LEARNING_RATE = 1e-3
FINETUNE_CHARACTERS = 300 * 64 * 128  # 2,457,600: see the module's docstring
MIN_FINETUNE_STEPS = 20
# Model settings a fine-tuned run may change: they shape no weight (bar_ids follows the
# vocabulary, whose added characters come after the parent's).
FREE_MODEL_FIELDS = ("vocab_size", "bar_ids", "dropout")


@dataclasses.dataclass(frozen=True)
class Parent:
    """The model a run is fine-tuned from, before its weights are read.

    Attributes:
        label: what config.json's `init.parent` records: "bundled:NAME", or the run's directory.
        folder: the bundled model's folder or the run directory.
        config: its RunConfig.
        vocab: its Vocabulary.
    """

    label: str
    folder: Path
    config: RunConfig
    vocab: Vocabulary


def find_parent(spec: str | Path) -> Parent:
    """The parent `--init SPEC` names: `bundled`, a bundled model's name, a run directory, or a
    label recorded in a config.json ("bundled:NAME").

    Its weights are read through once (each tensor checked against its CRC), so that a damaged
    parent is said before anything else is done; `read_parent_weights` loads them.

    Raises:
        CheckpointError: no such model, its config.json or vocab.json is missing or bad, or its
            weights are damaged.
    """
    from musicgen.runs.checkpoint import choose_checkpoint
    from musicgen.runs.runfiles import load_run

    folder = folder_of_label(str(spec)) or model_folder(spec)
    if not folder.is_dir():
        available = ", ".join(bundled_names()) or "none"
        raise CheckpointError(
            f"{spec}: no such run directory or bundled model (bundled models: {available}); "
            "check --init"
        )
    config, vocab = load_run(folder)
    if is_bundled_folder(folder):
        read_weights(folder / WEIGHTS_FILE)
    else:
        choose_checkpoint(folder, "best", warn=lambda _: None)  # said when the weights are read
    label = label_of(folder) if is_bundled_folder(folder) else str(spec)
    return Parent(label, folder, config, vocab)


def finetune_defaults(parent: Parent, batch_size: int, seq_length: int) -> dict:
    """The training settings a fine-tuned run gets unless the user gives them: learning_rate and
    steps (FINETUNE_CHARACTERS characters at `batch_size` x `seq_length` a step)."""
    steps = max(MIN_FINETUNE_STEPS, round(FINETUNE_CHARACTERS / (batch_size * seq_length)))
    return {"learning_rate": FINETUNE_LEARNING_RATE, "steps": steps}


def check_same_model(model: ModelConfig, parent: Parent) -> None:
    """Raises CheckpointError when `model` differs from the parent's in family or size.

    Raises:
        CheckpointError: naming the first setting that differs.
    """
    ours, theirs = dataclasses.asdict(model), dataclasses.asdict(parent.config.model)
    for name, value in ours.items():
        if name not in FREE_MODEL_FIELDS and value != theirs[name]:
            raise CheckpointError(
                f"the model's {name} {value!r} differs from its parent's ({theirs[name]!r} in "
                f"{parent.folder / 'config.json'}); a fine-tuned run keeps its parent's model"
            )


def extended_vocabulary(vocab: Vocabulary, characters: Iterable[str]) -> Vocabulary:
    """`vocab` with the characters it lacks appended in code-point order (known ids unchanged)."""
    added = sorted(set(characters) - set(vocab.characters))
    return Vocabulary([*vocab.characters, *added])


@dataclasses.dataclass(frozen=True)
class ParentWeights:
    """A parent's weights as float32 arrays by `weights.model_weights` key, and their step."""

    parent: Parent
    arrays: dict[str, np.ndarray]
    step: int

    def init_config(self, vocab: Vocabulary) -> InitConfig:
        """The record of this parent in a run whose vocabulary is `vocab`."""
        added = vocab.characters[len(self.parent.vocab.characters) :]
        return InitConfig(self.parent.label, self.step, "".join(added))


def read_parent_weights(parent: Parent, warn: Callable[[str], object]) -> ParentWeights:
    """The parent's weights: a bundled model's, or a run's best checkpoint (else its last).

    A warning about a damaged checkpoint skipped goes to `warn` once the weights are read, so a
    parent that cannot be loaded at all is one error line.

    Raises:
        CheckpointError: its weights are missing, damaged or do not fit its config.json.
    """
    from musicgen.runs.checkpoint import choose_checkpoint, restore_model
    from musicgen.runs.weights import model_weights

    warnings: list[str] = []
    chosen = choose_checkpoint(parent.folder, "best", warnings.append)
    model = restore_model(parent.config, chosen)
    arrays = {key: variable.numpy() for key, variable in model_weights(model).items()}
    for line in warnings:
        warn(line)
    return ParentWeights(parent, arrays, chosen.step)


def load_parent_weights(model, weights: ParentWeights, vocab: Vocabulary) -> None:
    """Puts the parent's weights into `model`, whose vocabulary `vocab` extends the parent's;
    each new character's entries are copies of UNK's (see the module's docstring).

    Raises:
        CheckpointError: `vocab` does not start with the parent's characters, or a weight of the
            model has no counterpart in the parent's.
    """
    from musicgen.runs.weights import model_weights

    known = weights.parent.vocab.characters
    if vocab.characters[: len(known)] != known:
        raise CheckpointError(
            f"the run's vocabulary does not extend its parent's ({weights.parent.label}); start a "
            "new run with --init"
        )
    old_size = len(SPECIAL_TOKENS) + len(known)
    for key, variable in model_weights(model).items():
        if key not in weights.arrays:
            raise CheckpointError(f"{weights.parent.label}: has no weight {key}; check --init")
        value = extend_vocab_axes(weights.arrays[key], tuple(variable.shape), old_size)
        variable.assign(value.astype(variable.dtype))


def extend_vocab_axes(value: np.ndarray, shape: tuple[int, ...], old_size: int) -> np.ndarray:
    """`value` grown to `shape` along its vocabulary axes (those of size `old_size` that grow),
    the new entries copies of UNK's entry on that axis.

    Raises:
        CheckpointError: an axis that differs is not a vocabulary axis.
    """
    import numpy as np

    if value.shape == shape:
        return value
    if len(value.shape) != len(shape):
        raise CheckpointError(f"a parent weight of shape {value.shape} cannot become {shape}")
    for axis, (old, new) in enumerate(zip(value.shape, shape)):
        if old == new:
            continue
        if old != old_size or new < old:
            raise CheckpointError(f"a parent weight of shape {value.shape} cannot become {shape}")
        copies = np.take(value, [UNK] * (new - old), axis=axis)
        value = np.concatenate([value, copies], axis=axis)
    return value
