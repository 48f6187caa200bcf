"""The measured parts of `speed.py`; each runs alone in a fresh interpreter.

Every timed figure is a dict with `chars`, `seconds` and `chars_per_sec`, so `speed.py` can add up
repeated runs the same way for both sides.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

# Our model at the reference's size: Embedding(256) -> LSTM(1024) -> Dense, no dropout.
# The reference's model: no bar clock either.
SAME_SIZE_MODEL = {"embedding_dim": 256, "units": 1024, "layers": 1, "dropout": 0.0, "bar_clock": 0}
SEED_TEXT = "X"  # the reference's start string, used by both sides


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much each part measures."""

    corpus_chars: int = 200_000
    train_warmup_steps: int = 10  # left out of the timing: the first traces the step
    # Timed steps per training run: a multiple of musicgen.training.train.METRICS_EVERY (10).
    train_steps: int = 20
    gen_chars: int = 1000  # characters per tune
    gen_batch: int = 32  # tunes sampled as one batch by ours
    gen_repeats: int = 3  # timed calls of ours per batch size and run
    rounds: int = 2  # runs of each compared part, in the order A B B A

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            corpus_chars=50_000,
            train_warmup_steps=1,
            train_steps=2,
            gen_chars=20,
            gen_repeats=1,
            rounds=1,
        )


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate(chars: int, seconds: float, **extra) -> dict:
    return {"chars_per_sec": chars / seconds, "chars": chars, "seconds": seconds, **extra}


def read_tunes(work_dir: Path) -> list:
    from musicgen.music.abc import Tune

    return [Tune(**fields) for fields in json.loads((work_dir / "tunes.json").read_text("utf-8"))]


def read_reference_text(work_dir: Path) -> str:
    return (work_dir / "reference.txt").read_text("utf-8")


# ---------------------------------------------------------------------------------------------
# Training


def train_reference(work_dir: Path, settings: Settings) -> dict:
    from reference import BATCH_SIZE, SEQ_LENGTH, reference_train

    result = reference_train(
        read_reference_text(work_dir),
        settings.train_steps,
        warmup_steps=settings.train_warmup_steps,
    )
    chars = BATCH_SIZE * SEQ_LENGTH * result["timed_steps"]
    return rate(
        chars,
        chars / result["chars_per_sec"],
        timed_steps=result["timed_steps"],
        median_step_seconds=result["median_step_seconds"],
        first_step_seconds=result["first_step_seconds"],
        batch_size=BATCH_SIZE,
        seq_length=SEQ_LENGTH,
        params=result["params"],
        vocab_size=result["vocab_size"],
        first_loss=result["losses"][0],
        last_loss=result["losses"][-1],
    )


def train_ours(work_dir: Path, settings: Settings, same_size: bool) -> dict:
    """Our real training code, `musicgen.training.train.train`, on a temporary run directory.

    The timed figure leaves out the first `train_warmup_steps` steps, as on the reference side,
    using the per-interval rates train() writes to metrics.jsonl; train()'s own figure, which leaves
    out only the first step, is reported beside it.
    """
    config = _train_config(settings, same_size)
    return measure_training(work_dir, settings, config, "same" if same_size else "default")


def measure_training(work_dir: Path, settings: Settings, config, label: str) -> dict:
    """Trains `config` on the benchmark tunes and times the steps after the warm-up ones.

    `config.train.steps` should be `settings.train_warmup_steps + settings.train_steps`.
    """
    from musicgen.data.tune_split import split_corpus
    from musicgen.training.train import read_metrics, train

    chars_per_step = config.train.batch_size * config.data.seq_length
    run_dir = work_dir / f"run-{label}-{time.monotonic_ns()}"

    def train_log(message: str) -> None:
        log(f"train: {message}")

    result = train(config, split_corpus(read_tunes(work_dir), config.data),
                   run_dir, progress=False, log=train_log)
    # Each rate in metrics.jsonl covers the steps since the record before it.
    entries = read_metrics(run_dir / "metrics.jsonl")
    intervals = [
        (entry["step"] - before["step"], entry["chars_per_sec"])
        for before, entry in zip(entries, entries[1:])
        if "chars_per_sec" in entry and before["step"] >= settings.train_warmup_steps
    ]
    if intervals:
        chars = sum(steps for steps, _ in intervals) * chars_per_step
        seconds = sum(steps * chars_per_step / per_sec for steps, per_sec in intervals)
        source = f"metrics.jsonl intervals after step {settings.train_warmup_steps}"
    else:  # too few steps for a whole interval after the warm-up (--quick)
        chars = (result.steps_run - 1) * chars_per_step
        seconds = chars / result.chars_per_sec
        source = "TrainResult.chars_per_sec (first step left out)"
    return rate(
        chars,
        seconds,
        timed_steps=chars // chars_per_step,
        timing_source=source,
        train_result_chars_per_sec=result.chars_per_sec,
        batch_size=config.train.batch_size,
        seq_length=config.data.seq_length,
        params=result.parameters,
        model={k: v for k, v in dataclasses.asdict(config.model).items() if k != "vocab_size"},
        last_loss=result.train_loss,
        wall_seconds=result.elapsed,
    )


def _train_config(settings: Settings, same_size: bool):
    from musicgen.config import STREAM_WINDOWS, DataConfig, ModelConfig, RunConfig, TrainConfig

    total_steps = settings.train_warmup_steps + settings.train_steps
    # Evaluation and checkpoints only at the last step; train() keeps them out of its timing.
    schedule = {"steps": total_steps, "eval_every": total_steps, "checkpoint_every": total_steps}
    if not same_size:
        defaults = RunConfig()
        return dataclasses.replace(defaults, train=dataclasses.replace(defaults.train, **schedule))
    return RunConfig(
        data=DataConfig(seq_length=100, **STREAM_WINDOWS),  # the reference's windows
        model=ModelConfig(**SAME_SIZE_MODEL),
        train=TrainConfig(batch_size=8, **schedule),
    )


# ---------------------------------------------------------------------------------------------
# Generation


def generate_reference(work_dir: Path, settings: Settings) -> dict:
    from reference import build_reference_model, reference_generate, vectorize

    vocab, _ = vectorize(read_reference_text(work_dir))
    model = build_reference_model(len(vocab), 8)  # untrained: speed does not depend on weights
    text, chars_per_sec = reference_generate(
        model, vocab, settings.gen_chars, start_string=SEED_TEXT
    )
    chars = len(text) - len(SEED_TEXT)
    return rate(
        chars, chars / chars_per_sec, tunes=1, params=model.count_params(), weights="untrained"
    )


def generate_ours(work_dir: Path, settings: Settings, same_size: bool) -> dict:
    """Our Generator at batch 1 and batch `gen_batch`, EOS masked so every tune runs full length.

    Untrained weights emit EOS early; the benchmark gives the Generator a Sampler that also forbids
    EOS (the Sampler's `forbidden_ids` seam). That adds no work: the forbidden-token mask is applied
    at every step anyway.
    """
    from musicgen.data.vocab import EOS
    from musicgen.generation.generate import Generator
    from musicgen.models import build_model

    vocab, model_config = _our_model_config(work_dir, same_size)
    model = build_model(model_config)
    generator = Generator(model, vocab)
    generator.sampler = generator.sampler.also_forbidding(EOS)
    first = _timed_generate(generator, settings, num=1, random_seed=0)  # traces prime and decode
    batch_1 = [
        _timed_generate(generator, settings, 1, seed) for seed in range(settings.gen_repeats)
    ]
    batch_n = [
        _timed_generate(generator, settings, settings.gen_batch, seed)
        for seed in range(settings.gen_repeats)
    ]
    return {
        "batch_1": _total(batch_1),
        "batch_n": _total(batch_n),
        "first_call_seconds": first["seconds"],
        "compile_seconds": max(first["seconds"] - min(r["seconds"] for r in batch_1), 0.0),
        "tracing_counts": generator.tracing_counts,
        "params": model.count_params(),
        "model": {k: v for k, v in dataclasses.asdict(model_config).items() if k != "vocab_size"},
        "weights": "untrained",
        "eos": "masked via the Sampler's forbidden_ids, so every tune runs to max_length",
    }


def _our_model_config(work_dir: Path, same_size: bool):
    """Our vocabulary for the benchmark tunes and the model config sized to it."""
    from musicgen.config import ModelConfig
    from musicgen.data.vocab import Vocabulary

    vocab = Vocabulary.from_texts(tune.text for tune in read_tunes(work_dir))
    base = ModelConfig(**SAME_SIZE_MODEL) if same_size else ModelConfig()
    return vocab, dataclasses.replace(base, vocab_size=len(vocab))


def _timed_generate(generator, settings: Settings, num: int, random_seed: int) -> dict:
    from musicgen.config import SampleConfig

    config = SampleConfig(
        num=num, max_length=settings.gen_chars + len(SEED_TEXT), random_seed=random_seed
    )
    started = time.perf_counter()
    texts = generator.generate(SEED_TEXT, config)
    seconds = time.perf_counter() - started
    lengths = [len(text) - len(SEED_TEXT) for text in texts]
    return rate(sum(lengths), seconds, tunes=num, shortest_tune_chars=min(lengths))


def _total(runs: list[dict]) -> dict:
    """Repeated calls as one figure: all characters over all seconds; each call's rate kept."""
    total = rate(
        sum(r["chars"] for r in runs),
        sum(r["seconds"] for r in runs),
        tunes=runs[0]["tunes"],
        shortest_tune_chars=min(r["shortest_tune_chars"] for r in runs),
    )
    total["calls_chars_per_sec"] = [round(r["chars_per_sec"], 1) for r in runs]
    return total


PARTS = {
    "train_reference": train_reference,
    "train_ours_same_size": lambda work, settings: train_ours(work, settings, same_size=True),
    "train_ours_default": lambda work, settings: train_ours(work, settings, same_size=False),
    "generate_reference": generate_reference,
    "generate_ours_same_size": lambda work, settings: generate_ours(work, settings, same_size=True),
    "generate_ours_default": lambda work, settings: generate_ours(work, settings, same_size=False),
}


def run_part(part: str, work_dir: Path, settings: Settings) -> dict:
    """Measures `part`, with this process's device and memory peaks, after loading TensorFlow."""
    from musicgen.tfsetup import describe_devices, import_tensorflow

    import_tensorflow()
    import keras  # noqa: F401  (loaded before the baseline, so every part counts it the same)

    device = describe_devices()
    after_import = peak_rss_mb()
    result = PARTS[part](work_dir, settings)
    result["device"] = device
    result["memory"] = {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "after_import_rss_mb": round(after_import, 1),
    }
    return result
