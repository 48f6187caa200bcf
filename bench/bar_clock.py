"""What the bar clock costs: the default LSTM with and without it, side by side in one process.

    .venv/bin/python bench/bar_clock.py [--repeats 3] [--length 1000] [--steps 30]

Generation: characters a second of the compiled sampler for 1 and 32 tunes (untrained weights,
EOS masked so every tune runs the whole length), each setting timed in the order on, off, off,
on so that drift in the machine's load falls on both. Training: characters a second of the default
recipe (32 whole tunes at root C) on the bundled corpus, the first (tracing) step left out, runs in
the same order. Prints JSON with the
ratios (with / without); the load average is recorded, since these machines are shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import load_average, print_json  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SEED_TEXT = "X:1\nT:Bench\nM:6/8\nL:1/8\nK:C\n"
ORDER = (True, False, False, True)  # clock on, off, off, on


def generation(repeats: int, length: int) -> dict:
    from musicgen.config import ModelConfig, SampleConfig
    from musicgen.data.corpus import load_corpus
    from musicgen.data.vocab import EOS, Vocabulary
    from musicgen.generation.generate import Generator
    from musicgen.models import build_model
    from musicgen.models.barclock import clock_ids

    vocab = Vocabulary.from_texts(tune.text for tune in load_corpus()[0])
    generators = {}
    for clock in (True, False):
        config = ModelConfig(vocab_size=len(vocab), bar_clock=32 if clock else 0,
                             bar_ids=clock_ids(vocab) if clock else ())  # fmt: skip
        generator = Generator(build_model(config), vocab)
        generator.sampler = generator.sampler.also_forbidding(EOS)
        generators[clock] = generator
    result = {}
    for num in (1, 32):
        seconds = {True: 0.0, False: 0.0}
        chars = {True: 0, False: 0}
        for clock in (True, False):  # traced and warmed, not timed
            generators[clock].generate(SEED_TEXT, SampleConfig(num=num, max_length=100))
        for _ in range(repeats):
            for clock in ORDER:
                sample = SampleConfig(num=num, max_length=length + len(SEED_TEXT))
                started = time.perf_counter()
                texts = generators[clock].generate(SEED_TEXT, sample)
                seconds[clock] += time.perf_counter() - started
                chars[clock] += sum(len(t) - len(SEED_TEXT) for t in texts)
        rates = {clock: chars[clock] / seconds[clock] for clock in seconds}
        result[f"tunes_{num}"] = {
            "chars_per_second_with_clock": round(rates[True], 1),
            "chars_per_second_without": round(rates[False], 1),
            "speed_with_over_without": round(rates[True] / rates[False], 3),
        }
    return result


def training(steps: int) -> dict:
    from musicgen.config import ModelConfig, RunConfig, TrainConfig
    from musicgen.data.corpus import load_corpus
    from musicgen.data.tune_split import split_corpus
    from musicgen.training.train import train

    tunes = load_corpus()[0]
    rates = {True: [], False: []}
    with tempfile.TemporaryDirectory() as work:
        for i, clock in enumerate(ORDER):
            model = ModelConfig(bar_clock=32 if clock else 0)
            config = RunConfig(model=model, train=dataclasses.replace(
                TrainConfig(), steps=steps, eval_every=steps, checkpoint_every=steps,
                valid_sample=0, warmup_steps=0,
            ))  # fmt: skip
            result = train(config, split_corpus(tunes, config.data),
                           Path(work) / f"run-{i}", progress=False,
                           log=lambda _: None)  # fmt: skip
            rates[clock].append(result.chars_per_sec)  # the first (tracing) step left out
    mean = {clock: sum(r) / len(r) for clock, r in rates.items()}
    return {
        "steps_per_run": steps,
        "chars_per_second_with_clock": round(mean[True], 1),
        "chars_per_second_without": round(mean[False], 1),
        "speed_with_over_without": round(mean[True] / mean[False], 3),
        "runs": {("with" if k else "without"): [round(r, 1) for r in v] for k, v in rates.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="A B B A rounds of generation")
    parser.add_argument("--length", type=int, default=1000, help="characters a tune")
    parser.add_argument("--steps", type=int, default=30, help="training steps a run (0: skip)")
    args = parser.parse_args(argv)
    started = load_average()
    result = {
        "bench": "bar_clock",
        "order": "with, without, without, with",
        "generation": generation(args.repeats, args.length),
        "training": training(args.steps) if args.steps else None,
        "load_average_start": started,
        "load_average_end": load_average(),
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main()
