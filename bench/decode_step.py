"""Where the Transformer's decode step goes, beside the LSTM's, in one run: the sampler's compiled
loop driven straight from an empty state (no seed, no titles), untrained default-size weights,
EOS masked so every row runs all its steps.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/decode_step.py [--quick] > decode_step.json

Prints one JSON object on stdout. For each model and number of tunes (1 and 32), milliseconds per
step over `short` steps (the Transformer's window never slides: fewer steps than its context) and
over `long` steps (it slides every 128 after the first 256), the best of `repeats` calls after an
untimed first call (tracing, XLA compiling). `transformer_context_64` is the default Transformer
with a context of 64 over 60 steps: the step with a quarter of the cache to read. From them:

- `slide_ms`: long minus short, the window's re-reads spread over the steps;
- `cache_read_ms`: what reading 192 more cache columns costs (context 256 against 64, no slide);
- `transformer_over_lstm`: the step ratio over `long` steps (issue 17's target: at most 1.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from parts import log, peak_rss_mb
from provenance import print_json


def step_ms(kind: str, num: int, steps: int, repeats: int, **model_updates) -> float:
    """Best milliseconds per decode step of `num` rows over `steps` steps."""
    from musicgen.config import ModelConfig
    from musicgen.data.vocab import BOS, EOS
    from musicgen.generation.generate import Generator
    from musicgen.models import build_model
    from musicgen.tfsetup import import_tensorflow

    tf = import_tensorflow()
    config = dataclasses.replace(ModelConfig.defaults(kind), vocab_size=96, **model_updates)
    model = build_model(config)
    sampler = Generator(model, vocab=None).sampler.also_forbidding(EOS)
    state, first = model.initial_state(num), tf.fill([num], BOS)
    sampler(state, first, steps)  # traces (and for the Transformer compiles) the loop
    best = float("inf")
    for seed in range(repeats):
        started = time.perf_counter()
        sampler(state, first, steps, random_seed=seed + 1).tokens.numpy()
        best = min(best, time.perf_counter() - started)
    return round(1000 * best / steps, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for a smoke test")
    args = parser.parse_args()
    short, long, repeats = (20, 40, 1) if args.quick else (250, 1000, 3)
    result = {"steps": {"short": short, "long": long}, "repeats": repeats}
    for num in (1, 32):
        row = {}
        for kind in ("lstm", "transformer"):
            for name, steps in (("short", short), ("long", long)):
                log(f"{kind}, {num} tunes, {steps} steps ...")
                row[f"{kind}_{name}_ms"] = step_ms(kind, num, steps, repeats)
        row["transformer_context_64_ms"] = step_ms("transformer", num, 60, repeats, context=64)
        short_ms = row["transformer_short_ms"]
        row["slide_ms"] = round(row["transformer_long_ms"] - short_ms, 3)
        row["cache_read_ms"] = round(short_ms - row["transformer_context_64_ms"], 3)
        row["transformer_over_lstm"] = round(row["transformer_long_ms"] / row["lstm_long_ms"], 2)
        result[f"batch_{num}"] = row
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print_json(result)


if __name__ == "__main__":
    main()
