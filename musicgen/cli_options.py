"""The command line's options and the rule that turns them into configs, without TensorFlow.

`musicgen train`'s options (`train_options`) and `train_config`, which builds a run's RunConfig
from them: from the defaults, from config.json on --resume, from the parent's model and windows
with --init, refusing what contradicts either. The sampling settings that `generate` and
`evaluate` share (`sampling_options`). `cli.py` holds the commands. Over 400 lines: most of it
is one declaration per option, with the help text --help shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import click

from musicgen.config import (
    LSTM_BAR_CLOCK,
    MAX_BAR_CLOCK,
    MAX_BATCH,
    MAX_LAYERS,
    MAX_LENGTH_BUCKETS,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MAX_TRAIN_SEED,
    MAX_TUNE_LENGTH,
    MAX_VALID_SAMPLE,
    MAX_WIDTH,
    MAX_WINDOW,
    TRANSFORMER_LAYERS,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from musicgen.errors import MusicgenError
from musicgen.training.distribute import STRATEGIES
from musicgen.training.finetune import FINETUNE_CHARACTERS, FINETUNE_LEARNING_RATE

# A config field's option where its name is not the field's with dashes.
OPTION_OF_FIELD = {"kind": "--model", "transpose": "--augment-transpose"}


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite: click's FloatRange lets `nan` and `inf` through."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _setting(flag: str, kind: click.ParamType, help: str):
    """An option that sets one config field; with no default of its own (None), so the run's
    config (the defaults, config.json on --resume, the parent's with --init) decides."""
    return click.option(flag, type=kind, default=None, help=help)


def _pick(value, default):
    return default if value is None else value


# `musicgen train`'s options, in the order --help lists them.
_TRAIN_OPTIONS = (
    click.option(
        "--data",
        "data_paths",
        multiple=True,
        type=click.Path(path_type=Path),
        help="An .abc, .mid or .midi file, or a folder searched for them (repeatable). "
        "Default: the bundled corpus.",
    ),
    _setting("--run-dir", click.Path(path_type=Path),
             "Where checkpoints, config and logs go. Default: checkpoints/run-DATE-TIME."),
    click.option(
        "--model",
        "kind",
        type=click.Choice(["lstm", "transformer"]),
        default=None,
        help="Model family.  [default: lstm]",
    ),
    _setting("--steps", click.IntRange(1, MAX_STEPS),
             f"Total training steps.  [default: {TrainConfig.steps}; with --init, "
             f"{FINETUNE_CHARACTERS:,} characters' worth]"),
    _setting("--batch-size", click.IntRange(1, MAX_BATCH),
             f"Windows (with --whole-tunes: tunes) per step.  [default: {TrainConfig.batch_size}]"),
    _setting("--seq-length", click.IntRange(2, MAX_WINDOW),
             f"Characters per window.  [default: {DataConfig.seq_length}; a Transformer: its "
             "--context]"),
    click.option(
        "--augment-transpose",
        "transpose",
        default=None,
        metavar="SEMITONES",
        help="Also train on every training tune transposed by these semitones: a range such "
        "as -5..6 or a list such as -2,2, or none (validation tunes stay as they are).  "
        "[default: none]",
    ),
    click.option(
        "--whole-tunes/--stream-windows",
        default=None,
        help="Training windows start at a tune's start and hold it whole, padded (--seq-length 512 "
        "holds 97% of the bundled tunes), or are cut from anywhere in the stream of tunes.  "
        f"[default: {'--whole-tunes' if DataConfig.whole_tunes else '--stream-windows'}]",
    ),
    click.option(
        "--common-root/--own-keys",
        default=None,
        help="Train on every tune moved so its key's root is C (K:D becomes K:C, K:Ador "
        "K:Cdor), so home is the same note in every tune; generated tunes are moved to --key's "
        "root or to keys the corpus plays in. Or train on the tunes in their own keys.  [default: "
        f"{'--common-root' if DataConfig.common_root else '--own-keys'}]",
    ),
    _setting("--length-buckets", click.IntRange(1, MAX_LENGTH_BUCKETS),
             "With --whole-tunes: batch tunes of similar length into this many window widths (1: "
             f"every window --seq-length wide).  [default: {DataConfig.length_buckets}]"),
    _setting("--learning-rate", FiniteFloat(0, 1e38, min_open=True),
             f"Peak learning rate.  [default: {TrainConfig.learning_rate}; with --init, "
             f"{FINETUNE_LEARNING_RATE}]"),
    _setting("--embedding-dim", click.IntRange(1, MAX_WIDTH),
             f"Character embedding size.  [default: {ModelConfig.embedding_dim}]"),
    _setting("--units", click.IntRange(1, MAX_WIDTH),
             f"LSTM units per layer.  [default: {ModelConfig.units}]"),
    _setting("--layers", click.IntRange(1, MAX_LAYERS),
             f"LSTM or Transformer layers.  [default: {ModelConfig.layers} (LSTM), "
             f"{TRANSFORMER_LAYERS} (Transformer)]"),
    _setting("--d-model", click.IntRange(2, MAX_WIDTH),
             f"Transformer width (even, a multiple of --heads).  [default: {ModelConfig.d_model}]"),
    _setting("--heads", click.IntRange(1, 256),
             f"Transformer attention heads.  [default: {ModelConfig.heads}]"),
    _setting("--ff-dim", click.IntRange(1, 4 * MAX_WIDTH),
             f"Transformer feed-forward size.  [default: {ModelConfig.ff_dim}]"),
    _setting("--context", click.IntRange(2, MAX_WINDOW),
             "Characters a Transformer attends over; also its training window unless --seq-length "
             f"is given.  [default: {ModelConfig.context}]"),
    _setting("--bar-clock", click.IntRange(0, MAX_BAR_CLOCK),
             "LSTM: also give the model, at every character, the bars since the last section "
             "mark (:|, |:, ||, |]), counted up to this number less one; 0 turns it off.  "
             f"[default: {LSTM_BAR_CLOCK} (LSTM), 0 (Transformer)]"),
    _setting("--dropout", FiniteFloat(0, 0.95),
             f"Dropout between layers.  [default: {ModelConfig.dropout}]"),
    _setting("--eval-every", click.IntRange(1, MAX_STEPS),
             f"Steps between validation runs.  [default: {TrainConfig.eval_every}]"),
    _setting("--checkpoint-every", click.IntRange(1, MAX_STEPS),
             f"Steps between checkpoints.  [default: {TrainConfig.checkpoint_every}]"),
    _setting("--random-seed", click.IntRange(0, MAX_TRAIN_SEED),
             f"Seed for weights, batches and dropout.  [default: {TrainConfig.random_seed}]"),
    click.option(
        "--mixed-precision",
        is_flag=True,
        default=None,
        help="float16 on GPU (with loss scaling), bfloat16 on CPU.",
    ),
    click.option(
        "--xla",
        is_flag=True,
        default=None,
        help="Compile the training step with XLA (slower on this project's CPU; try it on a GPU).",
    ),
    click.option(
        "--strategy",
        type=click.Choice(STRATEGIES),
        default="auto",
        show_default=True,
        help="tf.distribute strategy: one device, mirrored over this machine's GPUs, or "
        "multiworker across the machines in TF_CONFIG; auto picks multiworker when TF_CONFIG "
        "names several tasks, mirrored when several GPUs are visible. --batch-size is the "
        "global batch.",
    ),
    click.option(
        "--no-cache",
        is_flag=True,
        help="Read the corpus files again instead of using (or storing) the encoded corpus kept in "
        "$MUSICGEN_CACHE_DIR (default ~/.cache/musicgen/corpus) from an earlier run.",
    ),
    _setting("--patience", click.IntRange(0, MAX_STEPS),
             "Stop when this many validations in a row have not beaten the best one (0: never).  "
             f"[default: {TrainConfig.patience}]"),
    _setting("--valid-sample", click.IntRange(0, MAX_VALID_SAMPLE),
             "Tunes sampled at each validation to record the share that pass every check (0: "
             f"none).  [default: {TrainConfig.valid_sample}]"),
    click.option(
        "--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint."
    ),
    click.option(
        "--init",
        "init_from",
        default=None,
        metavar="MODEL",
        help="Fine-tune: start from the weights of a bundled model (its name; `bundled`: the "
        "default one) or of a run (RUN_DIR: its best checkpoint). Family and size come from "
        "it; new characters extend its vocabulary. Unless given, --learning-rate is "
        f"{FINETUNE_LEARNING_RATE} and --steps trains on {FINETUNE_CHARACTERS:,} characters "
        "(150 steps of 32 x 512): about 5 minutes at 8,000 characters/s, 14 passes over a "
        "700-tune tunebook.",
    ),
)


def option_group(options: tuple) -> Callable:
    """One decorator that declares `options` on a command, listed by --help in this order."""

    def declare(command):
        for option in reversed(options):
            command = option(command)
        return command

    return declare


train_options = option_group(_TRAIN_OPTIONS)  # `musicgen train`'s options


def train_config(run_dir: Path, resume: bool, data_paths, options: dict, parent=None):
    """Builds the run's config from the options; on --resume, from the saved config.json; with
    --init (`parent`, a `finetune.Parent`), from the parent's model and windows."""
    source = Path(run_dir) / "config.json"
    if resume:
        base = RunConfig.load(source)
        _check_same_parent(base, parent, source)
    elif parent is not None:
        base = _fine_tune_base(parent)
    else:
        base = RunConfig()
    data = base.data
    if data_paths:
        data = dataclasses.replace(data, paths=tuple(str(p) for p in data_paths))
    model = base.model
    train_cfg = base.train
    if resume:
        against = f"the run being resumed ({{}} in {source})"
        advice = "leave it out to resume, or train a new model into another --run-dir"
        _check_model_options(base.model, options, against, advice)
    elif parent is not None:
        against = f"--init {parent.label} ({{}} in {parent.folder / 'config.json'})"
        advice = "leave it out: a fine-tuned model keeps its parent's family and size"
        _check_model_options(base.model, options, against, advice, free=("dropout",))
        model = dataclasses.replace(model, dropout=_pick(options["dropout"], model.dropout))
    else:
        model = ModelConfig.defaults(_pick(options["kind"], model.kind))
        updates = {name: options[name] for name in _MODEL_OPTIONS[1:] if options[name] is not None}
        model = dataclasses.replace(model, **updates)
        if model.kind == "transformer" and options["seq_length"] is None:
            data = dataclasses.replace(data, seq_length=model.context)
    data = dataclasses.replace(data, seq_length=_pick(options["seq_length"], data.seq_length))
    data = _window_and_augment_options(data, options, resume, Path(run_dir) / "config.json")
    if parent is not None and data.common_root != parent.config.data.common_root:
        flag, other = ("--common-root", "--own-keys")[:: 1 if data.common_root else -1]
        raise MusicgenError(
            f"{flag} contradicts --init {parent.label}, trained with {other}: the model reads "
            f"tunes as it was trained to; leave out {flag}"
        )
    train_fields = (
        "steps", "batch_size", "learning_rate", "eval_every", "checkpoint_every",
        "random_seed", "mixed_precision", "xla", "patience", "valid_sample",
    )  # fmt: skip
    updates = {name: options[name] for name in train_fields if options[name] is not None}
    train_cfg = dataclasses.replace(train_cfg, **updates)
    if parent is not None and not resume:
        from musicgen.training.finetune import finetune_defaults

        defaults = finetune_defaults(parent, train_cfg.batch_size, data.seq_length)
        defaults = {name: value for name, value in defaults.items() if options[name] is None}
        train_cfg = dataclasses.replace(train_cfg, **defaults)
    return RunConfig(data=data, model=model, train=train_cfg, init=base.init)


# How the parent read its tunes, which a fine-tuned model must read them by too.
_INHERITED_DATA = ("seq_length", "whole_tunes", "length_buckets", "common_root")


def _fine_tune_base(parent) -> RunConfig:
    """A fine-tuned run's starting config: the parent's model and training windows, default
    training settings, and the parent named in `init` (`train` adds its step)."""
    from musicgen.config import InitConfig

    windows = {name: getattr(parent.config.data, name) for name in _INHERITED_DATA}
    return RunConfig(
        data=DataConfig(**windows), model=parent.config.model, init=InitConfig(parent.label)
    )


def _check_same_parent(saved: RunConfig, parent, source: Path) -> None:
    """--init with --resume must name the parent the run being resumed was fine-tuned from."""
    if parent is not None and (saved.init is None or saved.init.parent != parent.label):
        was = (
            "trained from scratch" if saved.init is None else f"fine-tuned from {saved.init.parent}"
        )
        raise MusicgenError(
            f"--init {parent.label} contradicts the run being resumed ({was}, {source}); leave "
            "out --init to resume it, or fine-tune into a new --run-dir"
        )


def _window_and_augment_options(data: DataConfig, options: dict, resume: bool, source: Path):
    """`data` with --augment-transpose, --whole-tunes, --common-root and --length-buckets; on
    --resume they must
    agree with the saved run (its corpus and batches depend on them)."""
    from musicgen.data.augment import parse_shifts

    given = {
        "transpose": None if options["transpose"] is None else parse_shifts(options["transpose"]),
        "whole_tunes": options["whole_tunes"],
        "common_root": options["common_root"],
        "length_buckets": options["length_buckets"],
    }
    given = {name: value for name, value in given.items() if value is not None}
    for name, value in given.items():
        if resume and value != getattr(data, name):
            option = OPTION_OF_FIELD.get(name, "--" + name.replace("_", "-"))
            raise MusicgenError(
                f"{option} contradicts the run being resumed ({name} {getattr(data, name)!r} in "
                f"{source}); leave it out to resume"
            )
    return dataclasses.replace(data, **given)


_MODEL_OPTIONS = (
    "kind", "embedding_dim", "units", "layers", "dropout", "d_model", "heads", "ff_dim", "context",
    "bar_clock",
)  # fmt: skip


def _check_model_options(
    saved: ModelConfig, options: dict, against: str, advice: str, free: tuple[str, ...] = ()
) -> None:
    """A model option given with --resume or --init must agree with the model it continues.

    Args:
        against: what it contradicts, with `{}` for the saved value ("the run being resumed
            (units 32 in RUN/config.json)").
        advice: what to do instead.
        free: options that may differ.
    """
    for name in _MODEL_OPTIONS:
        given = options[name]
        if name not in free and given is not None and given != getattr(saved, name):
            option = OPTION_OF_FIELD.get(name, "--" + name.replace("_", "-"))
            shown = against.format(f"{name} {getattr(saved, name)}")
            raise MusicgenError(f"{option} {given} contradicts {shown}; {advice}")


run_dir_option = click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A trained run, or a bundled model's name (a run folder of that name here wins). "
    "Default: the newest run under checkpoints/, else the bundled model.",
)
checkpoint_option = click.option(
    "--checkpoint",
    "which_checkpoint",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="The run's best checkpoint (lowest validation bits/char) or its last one (a bundled "
    "model has one set of weights).",
)


# The sampling settings, shared by `generate` and `evaluate`; applied last-first so --help lists
# them in this order.
SAMPLING_OPTIONS = (
    click.option(
        "--temperature",
        type=FiniteFloat(0, MAX_TEMPERATURE, min_open=True),
        default=SampleConfig.temperature,
        show_default=True,
        help="Below 1: safer tunes; above 1: wilder ones.",
    ),
    click.option(
        "--top-k",
        type=click.IntRange(0, 65_536),
        default=SampleConfig.top_k,
        show_default=True,
        help="Sample from the k likeliest characters only (0: off).",
    ),
    click.option(
        "--top-p",
        type=FiniteFloat(0, 1, min_open=True),
        default=SampleConfig.top_p,
        show_default=True,
        help="Sample from the smallest set of characters whose probability reaches p (1: off).",
    ),
    click.option(
        "--max-length",
        type=click.IntRange(1, MAX_TUNE_LENGTH),
        default=SampleConfig.max_length,
        show_default=True,
        help="Longest tune in characters, seed included.",
    ),
    click.option(
        "--random-seed",
        type=click.IntRange(-(2**63), 2**63 - 1),
        default=SampleConfig.random_seed,
        show_default=True,
        help="Same seed, same tunes (on CPU).",
    ),
)


sampling_options = option_group(SAMPLING_OPTIONS)  # the sampling settings of generate, evaluate
