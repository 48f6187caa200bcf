"""Plain frozen dataclasses for every setting, saved as JSON beside the weights.

`generate` rebuilds a model from the run directory's `config.json` alone, so nothing here may
depend on the corpus or on the training code's defaults at load time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from musicgen.errors import CheckpointError

CONFIG_VERSION = 1
MODEL_KINDS = ("lstm", "transformer")


@dataclass(frozen=True)
class DataConfig:
    """Where tunes come from and how they are cut into training windows."""

    paths: tuple[str, ...] = ()  # empty: the bundled default corpus
    seq_length: int = 128
    validation_fraction: float = 0.05


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network. `vocab_size` is filled in from the vocabulary.

    `embedding_dim` and `units` size the LSTM; `d_model`, `heads`, `ff_dim` and `context` the
    Transformer; `layers` and `dropout` both. Use `ModelConfig.defaults(kind)` for a family's
    defaults (the Transformer's differ in `layers`).
    """

    kind: str = "lstm"
    vocab_size: int = 0
    embedding_dim: int = 128
    units: int = 384
    layers: int = 2
    dropout: float = 0.1
    d_model: int = 192
    heads: int = 4
    ff_dim: int = 768
    context: int = 256

    @classmethod
    def defaults(cls, kind: str) -> ModelConfig:
        """The default sizes of model family `kind`."""
        if kind == "transformer":
            return cls(kind=kind, layers=TRANSFORMER_LAYERS)
        return cls(kind=kind)


TRANSFORMER_LAYERS = 4


@dataclass(frozen=True)
class TrainConfig:
    """How the optimiser runs."""

    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    clip_norm: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    random_seed: int = 1234
    mixed_precision: bool = False
    xla: bool = False  # compile the train step with XLA (jit_compile)


@dataclass(frozen=True)
class SampleConfig:
    """How tunes are drawn from a trained model."""

    num: int = 4
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 0.9  # 1.0: off
    max_length: int = 1200
    random_seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """Everything `config.json` in a run directory records."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> RunConfig:
        """Parses `config.json` text; unknown keys are a CheckpointError naming `source`."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})"
            ) from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{source}: expected a JSON object")
        version = raw.get("version")
        if version != CONFIG_VERSION:
            raise CheckpointError(
                f"{source}: written by config version {version!r}, this musicgen reads version "
                f"{CONFIG_VERSION}; retrain or use the musicgen that wrote it"
            )
        try:
            data = _build(DataConfig, raw.get("data", {}))
            data = dataclasses.replace(data, paths=tuple(data.paths))
            config = cls(
                data=data,
                model=_build(ModelConfig, raw.get("model", {})),
                train=_build(TrainConfig, raw.get("train", {})),
                version=version,
            )
        except TypeError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        if config.model.kind not in MODEL_KINDS:
            raise CheckpointError(f"{source}: unknown model kind {config.model.kind!r}")
        return config

    def save(self, path: Path) -> None:
        from musicgen.files import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; is this a musicgen run directory?") from None
        return cls.from_json(text, source=str(path))


def _build(kind, values: dict):
    if not isinstance(values, dict):
        raise TypeError(f"{kind.__name__} must be a JSON object")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown {kind.__name__} keys {unknown}")
    return kind(**values)
