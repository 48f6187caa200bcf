"""Plain frozen dataclasses for every setting, saved as JSON beside the weights.

`generate` rebuilds a model from the run directory's `config.json` alone, so nothing here may
depend on the corpus or on the training code's defaults at load time. Over 400 lines: each
setting is checked where it is defined (`ConfigError`), beside its field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from musicgen.errors import CheckpointError, ConfigError
from musicgen.files import atomic_write_text, read_run_file

CONFIG_VERSION = 1
MODEL_KINDS = ("lstm", "transformer")

# Upper bounds on sizes: far above any sensible run, low enough that a typo (an extra zero, 2**31)
# is refused in one line before TensorFlow tries to allocate it. `estimated_training_bytes` below
# compares what a run would need with this machine's memory.
MAX_WIDTH = 8192  # embedding, LSTM units, Transformer width
MAX_LAYERS = 64
MAX_WINDOW = 8192  # characters per training window, Transformer context
MAX_BATCH = 65_536
MAX_STEPS = 10**9
MAX_TUNES_PER_CALL = 4096  # tunes sampled as one batch
MAX_VALID_SAMPLE = 1024  # tunes sampled at each validation while training
MAX_TUNE_LENGTH = 20_000  # characters; the corpus's longest tunes have a few thousand
MAX_TEMPERATURE = 100.0
MAX_TRAIN_SEED = 2**32 - 1  # what Keras' set_random_seed takes
MAX_CHARACTERS_PER_STEP = 2**22  # batch x window: 64 x 128 is 8,192


def _check_number(owner, name: str, kind: type, low, high, *, low_open: bool = False) -> None:
    """Raises ConfigError unless `owner.name` is a `kind` (never a bool), finite, in the range."""
    value = getattr(owner, name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
        object.__setattr__(owner, name, value)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {value!r}", field=name)
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}", field=name)
    below = value <= low if low_open else value < low
    if below or value > high:
        opening = "above" if low_open else "at least"
        raise ConfigError(
            f"{name} must be {opening} {low} and at most {high}, got {value}", field=name
        )


def _check_flag(owner, name: str) -> None:
    if not isinstance(getattr(owner, name), bool):
        raise ConfigError(f"{name} must be true or false, got {getattr(owner, name)!r}", field=name)


# Windows cut from anywhere in the stream of tunes, no transposition: the default recipe until
# issue 13 (64 x 128), spelled out for the benches that keep measuring it.
STREAM_WINDOWS = {"transpose": (), "whole_tunes": False, "common_root": False}
# What a config.json written before these fields existed meant, so such a run resumes as it
# began, not with today's defaults.
LEGACY_DATA = {"seq_length": 128, **STREAM_WINDOWS}
LEGACY_MODEL = {"bar_clock": 0}


@dataclass(frozen=True)
class DataConfig:
    """Where tunes come from and how they are cut into training windows."""

    paths: tuple[str, ...] = ()  # empty: the bundled default corpus
    seq_length: int = 512  # holds 97% of the bundled corpus's tunes whole
    validation_fraction: float = 0.05
    # Semitones every training tune is also transposed by (`musicgen.data.augment`); () for none.
    transpose: tuple[int, ...] = ()
    # Training windows start at a tune's start and hold it whole, padded (`dataset.tune_pieces`).
    whole_tunes: bool = True
    # With whole_tunes: batches of tunes of similar length, cut to one of this many widths.
    length_buckets: int = 4
    # Every tune moved so its key's root is C; generated tunes moved home
    # (`musicgen.music.keyroot`).
    common_root: bool = True

    def __post_init__(self):
        if not isinstance(self.paths, list | tuple) or not all(
            isinstance(p, str) for p in self.paths
        ):
            raise ConfigError(f"paths must be a list of file names, got {self.paths!r}", "paths")
        object.__setattr__(self, "paths", tuple(self.paths))
        _check_number(self, "seq_length", int, 2, MAX_WINDOW)
        _check_number(self, "validation_fraction", float, 0.0, 0.5)
        _check_shifts(self)
        _check_flag(self, "whole_tunes")
        _check_flag(self, "common_root")
        _check_number(self, "length_buckets", int, 1, MAX_LENGTH_BUCKETS)


MAX_TRANSPOSE = 12  # semitones; an octave either way
MAX_LENGTH_BUCKETS = 64


def _check_shifts(owner) -> None:
    """`owner.transpose` as a sorted tuple of distinct whole semitones in +-MAX_TRANSPOSE, not 0."""
    shifts = owner.transpose
    if not isinstance(shifts, list | tuple) or any(
        isinstance(s, bool) or not isinstance(s, int) for s in shifts
    ):
        raise ConfigError(f"transpose must be a list of semitones, got {shifts!r}", "transpose")
    if any(s == 0 or abs(s) > MAX_TRANSPOSE for s in shifts) or len(set(shifts)) != len(shifts):
        raise ConfigError(
            f"transpose must hold distinct semitones from -{MAX_TRANSPOSE} to {MAX_TRANSPOSE}, "
            f"0 left out (the tune itself is always kept), got {list(shifts)}",
            field="transpose",
        )
    object.__setattr__(owner, "transpose", tuple(sorted(shifts)))


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
    # LSTM: embeddings of the bars since the last section mark (`models.barclock`), counts
    # 0 .. bar_clock - 1 told apart; 0 turns the clock off. `bar_ids` (the ids of "|", ":" and
    # "]", -1 for one the vocabulary lacks) is filled in from the vocabulary like `vocab_size`.
    # None: the family's default (LSTM_BAR_CLOCK for the LSTM, 0 for the Transformer).
    bar_clock: int | None = None
    bar_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model kind {self.kind!r}; use one of {MODEL_KINDS}", "kind")
        _check_number(self, "vocab_size", int, 0, 65_536)  # 0: not yet set from the vocabulary
        for name in ("embedding_dim", "units", "ff_dim"):
            _check_number(self, name, int, 1, MAX_WIDTH * (4 if name == "ff_dim" else 1))
        _check_number(self, "layers", int, 1, MAX_LAYERS)
        _check_number(self, "dropout", float, 0.0, 0.95)
        _check_number(self, "d_model", int, 2, MAX_WIDTH)
        _check_number(self, "heads", int, 1, 256)
        _check_number(self, "context", int, 2, MAX_WINDOW)
        if self.bar_clock is None:
            object.__setattr__(self, "bar_clock", LSTM_BAR_CLOCK if self.kind == "lstm" else 0)
        _check_number(self, "bar_clock", int, 0, MAX_BAR_CLOCK)
        if self.kind == "transformer" and self.bar_clock:
            raise ConfigError(
                f"bar_clock {self.bar_clock}: the bar clock is an LSTM input (a Transformer "
                "looks back at the bar lines itself); use 0 with a Transformer",
                field="bar_clock",
            )
        ids = self.bar_ids
        if (
            not isinstance(ids, list | tuple)
            or len(ids) not in (0, 3)
            or any(
                isinstance(i, bool) or not isinstance(i, int) or not -1 <= i < 65_536 for i in ids
            )
        ):
            raise ConfigError(f"bar_ids must be three token ids or none, got {ids!r}", "bar_ids")
        object.__setattr__(self, "bar_ids", tuple(ids))
        if self.kind == "transformer" and (self.d_model % self.heads or self.d_model % 2):
            raise ConfigError(
                f"d_model {self.d_model} must be even and a multiple of heads ({self.heads}); "
                f"for example {_fitting_width(self.d_model, self.heads)}",
                field="d_model",
            )

    @classmethod
    def defaults(cls, kind: str) -> ModelConfig:
        """The default sizes of model family `kind`."""
        if kind == "transformer":
            return cls(kind=kind, layers=TRANSFORMER_LAYERS)
        return cls(kind=kind)


TRANSFORMER_LAYERS = 4
MAX_BAR_CLOCK = 1024
LSTM_BAR_CLOCK = 32  # sections of up to 31 bars told apart; 77% of the corpus's have 8


def _fitting_width(d_model: int, heads: int) -> int:
    """The nearest width at or above `d_model` that is even and a multiple of `heads`."""
    step = heads if heads % 2 == 0 else 2 * heads
    return max(step, -(-d_model // step) * step)


@dataclass(frozen=True)
class TrainConfig:
    """How the optimiser runs."""

    steps: int = 1500
    batch_size: int = 32
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
    # Stop after this many validations in a row without a new best (`musicgen.training.best`); 0:
    # never.
    patience: int = 0
    # Tunes sampled and checked at each validation (`musicgen.evaluation.validity`); 0: none.
    valid_sample: int = 16

    def __post_init__(self):
        for name in ("steps", "eval_every", "checkpoint_every"):
            _check_number(self, name, int, 1, MAX_STEPS)
        _check_number(self, "warmup_steps", int, 0, MAX_STEPS)
        _check_number(self, "batch_size", int, 1, MAX_BATCH)
        # At most float32's range (3.4e38): absurd rates must reach the NaN check, not overflow.
        _check_number(self, "learning_rate", float, 0.0, 1e38, low_open=True)
        _check_number(self, "clip_norm", float, 0.0, 1e6)
        _check_number(self, "eval_batches", int, 1, 1_000_000)
        _check_number(self, "keep_checkpoints", int, 1, 1000)
        _check_number(self, "random_seed", int, 0, MAX_TRAIN_SEED)
        _check_flag(self, "mixed_precision")
        _check_flag(self, "xla")
        _check_number(self, "patience", int, 0, MAX_STEPS)
        _check_number(self, "valid_sample", int, 0, MAX_VALID_SAMPLE)


@dataclass(frozen=True)
class SampleConfig:
    """How tunes are drawn from a trained model."""

    num: int = 4
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 0.9  # 1.0: off
    max_length: int = 1200
    random_seed: int = 0

    def __post_init__(self):
        _check_number(self, "num", int, 1, MAX_TUNES_PER_CALL)
        _check_number(self, "temperature", float, 0.0, MAX_TEMPERATURE, low_open=True)
        _check_number(self, "top_k", int, 0, 65_536)
        _check_number(self, "top_p", float, 0.0, 1.0, low_open=True)
        _check_number(self, "max_length", int, 1, MAX_TUNE_LENGTH)
        _check_number(self, "random_seed", int, -(2**63), 2**63 - 1)


@dataclass(frozen=True)
class InitConfig:
    """The model a fine-tuned run started from (`musicgen train --init`,
    `musicgen.training.finetune`).

    Attributes:
        parent: "bundled:NAME" for a bundled model, else the parent run's directory.
        step: the training step of the parent's weights.
        added_characters: the characters the run's tunes added to the parent's vocabulary (their
            ids follow the parent's).
    """

    parent: str
    step: int = 0
    added_characters: str = ""

    def __post_init__(self):
        if not isinstance(self.parent, str) or not self.parent:
            raise ConfigError(f"init.parent must name a model, got {self.parent!r}", "init")
        _check_number(self, "step", int, 0, MAX_STEPS)
        if not isinstance(self.added_characters, str):
            raise ConfigError("init.added_characters must be a string", "init")


@dataclass(frozen=True)
class RunConfig:
    """Everything `config.json` in a run directory records; `init` only for a fine-tuned run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION
    init: InitConfig | None = None

    def __post_init__(self):
        windows = self.train.batch_size * self.data.seq_length
        if windows > MAX_CHARACTERS_PER_STEP:
            raise ConfigError(
                f"batch_size x seq_length is {windows:,} characters per step, more than "
                f"{MAX_CHARACTERS_PER_STEP:,}; lower --batch-size or --seq-length",
                field="batch_size",
            )

    def to_json(self) -> str:
        raw = dataclasses.asdict(self)
        if raw["init"] is None:
            del raw["init"]  # a run trained from scratch writes the same file as before
        return json.dumps(raw, indent=2, sort_keys=True, allow_nan=False) + "\n"

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
            data = _build(DataConfig, _with_legacy(LEGACY_DATA, raw.get("data", {})))
            config = cls(
                data=data,
                model=_build(ModelConfig, _with_legacy(LEGACY_MODEL, raw.get("model", {}))),
                train=_build(TrainConfig, raw.get("train", {})),
                version=version,
                init=None if raw.get("init") is None else _build(InitConfig, raw["init"]),
            )
        except (TypeError, ConfigError) as exc:
            raise CheckpointError(f"{source}: {exc}; fix the value or retrain") from None
        return config

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        return cls.from_json(read_run_file(path, CheckpointError), source=str(path))


def stream_recipe(kind: str = "lstm") -> RunConfig:
    """64 windows of 128 characters (a Transformer's: of its context) cut from anywhere in the
    stream of tunes in their own keys, 1,500 steps: the default recipe before issue 13, spelled
    out (without the bar clock, which came later). The speed benches measure it whatever the
    default is, so their figures stay comparable; `bench/form_candidates.py` calls it `before`.
    """
    model = dataclasses.replace(ModelConfig.defaults(kind), bar_clock=0)
    window = model.context if kind == "transformer" else 128
    return RunConfig(
        data=DataConfig(seq_length=window, **STREAM_WINDOWS),
        model=model,
        train=dataclasses.replace(TrainConfig(), batch_size=64, steps=1500),
    )


def parameter_count(model: ModelConfig) -> int:
    """The number of weights of the model `model` describes (its vocab_size set)."""
    vocab = max(model.vocab_size, 1)
    if model.kind == "lstm":
        inputs = [model.embedding_dim] + [model.units] * (model.layers - 1)
        lstm = sum(4 * (width + model.units + 1) * model.units for width in inputs)
        clock = model.bar_clock * model.embedding_dim
        return vocab * model.embedding_dim + clock + lstm + (model.units + 1) * vocab
    width, ff = model.d_model, model.ff_dim
    block = 4 * (width + 1) * width + (width + 1) * ff + (ff + 1) * width + 4 * width
    return vocab * width + model.context * width + model.layers * block + (width + 1) * vocab


def estimated_training_bytes(config: RunConfig) -> int:
    """A rough upper estimate of the memory one training step needs, in bytes.

    Weights, gradients and Adam's two moments (4 float32 copies), plus the activations kept for
    the backward pass: per character of the batch, each layer's gates or attention and
    feed-forward outputs, and the logits with their softmax and gradient.
    """
    model = config.model
    characters = config.train.batch_size * config.data.seq_length
    vocab = max(model.vocab_size, 1)
    if model.kind == "lstm":
        per_character = model.layers * 10 * model.units + model.embedding_dim
    else:
        attention = model.heads * config.data.seq_length * 3  # weights, dropout mask, gradient
        per_character = model.layers * (12 * model.d_model + 3 * model.ff_dim + attention)
    per_character += 4 * vocab
    return 4 * (4 * parameter_count(model) + characters * per_character)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(config: RunConfig) -> None:
    """Refuses, before any file is written, a run that cannot fit in this machine's memory.

    Raises:
        ConfigError: the estimate exceeds 90% of the machine's memory.
    """
    needed, available = estimated_training_bytes(config), machine_memory_bytes()
    if available is None or needed <= 0.9 * available:
        return
    gib = 2**30
    raise ConfigError(
        f"this model and batch need about {needed / gib:,.0f} GiB for a training step, this "
        f"machine has {available / gib:,.0f} GiB; lower --batch-size, --seq-length or the model's "
        "size",
        field="",
    )


def _with_legacy(legacy: dict, values):
    """`values` (a JSON object from config.json) with what a field it lacks meant when it was
    written, before that field existed."""
    return {**legacy, **values} if isinstance(values, dict) else values


def _build(kind, values: dict):
    if not isinstance(values, dict):
        raise TypeError(f"{kind.__name__} must be a JSON object")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown {kind.__name__} keys {unknown}")
    return kind(**values)
