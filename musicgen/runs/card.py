"""A model's card: what it is, in figures, for `musicgen info`.

    family and size    config.json (parameters counted from the shapes, as the model builds them)
    data               corpus.json: tunes, characters, the collections they came from
    training           metrics.jsonl: steps, wall-clock time on the machine that trained it, speed
    validation         metrics.jsonl and best/: bits/char at the last and at the best step
    evaluation         an `evaluate` result (evaluation.json): the share of generated tunes passing
                       every headline check, and the share copying a phrase from the training tunes
    why                card.json: why this family, size and recipe (`export_bundled --why`)

`build_card` reads the run directory's own files, and falls back, for whatever is missing, on the
figures stored in its `card.json`, which `train` writes at the end of each call and `evaluate`
updates: a model shipped without its logs (weights, config, vocabulary and card.json) gets the same
card. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from collections import Counter
from pathlib import Path

from musicgen.config import RunConfig, parameter_count
from musicgen.errors import CheckpointError
from musicgen.files import atomic_write_text
from musicgen.runs.bundled import is_bundled_folder
from musicgen.runs.metrics import duration, read_metrics
from musicgen.runs.rundir import RunPaths, is_musicgen_config

CARD_VERSION = 1
TOP_COLLECTIONS = 5  # collections named in the data summary; the rest are counted together
_INDEX_ENTRY = re.compile(r'^model_checkpoint_path:\s*"([^"]+)"', re.MULTILINE)


def check_model_dir(run_dir: Path) -> RunPaths:
    """The paths of a folder that holds a musicgen model (a run directory or a model with a card).

    Raises:
        CheckpointError: the folder is missing, or holds no musicgen config.json.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise CheckpointError(f"{paths.root}: no such run directory")
    if not is_musicgen_config(paths.config):
        raise CheckpointError(
            f"{paths.root}: not a musicgen run directory (no musicgen config.json in it)"
        )
    return paths


def build_card(run_dir: Path, evaluation: Path | None = None) -> dict:
    """The card of the model in `run_dir`, as a JSON-ready dict.

    Args:
        run_dir: a run directory (or a model folder with config.json and card.json).
        evaluation: an `evaluate` result to take the evaluation figures from; default: the one
            card.json records, else `out/evaluate-NAME/evaluation.json` if it exists.

    Raises:
        CheckpointError: the folder is not a musicgen model, or a file in it is unreadable.
    """
    paths = check_model_dir(run_dir)
    config = RunConfig.load(paths.config)
    stored = _read_json(paths.card) or {}
    entries = read_metrics(paths.metrics)
    card = {
        "card_version": CARD_VERSION,
        "name": paths.root.resolve().name,
        "run_dir": str(paths.root),
        "model": _model_part(config),
        "data": _data_part(_read_json(paths.corpus)) or stored.get("data"),
        "training": _training_part(entries, config, stored.get("training")),
        "validation": _validation_part(entries, paths) or stored.get("validation"),
        "evaluation": _evaluation_part(paths, evaluation, stored.get("evaluation")),
    }
    if config.init is not None:
        card["init"] = dataclasses.asdict(config.init)
    if isinstance(stored.get("exported_from"), dict):
        card["exported_from"] = stored["exported_from"]
    if isinstance(stored.get("why"), str):
        card["why"] = stored["why"]  # why this model: written when it was exported
    card["windows"] = _windows_part(config)
    if is_bundled_folder(paths.root):
        card["bundled"] = paths.root.name  # what --run-dir and --init accept for it
    return card


def write_card(run_dir: Path, device: str | None = None) -> dict:
    """Builds the card and stores it in `run_dir/card.json` (atomically); returns it.

    Args:
        device: the device that trained the model (`tfsetup.describe_devices`), kept in the card.
    """
    card = build_card(run_dir)
    if device is not None and card["training"] is not None:
        card["training"]["device"] = device
    atomic_write_text(RunPaths(Path(run_dir)).card, json.dumps(card, indent=1) + "\n")
    return card


def record_evaluation(run_dir: Path, result: dict, source: Path) -> dict:
    """Stores an `evaluate` result's figures in `run_dir/card.json`; returns the card."""
    paths = RunPaths(Path(run_dir))
    card = build_card(paths.root)
    card["evaluation"] = evaluation_figures(result, source)
    atomic_write_text(paths.card, json.dumps(card, indent=1) + "\n")
    return card


def evaluation_figures(result: dict, source: Path | str) -> dict:
    """The card's figures of an `evaluate` result (evaluation.json's dict)."""
    generated = result["validity"]["generated"]
    novelty = result["novelty"]
    likelihood = result.get("likelihood") or {}
    checkpoint = result.get("checkpoint")
    return {
        "source": str(source),
        "checkpoint": checkpoint,
        "step": _step_of(checkpoint),
        "tunes": generated["tunes"],
        "valid_share": generated["valid_share"],
        "real_valid_share": result["validity"]["real"]["valid_share"],
        "copying_share": novelty["generated"]["copying_share"],
        "real_copying_share": novelty["validation_tunes"]["copying_share"],
        "phrase_bars": novelty["generated"].get("phrase_bars"),
        "bits_per_char": likelihood.get("bits_per_char"),
        "scored": result.get("scored"),
    }


def _model_part(config: RunConfig) -> dict:
    model = config.model
    if model.kind == "lstm":
        shape = {"layers": model.layers, "units": model.units, "embedding_dim": model.embedding_dim,
                 "bar_clock": model.bar_clock}  # fmt: skip
    else:
        shape = {"layers": model.layers, "d_model": model.d_model, "heads": model.heads,
                 "ff_dim": model.ff_dim, "context": model.context}  # fmt: skip
    return {
        "family": model.kind,
        "parameters": parameter_count(model),
        "vocab_size": model.vocab_size,
        **shape,
    }


def _windows_part(config: RunConfig) -> dict:
    data = config.data
    return {
        "seq_length": data.seq_length,
        "whole_tunes": data.whole_tunes,
        "common_root": data.common_root,
        "transpose": list(data.transpose),
    }


def _windows_text(windows: dict) -> str:
    text = (f"whole tunes of up to {windows['seq_length']} characters" if windows["whole_tunes"]
            else f"windows of {windows['seq_length']} characters from anywhere")  # fmt: skip
    if windows["common_root"]:
        text += "; every tune moved to root C, generated tunes moved home (--key or corpus keys)"
    if windows["transpose"]:
        text += f"; also transposed by {windows['transpose']} semitones"
    return text


def _data_part(corpus: dict | None) -> dict | None:
    if not corpus:
        return None
    sources = [*corpus.get("train_sources", []), *corpus.get("validation_sources", [])]
    collections = Counter(_collection(source) for source in sources)
    named = dict(collections.most_common(TOP_COLLECTIONS))
    others = sum(collections.values()) - sum(named.values())
    return {
        "tunes": corpus.get("tunes"),
        "train_tunes": corpus.get("train_tunes"),
        "validation_tunes": corpus.get("validation_tunes"),
        "characters": corpus.get("train_characters", 0) + corpus.get("validation_characters", 0),
        "train_characters": corpus.get("train_characters"),
        "validation_characters": corpus.get("validation_characters"),
        "summary": corpus.get("summary", ""),
        "sources_per": corpus.get("sources_per", "tune"),
        "collections": named,
        "other_collections": len(collections) - len(named),
        "in_other_collections": others,
    }


def _collection(source: str) -> str:
    """The name of the folder a tune's file is in ("music21:oneills1850/0001-0050.abc#X:3" ->
    "music21:oneills1850", "/home/me/tunes/a.abc#X:1" -> "tunes"), or the file's own name when
    it names no folder."""
    file = source.split("#", 1)[0]
    if "/" not in file:
        return file
    folder = file.rsplit("/", 1)[0]
    return folder.rsplit("/", 1)[-1] or folder


def _training_part(entries: list[dict], config: RunConfig, stored: dict | None) -> dict | None:
    if not entries:
        return stored
    speeds = [e["chars_per_sec"] for e in entries if "chars_per_sec" in e]
    stops = [e for e in entries if e.get("stopped")]
    return {
        "steps": max(int(e["step"]) for e in entries),
        "target_steps": config.train.steps,
        "seconds": max(float(e.get("elapsed", 0.0)) for e in entries),
        "chars_per_sec": statistics.median(speeds) if speeds else None,
        "stopped": stops[-1].get("stop_reason", stops[-1]["stopped"]) if stops else None,
        "device": (stored or {}).get("device"),
    }


def _validation_part(entries: list[dict], paths: RunPaths) -> dict | None:
    validations = [e for e in entries if e.get("val_bits_per_char") is not None]
    if not validations:
        return None
    last = validations[-1]
    best_step = _best_step(paths)
    best = next((e for e in reversed(validations) if e["step"] == best_step), None)
    return {
        "last": _figure(last),
        "best": None if best is None else _figure(best),
        "best_checkpoint": None if best_step is None else str(paths.best / f"ckpt-{best_step}"),
    }


def _figure(entry: dict) -> dict:
    return {
        "step": int(entry["step"]),
        "bits_per_char": float(entry["val_bits_per_char"]),
        "valid_share": entry.get("valid_share"),
    }


def _best_step(paths: RunPaths) -> int | None:
    """The step `best/checkpoint` (TensorFlow's text index of the folder) names, if any."""
    try:
        found = _INDEX_ENTRY.search((paths.best / "checkpoint").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    return None if found is None else _step_of(found.group(1))


def _step_of(prefix: str | None) -> int | None:
    number = str(prefix or "").rsplit("-", 1)[-1]
    return int(number) if number.isdigit() else None


def _evaluation_part(paths: RunPaths, source: Path | None, stored: dict | None) -> dict | None:
    """The figures of `source` if given, else those card.json stores, else those of the default
    `out/evaluate-NAME/evaluation.json`; None when there are none.

    Raises:
        CheckpointError: `source` is given but is not an `evaluate` result.
    """
    if source is None and stored:
        return stored
    path = source or Path("out") / f"evaluate-{paths.root.resolve().name}" / "evaluation.json"
    result = _read_json(path)
    if result is None:
        if source is not None:
            raise CheckpointError(f"{source}: no such evaluate result (evaluation.json)")
        return None
    try:
        return evaluation_figures(result, path)
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{path}: not a musicgen evaluate result (no validity or novelty figures)"
        ) from None


def _read_json(path: Path) -> dict | None:
    """A JSON object from `path`; None when the file is missing.

    Raises:
        CheckpointError: the file is not a JSON object.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


# ------------------------------------------------------------------------------------------------
# Text


def format_card(card: dict) -> list[str]:
    """The card as a few labelled lines for a terminal."""
    rows = [
        ("model", _model_text(card)),
        ("data", _data_text(card.get("data"))),
        ("training", _training_text(card.get("training"))),
        ("validation", _validation_text(card.get("validation"))),
        ("evaluation", _evaluation_text(card.get("evaluation"), card)),
    ]
    if card.get("windows"):
        rows.append(("reads", _windows_text(card["windows"])))
    if card.get("init"):
        rows.insert(1, ("parent", _init_text(card["init"])))
    if card.get("exported_from"):
        rows.append(("bundled", _export_text(card["exported_from"])))
    if card.get("why"):
        rows.append(("why", card["why"]))
    return [f"{label:<11}{text}" for label, text in rows]


def _init_text(init: dict) -> str:
    added = repr(init["added_characters"]) if init.get("added_characters") else "none"
    return f"fine-tuned from {init['parent']} (its step {init['step']:,}); new characters: {added}"


def _export_text(origin: dict) -> str:
    check = origin.get("float16_check") or {}
    return (f"exported from the {origin.get('checkpoint')} checkpoint of {origin.get('run_dir')} "
            f"(step {origin.get('step')}); float16 weights, logits within "
            f"{check.get('max_logit_difference', float('nan')):.4f} of float32's on "
            f"{check.get('tunes')} real tunes")  # fmt: skip


def _model_text(card: dict) -> str:
    model = card["model"]
    if model["family"] == "lstm":
        shape = (f"LSTM, {model['layers']} x {model['units']} units, embedding "
                 f"{model['embedding_dim']}")  # fmt: skip
        if model.get("bar_clock"):  # cards written before the clock have none
            shape += f", bar clock {model['bar_clock']}"
    else:
        shape = (f"Transformer, {model['layers']} blocks of width {model['d_model']} "
                 f"({model['heads']} heads, feed-forward {model['ff_dim']}), context "
                 f"{model['context']}")  # fmt: skip
    return (f"{card['name']}: {shape}; {model['parameters']:,} parameters, "
            f"{model['vocab_size']} tokens")  # fmt: skip


def _data_text(data: dict | None) -> str:
    if not data:
        return "not recorded (no corpus.json)"
    unit = "tunes" if data.get("sources_per") == "tune" else "files"
    named = ", ".join(f"{name} {count:,}" for name, count in data["collections"].items())
    if data.get("other_collections"):
        named += f", {data['other_collections']} more ({data['in_other_collections']:,} {unit})"
    return (
        f"{data['tunes']:,} tunes ({data['train_tunes']:,} training, "
        f"{data['validation_tunes']:,} validation), {data['characters']:,} characters; "
        f"{unit} by collection: {named}"
    )


def _training_text(training: dict | None) -> str:
    if not training:
        return "not recorded (no metrics.jsonl)"
    text = (
        f"{training['steps']:,} steps of {training['target_steps']:,} in "
        f"{duration(training['seconds'])} on the machine that trained it"
    )
    if training.get("chars_per_sec"):
        text += f" ({training['chars_per_sec']:,.0f} characters/s)"
    if training.get("device"):
        text += f", {training['device']}"
    if training.get("stopped"):
        text += f"; stopped early: {training['stopped']}"
    return text


def _validation_text(validation: dict | None) -> str:
    if not validation:
        return "none recorded"
    last, best = validation["last"], validation.get("best")
    text = f"{last['bits_per_char']:.3f} bits/char at the last step ({last['step']:,})"
    if best is not None:
        text += f"; best {best['bits_per_char']:.3f} at step {best['step']:,}"
        if best.get("valid_share") is not None:
            text += f" ({best['valid_share']:.0%} of sampled tunes valid)"
    return text


def _evaluation_text(evaluation: dict | None, card: dict) -> str:
    if not evaluation:
        return f"none yet (musicgen evaluate --run-dir {card.get('bundled') or card['run_dir']})"
    text = (
        f"{_percent(evaluation['valid_share'])} of {evaluation['tunes']} generated tunes pass "
        f"every check (real tunes {_percent(evaluation['real_valid_share'])}); "
        f"{_percent(evaluation['copying_share'])} copy a {evaluation.get('phrase_bars') or 4}-bar "
        f"phrase (unseen real tunes {_percent(evaluation['real_copying_share'])})"
    )
    if evaluation.get("bits_per_char") is not None:
        text += f"; {evaluation['bits_per_char']:.3f} bits/char"
    if evaluation.get("step") is not None:
        text += f"; step {evaluation['step']:,}"
    return f"{text} ({evaluation['source']})"


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"
