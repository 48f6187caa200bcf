"""Issue 13's candidates at equal wall-clock: the recipe before issue 13 (`before`) against
transposition augmentation, whole-tune windows, both (today's default), and optionally the
Transformer at context 512.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/form_candidates.py [--budget SECONDS] [--num N]
        [--candidates before,augment,whole,both] [--shifts -5..6] [--calibration-steps 50]
        [--work-dir DIR] > candidates.json

One after another in this one process, each candidate trains on the bundled corpus (its encoded,
cached form, as `musicgen train` reads it; an augmented corpus is transposed once, before any
clock starts) for the same budget of training seconds:

1. calibration: `--calibration-steps` steps of the candidate, its seconds per step read from
   metrics.jsonl between steps 10 and the last record before the end (tracing, the validation at
   the end and the checkpoint left out);
2. the budget: `--budget` seconds, or by default the seconds `TrainConfig().steps` steps of the
   `before` recipe take at its calibrated pace;
3. training: budget / seconds-per-step steps (rounded), the schedule's warm-up `min(100, steps
   // 5)`, everything else the candidate's settings, so each run's cosine schedule ends with its
   budget. The load average is read at the start and end of each calibration and training: the
   machine is shared, and the figures are as noisy as it says.

Then each run is judged as `bench/form.py` judges one: `--num` tunes generated with the default
sampling settings, their form against the training tunes (the corpus's own, never the transposed
copies) with every distance, the share passing every headline check, and held-out bits/char on
the same validation tunes for every candidate (each tune read whole from its start). The output
ends with the before/after table of issue 13's targets ("table", and as Markdown in
"table_markdown").

One JSON object goes to stdout, progress to stderr. Run directories go to `--work-dir` (kept) or
a temporary folder (deleted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import form as form_bench  # noqa: E402  (bench/form.py)
from provenance import load_average, print_json  # noqa: E402

DEFAULT_SHIFTS = "-5..6"  # every tune in all 12 keys, as near its own as it goes
FIFTHS = (-5, 5)  # a fourth down and up: D major becomes A major and G major
WHOLE_TUNE_WINDOW = 512  # holds 97% of the bundled corpus's tunes whole
CANDIDATES = (
    "before", "augment", "whole", "both", "fifths", "default", "transformer512",
    "transformer-whole", "transformer-both", "root", "root32", "root-stream", "no-clock",
)  # fmt: skip
DEFAULT_CANDIDATES = ("before", "augment", "whole", "both")
TODAY_BITS_PER_CHAR = 1.662  # issue 13: the recipe before it, 1,500 steps
TARGETS = {
    "tonic_ending_points": 0.10,
    "sections_per_tune_tv": 0.15,
    "bars_per_section_tv": 0.15,
    "length_relative": 0.15,
    "valid_share": 0.97,
}


def log(message: str) -> None:
    print(f"[candidates] {message}", file=sys.stderr, flush=True)


def candidate_config(name: str, shifts: tuple[int, ...]):
    """(RunConfig, one-line description) of candidate `name`."""
    from musicgen.config import (
        STREAM_WINDOWS,
        DataConfig,
        ModelConfig,
        RunConfig,
        TrainConfig,
        stream_recipe,
    )

    before = stream_recipe()  # 64 x 128 windows from anywhere: 8,192 characters a step
    # The candidates measured before the bar clock existed keep their model: the LSTM without it.
    plain = ModelConfig(bar_clock=0)
    whole = DataConfig(
        seq_length=WHOLE_TUNE_WINDOW, whole_tunes=True, transpose=(), common_root=False
    )
    # 16 x 512 windows: the same 8,192 characters a step, before padding is cut.
    wide = dataclasses.replace(TrainConfig(), batch_size=16)
    if name == "before":
        return before, "the recipe before issue 13: LSTM 2 x 384, 64 x 128 windows from anywhere"
    if name == "augment":
        data = dataclasses.replace(before.data, transpose=shifts)
        return dataclasses.replace(before, data=data), f"before + every tune transposed by {shifts}"
    if name == "whole":
        return (
            RunConfig(data=whole, model=plain, train=wide),
            "default LSTM, 16 windows of up to 512 from tune starts, padded, length-bucketed",
        )
    if name == "both":
        data = dataclasses.replace(whole, transpose=shifts)
        return RunConfig(data=data, model=plain, train=wide), "whole-tune windows + transposition"
    if name == "fifths":
        # Only the shifts that turn a D tune into a G or an A tune: the same shape, another home.
        data = dataclasses.replace(whole, transpose=FIFTHS)
        return RunConfig(
            data=data, model=plain, train=wide
        ), f"whole-tune windows + transposition by {FIFTHS}"
    if name == "root":
        data = dataclasses.replace(whole, common_root=True)
        return (
            RunConfig(data=data, model=plain, train=wide),
            "whole-tune windows, every tune moved to root C (`keyroot`)",
        )
    if name == "root32":
        # 32 whole tunes a step: about 1.1x the time of 16 for twice the characters on this CPU.
        data = dataclasses.replace(whole, common_root=True)
        train = dataclasses.replace(TrainConfig(), batch_size=32)
        return RunConfig(data=data, model=plain, train=train), "root, 32 whole-tune windows a step"
    if name == "root-stream":
        data = dataclasses.replace(before.data, common_root=True)
        return dataclasses.replace(before, data=data), "before + every tune moved to root C"
    if name == "default":
        return RunConfig(), "today's default recipe (`musicgen train`), whatever it is"
    if name == "no-clock":
        return (
            RunConfig(model=plain),
            "today's default recipe without the bar clock (`musicgen train --bar-clock 0`)",
        )
    if name in ("transformer-whole", "transformer-both"):
        # The Transformer can attend to the K: line directly when the window holds the tune.
        model = dataclasses.replace(ModelConfig.defaults("transformer"), context=WHOLE_TUNE_WINDOW)
        plain = name == "transformer-whole"
        data = whole if plain else dataclasses.replace(whole, transpose=shifts)
        what = "whole-tune windows" + ("" if plain else " + transposition")
        return (
            RunConfig(data=data, model=model, train=wide),
            f"default Transformer at context 512, {what}",
        )
    if name == "transformer512":
        model = dataclasses.replace(ModelConfig.defaults("transformer"), context=512)
        data = DataConfig(seq_length=512, **STREAM_WINDOWS)
        return (
            RunConfig(data=data, model=model, train=wide),
            "default Transformer at context 512, 16 x 512 windows from anywhere",
        )
    raise SystemExit(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")


def encoded_corpus(config, cache: dict):
    """The bundled corpus encoded (and augmented) as `musicgen train` reads it, once per setting."""
    from musicgen.data.encoded import load_encoded_corpus

    key = (config.data.validation_fraction, config.data.transpose, config.data.common_root)
    if key not in cache:
        started = time.perf_counter()
        cache[key] = load_encoded_corpus(
            None, fraction=key[0], transpose=key[1], common_root=key[2],
            log=lambda message: log(message),
        )  # fmt: skip
        corpus = cache[key]
        log(
            f"corpus {key[1] or 'untransposed'}{', root C' if key[2] else ''}: "
            f"{corpus.tune_count('train')} training tunes, "
            f"{time.perf_counter() - started:.0f} s{' (cached)' if corpus.from_cache else ''}"
        )
    return cache[key]


def train_for(config, corpus, run_dir: Path, steps: int, *, measure: bool = False) -> dict:
    """Trains `config` for `steps` steps into `run_dir`; its figures and the load around it."""
    from musicgen.training.train import read_metrics, train

    train_config = dataclasses.replace(
        config.train,
        steps=steps,
        warmup_steps=min(config.train.warmup_steps, steps // 5),
        eval_every=steps if measure else min(config.train.eval_every, steps),
        checkpoint_every=steps if measure else config.train.checkpoint_every,
    )
    config = dataclasses.replace(config, train=train_config)
    before = load_average()
    result = train(config, corpus, run_dir, progress=False, log=lambda m: log(f"  {m}"))
    record = {
        "steps": result.step,
        "seconds": result.elapsed,
        "chars_per_sec": result.chars_per_sec,
        "logged_val_bits_per_char": result.val_bits_per_char,
        "load_average_start": before,
        "load_average_end": load_average(),
    }
    if measure:
        logged = [(e["step"], e["elapsed"]) for e in read_metrics(run_dir / "metrics.jsonl")]
        logged = [(step, elapsed) for step, elapsed in logged if 10 <= step < steps]
        if len(logged) < 2:
            raise SystemExit("--calibration-steps must be at least 30")
        (first, began), (last, ended) = logged[0], logged[-1]
        record["seconds_per_step"] = (ended - began) / (last - first)
    return record


def judge(run_dir: Path, num: int, bundled_forms: list) -> dict:
    from musicgen.config import SampleConfig

    result = form_bench.judge_run(run_dir, SampleConfig(num=num), bundled_forms, score=True)
    result["headline"] = form_bench.headline(result)
    return result


def targets_met(result: dict, bits_to_beat: float) -> dict:
    """Issue 13's targets for one candidate: each figure, its limit and whether it is met."""
    figures = result["form_vs_training_tunes"]["figures"]
    head = result["headline"]
    tonic = figures["tonic_ending_share"]
    length = figures["mean_length_bars"]
    checks = {
        "tonic_ending_within_10_points": (
            None if tonic["difference"] is None else abs(tonic["difference"]),
            TARGETS["tonic_ending_points"],
        ),
        "sections_per_tune_tv_at_most_0.15": (
            head["sections_per_tune_tv"],
            TARGETS["sections_per_tune_tv"],
        ),
        "bars_per_section_tv_at_most_0.15": (
            head["bars_per_section_tv"],
            TARGETS["bars_per_section_tv"],
        ),
        "length_within_15_percent": (
            None if length["relative_difference"] is None else abs(length["relative_difference"]),
            TARGETS["length_relative"],
        ),
        # A model at root C is held to the bits of the tunes in their own keys (`keyroot`).
        "bits_per_char_no_worse": (
            head.get("validation_bits_per_char_as_written") or head["validation_bits_per_char"],
            bits_to_beat,
        ),
    }
    out = {name: {"value": v, "limit": limit, "met": v is not None and v <= limit}
           for name, (v, limit) in checks.items()}  # fmt: skip
    valid = head["valid_share"]
    out["valid_share_at_least_0.97"] = {
        "value": valid, "limit": TARGETS["valid_share"], "met": valid >= TARGETS["valid_share"]
    }  # fmt: skip
    out["all_met"] = all(entry["met"] for entry in out.values())
    return out


TABLE_ROWS = (
    ("last note is the key's tonic", "tonic_ending_share"),
    ("tunes with exactly 2 sections", "two_section_share"),
    ("tunes with 3 or more sections", "three_plus_section_share"),
    ("sections per tune, total variation", "sections_per_tune_tv"),
    ("bars per section, total variation", "bars_per_section_tv"),
    ("mean tune length, bars", "mean_length_bars"),
    ("held-out bits/char, each tune whole", "validation_bits_per_char"),
    ("the same, tunes in their own keys (root C models)", "validation_bits_per_char_as_written"),
    ("passing every headline check", "valid_share"),
    ("training steps in the budget", "steps"),
)


def table(candidates: list[dict]) -> tuple[list[dict], str]:
    """Issue 13's before/after table: a row per figure, a column per candidate and the real
    tunes (the training tunes' own figures)."""
    rows = []
    first = candidates[0]["evaluation"]["form_vs_training_tunes"]
    for label, key in TABLE_ROWS:
        row = {"figure": label}
        if key in first["figures"]:
            row["real tunes"] = first["figures"][key]["corpus"]
        for candidate in candidates:
            evaluation = candidate["evaluation"]
            if key == "steps":
                value = candidate["training"]["steps"]
            elif key in evaluation["headline"]:
                value = evaluation["headline"][key]
                if isinstance(value, dict):  # a figure compared: {"generated", "corpus", ...}
                    value = value["generated"]
            else:
                value = evaluation["form_vs_training_tunes"]["figures"][key]["generated"]
            row[candidate["name"]] = value
        rows.append(row)
    columns = ["figure", *(c["name"] for c in candidates), "real tunes"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(column)) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=None, help="training seconds each")
    parser.add_argument("--num", type=int, default=400, help="tunes generated per candidate")
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES))
    parser.add_argument("--shifts", default=DEFAULT_SHIFTS, help="semitones, e.g. -5..6")
    parser.add_argument("--calibration-steps", type=int, default=50)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args(argv)

    from musicgen.config import TrainConfig
    from musicgen.data.augment import parse_shifts

    started = time.perf_counter()
    shifts = parse_shifts(args.shifts)
    names = [name.strip() for name in args.candidates.split(",") if name.strip()]
    configs = {name: candidate_config(name, shifts) for name in names}
    log("reading the bundled corpus's forms")
    bundled_forms, bundled = form_bench.corpus_form()
    with tempfile.TemporaryDirectory(prefix="form-candidates-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpora: dict = {}
        paces = {}
        for name in names:
            corpus = encoded_corpus(configs[name][0], corpora)
            log(f"{name}: calibrating, {args.calibration_steps} steps")
            paces[name] = train_for(
                configs[name][0], corpus, work / f"{name}-calibration", args.calibration_steps,
                measure=True,
            )  # fmt: skip
            log(f"{name}: {paces[name]['seconds_per_step']:.3f} s a step")
        budget, budget_from = args.budget, "--budget"
        if budget is None:
            pace = paces.get("before") or train_for(
                configs.get("before", candidate_config("before", shifts))[0],
                encoded_corpus(candidate_config("before", shifts)[0], corpora),
                work / "before-calibration",
                args.calibration_steps,
                measure=True,
            )
            budget = TrainConfig().steps * pace["seconds_per_step"]
            budget_from = f"{TrainConfig().steps} steps of the before recipe at its calibrated pace"
        log(f"budget: {budget:.0f} s of training each ({budget_from})")
        candidates = []
        for name in names:
            config, description = configs[name]
            steps = max(10, round(budget / paces[name]["seconds_per_step"]))
            log(f"{name}: training {steps} steps ({description})")
            run_dir = work / name
            training = train_for(config, encoded_corpus(config, corpora), run_dir, steps)
            log(f"{name}: judging {args.num} tunes")
            evaluation = judge(run_dir, args.num, bundled_forms)
            candidates.append({
                "name": name,
                "description": description,
                "config": json.loads(config.to_json()),
                "calibration": paces[name],
                "training": training,
                "evaluation": evaluation,
            })  # fmt: skip
        before = next((c for c in candidates if c["name"] == "before"), None)
        bits_to_beat = (
            before["evaluation"]["headline"]["validation_bits_per_char"]
            if before
            else TODAY_BITS_PER_CHAR
        )
        for candidate in candidates:
            candidate["targets"] = targets_met(candidate["evaluation"], bits_to_beat)
        rows, markdown = table(candidates)
    output = {
        "settings": {
            "budget_seconds": budget,
            "budget_from": budget_from,
            "num": args.num,
            "candidates": names,
            "shifts": list(shifts),
            "calibration_steps": args.calibration_steps,
            "bits_per_char_to_beat": bits_to_beat,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "bundled_corpus": bundled,
        "candidates": candidates,
        "table": rows,
        "table_markdown": markdown,
        "seconds": time.perf_counter() - started,
    }
    print_json(output)
    print(markdown, file=sys.stderr)
    return output


if __name__ == "__main__":
    main()
