"""Where the Transformer's decode step goes, beside the LSTM's, in one run: the sampler's compiled
loop driven straight from an empty state (no seed, no titles), untrained default-size weights,
EOS masked so every row runs all its steps.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/decode_step.py [--quick] > decode_step.json

Prints one JSON object on stdout. For 1 and 32 tunes, the best of `repeats` calls after an
untimed first call (tracing, XLA compiling), in milliseconds per step:

- `lstm_ms`, `transformer_ms`: over `steps` steps (the Transformer's window slides every 128
  steps after the first 256), and `transformer_over_lstm` (issue 17's target: at most 1.5);
- `cache_256_ms`, `cache_64_ms`: the Transformer over 60 steps (no slide) with its default
  context of 256 and with 64, a quarter of the cache to read; their difference is what reading
  192 more cache columns costs a step; `lstm_60_ms`, the LSTM over the same 60 steps (a short
  call's fixed costs weigh more per step);
- `slide_ms`: one slide of the window (re-reading 128 characters of every tune through the whole
  model, compiled with XLA as in the loop) divided by the 128 steps it serves.
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


def slide_ms(num: int, repeats: int) -> float:
    """One window slide of the default Transformer at `num` tunes, per step it serves."""
    from musicgen.config import ModelConfig
    from musicgen.models import build_model
    from musicgen.tfsetup import import_tensorflow

    tf = import_tensorflow()
    model = build_model(dataclasses.replace(ModelConfig.defaults("transformer"), vocab_size=96))
    ids = tf.random.stateless_uniform([num, model.context], [1, 2], 4, 96, tf.int32)
    _, full = model(ids, return_state=True)
    slide = tf.function(model._slide, jit_compile=True)
    tf.nest.flatten(slide(full))[0].numpy()  # compiles
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tf.nest.flatten(slide(full))[0].numpy()
        best = min(best, time.perf_counter() - started)
    return round(1000 * best / (model.context - model.slide_keep), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for a smoke test")
    args = parser.parse_args()
    steps, repeats = (40, 1) if args.quick else (1000, 3)
    result = {"steps": steps, "repeats": repeats}
    for num in (1, 32):
        log(f"{num} tunes ...")
        row = {f"{kind}_ms": step_ms(kind, num, steps, repeats) for kind in ("lstm", "transformer")}
        row["transformer_over_lstm"] = round(row["transformer_ms"] / row["lstm_ms"], 2)
        row["lstm_60_ms"] = step_ms("lstm", num, 60, repeats)  # the same calls' overhead
        for context in (256, 64):
            row[f"cache_{context}_ms"] = step_ms("transformer", num, 60, repeats, context=context)
        row["slide_ms"] = slide_ms(num, repeats)
        result[f"batch_{num}"] = row
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print_json(result)


if __name__ == "__main__":
    main()
