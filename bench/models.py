"""LSTM against Transformer on this machine: generation cost per character, precision and XLA
flags, and what each model reaches in the same wall-clock training budget.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/models.py [--quick] [--budget SECONDS] > m.json

Prints one JSON object on stdout; progress goes to stderr. Every part runs in its own subprocess
(this script with `--part NAME`) so each has its own peak resident memory. Three sections:

- `generation`: untrained default-size models (speed does not depend on weights; EOS is masked so
  every tune runs to full length), 1 and 32 tunes of 1,000 and of 2,000 new characters, beside the
  reference recipe's one-eager-call-per-character loop. `seconds_2000_over_1000` should stay near 2:
  the cost of a character does not grow with the length (target <= 2.3). The two models run A B B A
  (each part twice, the faster kept); `transformer_vs_lstm` gives each model's milliseconds per
  decode step (per character of one tune) and the Transformer's step time over the LSTM's.
- `flags`: training characters/s of both default models in float32 (A B B A, the faster kept), with
  `--mixed-precision` (bfloat16 on a CPU) and with `--xla`, each timed after warm-up steps, with the
  loss reached; `training_transformer_over_lstm` is the float32 characters/s ratio.
- `comparison`: each default model trained on the bundled corpus for the same wall-clock budget
  (steps set from a short calibration run so the learning-rate schedule completes), then scored
  on the same held-out tunes, each whole from its start, and asked for 32 tunes at the default
  sampling settings, checked by `musicgen evaluate`'s checks (valid = every headline check).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parts import Settings, generate_reference, log, measure_training, peak_rss_mb, rate
from provenance import print_json

KINDS = ("lstm", "transformer")
FLAG_VARIANTS = ("float32", "mixed_precision", "xla")
GEN_LENGTHS = (1000, 2000)
SEED_TEXT = "X"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each section measures."""

    budget_seconds: float = 600.0  # training time per model in the comparison
    calibration_steps: int = 12  # steps of the calibration run (the first 2 untimed)
    gen_lengths: tuple[int, ...] = GEN_LENGTHS
    gen_batch: int = 32
    gen_repeats: int = 2
    flag_settings: Settings = Settings(train_warmup_steps=5, train_steps=10)
    validation_tunes: int = 0  # 0: all held-out tunes
    sample_tunes: int = 32
    sample_length: int = 1200  # the default --max-length
    fixed_steps: int = 0  # train this many steps instead of calibrating to the budget

    @classmethod
    def quick(cls) -> Budget:
        return cls(
            budget_seconds=20.0,
            calibration_steps=4,
            gen_lengths=(20, 40),
            gen_batch=4,
            gen_repeats=1,
            flag_settings=Settings(train_warmup_steps=1, train_steps=2),
            validation_tunes=8,
            sample_tunes=4,
            sample_length=100,
            fixed_steps=3,
        )


def default_model_config(kind: str, vocab_size: int):
    from musicgen.config import ModelConfig

    return dataclasses.replace(ModelConfig.defaults(kind), vocab_size=vocab_size)


def default_run_config(kind: str, **train_updates):
    """The run `musicgen train --model KIND` would make, with some training fields replaced."""
    from musicgen.config import RunConfig, stream_recipe

    # The windows of the README's figures: 64 x 128 (the Transformer's: 64 x its context) from
    # anywhere in the stream, so the two families and the reference see the same batches.
    base = stream_recipe(kind)
    model = default_model_config(kind, 0)
    data = base.data
    train = dataclasses.replace(base.train, **train_updates)
    return RunConfig(data=data, model=model, train=train)


def bundled_tunes() -> list:
    from musicgen.data.corpus import load_corpus

    return load_corpus()[0]


# ---------------------------------------------------------------------------------------------
# Generation: cost per character at two lengths


def generate_scaling(kind: str, budget: Budget, work_dir: Path) -> dict:
    from musicgen.data.vocab import EOS, Vocabulary
    from musicgen.generation.generate import Generator
    from musicgen.models import build_model

    vocab = Vocabulary.from_texts(tune.text for tune in bundled_tunes())
    model = build_model(default_model_config(kind, len(vocab)))
    generator = Generator(model, vocab)
    generator.sampler = generator.sampler.also_forbidding(EOS)
    result = {"params": model.count_params(), "weights": "untrained, EOS masked"}
    for num in (1, budget.gen_batch):
        # Traces the priming pass and the loop (first call) and compiles the Transformer's XLA
        # step programs for this number of tunes: reported, not timed with the rest.
        first = _timed(generator, num, budget.gen_lengths[0], 0)
        result[f"first_call_seconds_batch_{num}"] = round(first["seconds"], 2)
        runs = {
            length: [_timed(generator, num, length, seed) for seed in range(budget.gen_repeats)]
            for length in budget.gen_lengths
        }
        short, long = (sum(r["seconds"] for r in runs[n]) for n in budget.gen_lengths)
        result[f"batch_{num}"] = {
            **{f"chars_{n}": _combined(runs[n]) for n in budget.gen_lengths},
            "seconds_2000_over_1000": round(long / short, 3),
        }
    result["tracing_counts"] = generator.tracing_counts
    return result


def _timed(generator, num: int, length: int, random_seed: int) -> dict:
    from musicgen.config import SampleConfig

    config = SampleConfig(num=num, max_length=length + len(SEED_TEXT), random_seed=random_seed)
    started = time.perf_counter()
    texts = generator.generate(SEED_TEXT, config)
    seconds = time.perf_counter() - started
    return rate(sum(len(t) - len(SEED_TEXT) for t in texts), seconds, tunes=num)


def _combined(runs: list[dict]) -> dict:
    return rate(sum(r["chars"] for r in runs), sum(r["seconds"] for r in runs), calls=len(runs))


def reference_generation(budget: Budget, work_dir: Path) -> dict:
    settings = dataclasses.replace(Settings(), gen_chars=budget.gen_lengths[0])
    return generate_reference(work_dir, settings)


# ---------------------------------------------------------------------------------------------
# Flags: float32, mixed precision, XLA


def train_with_flags(kind: str, variant: str, budget: Budget, work_dir: Path) -> dict:
    settings = budget.flag_settings
    steps = settings.train_warmup_steps + settings.train_steps
    config = default_run_config(
        kind,
        steps=steps,
        eval_every=steps,
        checkpoint_every=steps,
        mixed_precision=variant == "mixed_precision",
        xla=variant == "xla",
    )
    return measure_training(work_dir, settings, config, f"{kind}-{variant}")


# ---------------------------------------------------------------------------------------------
# Comparison: the same wall-clock budget


def train_for_budget(kind: str, budget: Budget, work_dir: Path) -> dict:
    """Calibrates steps per second, trains for the budget, then scores and samples the model."""
    from musicgen.data.split import split_tunes
    from musicgen.data.tune_split import split_corpus
    from musicgen.runs.checkpoint import load_for_inference
    from musicgen.training.train import train

    tunes = bundled_tunes()
    steps = budget.fixed_steps or _steps_for_budget(kind, tunes, budget, work_dir)
    # Validation windows only at the end: the whole-tune score below is the figure compared.
    config = default_run_config(kind, steps=steps, eval_every=steps, checkpoint_every=steps)
    run_dir = work_dir / f"budget-{kind}"
    trained = train(config, split_corpus(tunes, config.data),
                    run_dir, progress=False, log=lambda m: log(f"{kind}: {m}"))
    model, vocab, _ = load_for_inference(run_dir)
    validation = split_tunes(tunes, config.data.validation_fraction)[1]
    if budget.validation_tunes:
        validation = validation[: budget.validation_tunes]
    return {
        "params": model.count_params(),
        "steps": steps,
        "batch_size": config.train.batch_size,
        "seq_length": config.data.seq_length,
        "train_seconds": round(trained.elapsed, 1),
        "train_chars_per_sec": round(trained.chars_per_sec or 0.0, 1),
        "val_bits_per_char_windows": trained.val_bits_per_char,
        "val_bits_per_char_whole_tunes": whole_tune_bits_per_char(model, vocab, validation),
        "validation_tunes": len(validation),
        "sampling": sample_and_check(model, vocab, budget.sample_tunes, budget.sample_length),
    }


def _steps_for_budget(kind: str, tunes, budget: Budget, work_dir: Path) -> int:
    """Steps that fill the budget at the rate a short calibration run of the model reaches."""
    from musicgen.data.tune_split import split_corpus
    from musicgen.training.train import train

    config = default_run_config(
        kind, steps=budget.calibration_steps, eval_every=10**6, checkpoint_every=10**6
    )
    calibrated = train(config, split_corpus(tunes, config.data),
                       work_dir / f"calibrate-{kind}", progress=False,
                       log=lambda message: None)  # fmt: skip
    chars_per_step = config.train.batch_size * config.data.seq_length
    steps = max(2, int(budget.budget_seconds * calibrated.chars_per_sec / chars_per_step))
    log(f"{kind}: {calibrated.chars_per_sec:,.0f} chars/s in calibration -> {steps} steps")
    return steps


def whole_tune_bits_per_char(model, vocab, tunes) -> float:
    """Bits per character of BOS + tune + EOS, each tune scored whole from its start, as
    `musicgen evaluate` scores them."""
    from musicgen.evaluation.evaluate import score_tunes

    return round(score_tunes(model, vocab, [t.text for t in tunes]).bits_per_char, 4)


def sample_and_check(model, vocab, num: int, max_length: int) -> dict:
    """Default-settings tunes, timed, and `musicgen evaluate`'s checks of them."""
    from musicgen.config import SampleConfig
    from musicgen.evaluation.evaluate import check_tunes
    from musicgen.generation.generate import Generator

    generator = Generator(model, vocab)
    generator.generate("", SampleConfig(num=1, max_length=20))  # traces; not timed
    started = time.perf_counter()
    texts = generator.generate("", SampleConfig(num=num, max_length=max_length, random_seed=0))
    seconds = time.perf_counter() - started
    summary = check_tunes(texts).summary()
    return {
        **rate(sum(len(t) for t in texts), seconds, tunes=num),
        "valid": summary["valid"],
        "valid_share": round(summary["valid_share"], 3),
        "checks": {name: round(share, 3) for name, share in summary["checks"].items()},
    }


# ---------------------------------------------------------------------------------------------
# Running the parts


SECTIONS = ("generation", "flags", "comparison")


REPEAT = "#2"  # marks a part's second run in the A B B A order


def parts(sections=SECTIONS) -> list[str]:
    names = []
    if "generation" in sections:
        generate = [f"generate_{kind}" for kind in KINDS]
        names += ["generate_reference", *generate, *(g + REPEAT for g in reversed(generate))]
    if "flags" in sections:
        float32 = [f"flags_{kind}_float32" for kind in KINDS]
        names += [*float32, *(f + REPEAT for f in reversed(float32))]
        names += [f"flags_{kind}_{v}" for kind in KINDS for v in FLAG_VARIANTS if v != "float32"]
    if "comparison" in sections:
        names += [f"budget_{kind}" for kind in KINDS]
    return names


def run_part(name: str, budget: Budget, work_dir: Path) -> dict:
    from musicgen.tfsetup import describe_devices, import_tensorflow

    import_tensorflow()
    section, _, rest = name.removesuffix(REPEAT).partition("_")
    if name == "generate_reference":
        result = reference_generation(budget, work_dir)
    elif section == "generate":
        result = generate_scaling(rest, budget, work_dir)
    elif section == "flags":
        kind, _, variant = rest.partition("_")
        result = train_with_flags(kind, variant, budget, work_dir)
    else:
        result = train_for_budget(rest, budget, work_dir)
    result["device"] = describe_devices()
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def write_benchmark_tunes(work_dir: Path) -> None:
    """The ~200k characters speed.py uses, for the flag runs and the reference's vocabulary."""
    from speed import load_benchmark_tunes

    tunes, text = load_benchmark_tunes(Settings().corpus_chars)
    tunes_json = json.dumps([dataclasses.asdict(tune) for tune in tunes])
    (work_dir / "tunes.json").write_text(tunes_json, encoding="utf-8")
    (work_dir / "reference.txt").write_text(text, encoding="utf-8")


def run_in_subprocess(name: str, work_dir: Path, args: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name]
    command += ["--work-dir", str(work_dir), *args]
    log(f"{name} ...")
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: part {name} failed with exit code {done.returncode}")
    log(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return json.loads(done.stdout.strip().splitlines()[-1])


def keep_faster(results: dict[str, dict]) -> dict[str, dict]:
    """One result per part: of a part run twice (A B B A), the run that took less time."""
    merged = {}
    for name, result in results.items():
        base = name.removesuffix(REPEAT)
        if base in merged and _seconds(merged[base]) <= _seconds(result):
            continue
        merged[base] = {**result, "runs": 1 + (base in merged)}
    return merged


def _seconds(result: dict) -> float:
    """A training run's timed seconds, or a generation run's over all its calls."""
    if "seconds" in result:
        return result["seconds"]
    batches = [r for key, r in result.items() if key.startswith("batch_")]
    return sum(r[key]["seconds"] for r in batches for key in r if key.startswith("chars_"))


def summarise(results: dict[str, dict], budget: Budget) -> dict:
    results = keep_faster(results)
    summary = {}
    if "generate_reference" in results:
        summary.update(_generation_summary(results, budget))
    if "flags_lstm_float32" in results:
        summary.update(_flags_summary(results))
    if "budget_lstm" in results:
        summary["comparison"] = {kind: results[f"budget_{kind}"] for kind in KINDS}
    return summary


def _generation_summary(results: dict[str, dict], budget: Budget) -> dict:
    reference = results["generate_reference"]["chars_per_sec"]
    short = budget.gen_lengths[0]
    generation = {kind: results[f"generate_{kind}"] for kind in KINDS}
    over_reference = {
        kind: {
            f"batch_{n}": round(gen[f"batch_{n}"][f"chars_{short}"]["chars_per_sec"] / reference, 2)
            for n in (1, budget.gen_batch)
        }
        for kind, gen in generation.items()
    }
    return {
        "generation": {"reference": results["generate_reference"], **generation},
        "generation_over_reference": over_reference,
        "transformer_vs_lstm": _step_times(generation, budget),
    }


def _step_times(generation: dict[str, dict], budget: Budget) -> dict:
    """Milliseconds per decode step (one character of every tune) and the Transformer's over the
    LSTM's (target <= 1.5), at 1 and at `gen_batch` tunes of the shorter length."""
    short = budget.gen_lengths[0]
    compared = {}
    for n in (1, budget.gen_batch):
        runs = {kind: gen[f"batch_{n}"][f"chars_{short}"] for kind, gen in generation.items()}
        step_ms = {kind: 1000 * r["seconds"] / (r["chars"] / n) for kind, r in runs.items()}
        compared[f"batch_{n}"] = {
            **{f"{kind}_ms_per_step": round(ms, 3) for kind, ms in step_ms.items()},
            "transformer_over_lstm": round(step_ms["transformer"] / step_ms["lstm"], 2),
        }
    compared["params"] = {kind: gen["params"] for kind, gen in generation.items()}
    return compared


def _flags_summary(results: dict[str, dict]) -> dict:
    flags = {kind: {v: results[f"flags_{kind}_{v}"] for v in FLAG_VARIANTS} for kind in KINDS}
    flag_ratios = {
        kind: {
            v: round(runs[v]["chars_per_sec"] / runs["float32"]["chars_per_sec"], 3)
            for v in FLAG_VARIANTS[1:]
        }
        for kind, runs in flags.items()
    }
    float32 = {kind: runs["float32"]["chars_per_sec"] for kind, runs in flags.items()}
    return {
        "flags": flags,
        "flags_over_float32": flag_ratios,
        "training_transformer_over_lstm": round(float32["transformer"] / float32["lstm"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny budgets")
    parser.add_argument("--budget", type=float, default=None, help="training seconds per model")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, any of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budget = Budget.quick() if args.quick else Budget()
    if args.budget is not None:
        budget = dataclasses.replace(budget, budget_seconds=args.budget)
    if args.part:
        print(json.dumps(run_part(args.part, budget, args.work_dir)))
        return
    passed = (["--quick"] if args.quick else []) + ["--budget", str(budget.budget_seconds)]
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="musicgen-models-") as work:
        work_dir = Path(work)
        write_benchmark_tunes(work_dir)
        names = parts(args.sections.split(","))
        results = {name: run_in_subprocess(name, work_dir, passed) for name in names}
    report = {
        "benchmark": "LSTM vs Transformer (musicgen defaults) and the reference's generation loop",
        "quick": args.quick,
        "budget": dataclasses.asdict(budget),
        "sections": args.sections.split(","),
        **summarise(results, budget),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print_json(report, indent=2)


if __name__ == "__main__":
    main()
