"""Time to quality: musicgen's default recipe against the reference recipe for the same wall-clock.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/time_to_quality.py [--quick] [--steps N]
        [--budget SECONDS] [--num N] [--keep DIR | --ours DIR] > ttq.json

Both recipes train on the same tunes (the bundled corpus minus musicgen's validation split), back
to back in this one process: first ours, with its default settings (`RunConfig()`) for its default
number of steps; then the reference (`reference.py`, the MIT lab's recipe) for as many seconds as
ours took (or `--budget` seconds). `--ours DIR --budget SECONDS` skips our training and judges
a run trained with the default settings and checkpoints kept along the way (`--keep` of an
earlier run), its seconds read from its metrics.jsonl; the reference trains first, so that run
may still be training meanwhile (on a shared machine both then run under the same load). Both
clocks include setting up, tracing and, for ours, its own periodic validation and checkpoints;
the reference's clock stops while its weights are copied for the curve. Then both are judged the
same way:

- validation bits per character on the same validation tunes, each tune read whole from its
  start (ours: BOS + tune + EOS; the reference, which has no special tokens: the blank line's
  "\\n" before the tune + tune + "\\n", the blank line that ends it), at about ten points of each
  run: the curves;
- the budget each needs to reach the reference's final bits/char (and ours), read from the curves
  with linear interpolation between points;
- `--num` generated tunes, ours with the default sampling settings, the reference its own way (from
  "X", raw logits, a tune cut at the first blank line), through
  `musicgen.evaluation.evaluate.evaluate_texts`: validity on every check, statistics distances and
  novelty.

One JSON object goes to stdout, progress to stderr. The machine is shared: `machine.load_average`
before and after says how noisy the run was.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from provenance import print_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

CURVE_POINTS = 10
SCORE_BATCH = 16


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: int | None = None  # ours; None: TrainConfig's default
    budget: float | None = None  # the reference's seconds; None: as long as ours took
    num: int = 100
    max_length: int | None = None  # None: SampleConfig's default
    corpus_tunes: int | None = None  # None: the whole bundled corpus
    quick: bool = False
    ours: Path | None = None  # a run of ours trained earlier, instead of training one now


def log(message: str) -> None:
    print(f"[ttq] {message}", file=sys.stderr, flush=True)


def load_tunes(settings: Settings):
    """(all tunes, training tunes, validation tunes) as musicgen's training splits them."""
    from musicgen.config import DataConfig
    from musicgen.data.corpus import load_corpus
    from musicgen.data.split import split_tunes

    tunes, _ = load_corpus()
    if settings.corpus_tunes:
        tunes = tunes[: settings.corpus_tunes]
    train, validation = split_tunes(tunes, DataConfig().validation_fraction)
    return tunes, train, validation


# ------------------------------------------------------------------------------------------------
# Ours


def train_ours(tunes, settings: Settings, run_dir: Path) -> dict:
    """The default recipe; checkpoints at CURVE_POINTS steps, all kept, for the curve."""
    from musicgen.config import RunConfig
    from musicgen.data.tune_split import split_corpus
    from musicgen.training.train import train

    defaults = RunConfig()
    steps = settings.steps or defaults.train.steps
    every = max(1, steps // CURVE_POINTS)
    train_config = dataclasses.replace(
        defaults.train, steps=steps, checkpoint_every=every, keep_checkpoints=steps
    )
    config = dataclasses.replace(defaults, train=train_config)
    log(f"ours: {steps} steps of the default recipe")
    result = train(config, split_corpus(tunes, config.data),
                   run_dir, progress=False, log=lambda m: log(f"ours: {m}"))
    return {
        "steps": result.step,
        "seconds": result.elapsed,
        "chars_per_sec": result.chars_per_sec,
        "logged_val_bits_per_char": result.val_bits_per_char,
    }


def trained_ours(run_dir: Path) -> dict:
    """What `train_ours` reports, read back from a run trained earlier (waiting for it to reach
    its last step, should it still be training)."""
    from musicgen.config import RunConfig
    from musicgen.training.train import read_metrics

    steps = RunConfig.load(run_dir / "config.json").train.steps
    while (entries := read_metrics(run_dir / "metrics.jsonl"))[-1:] and (
        entries[-1]["step"] < steps or "val_bits_per_char" not in entries[-1]
    ):
        time.sleep(10)
    rates = [e["chars_per_sec"] for e in entries if "chars_per_sec" in e]
    validations = [e["val_bits_per_char"] for e in entries if "val_bits_per_char" in e]
    log(f"ours: trained earlier in {run_dir}, {entries[-1]['step']} steps")
    return {
        "steps": entries[-1]["step"],
        "seconds": entries[-1]["elapsed"],
        "chars_per_sec": float(np.mean(rates)) if rates else None,
        "logged_val_bits_per_char": validations[-1] if validations else None,
        "trained_earlier": str(run_dir),
    }


def ours_curve(run_dir: Path, validation_texts) -> tuple[list[dict], object, object]:
    """Whole-tune validation bits/char at each kept checkpoint, with its elapsed seconds."""
    from musicgen.evaluation.evaluate import score_tunes
    from musicgen.runs.runfiles import load_run
    from musicgen.runs.weights import build_model_for, restore_weights
    from musicgen.tfsetup import import_tensorflow
    from musicgen.training.train import read_metrics

    tf = import_tensorflow()
    config, vocab = load_run(run_dir)
    model = build_model_for(config, policy="float32")
    written, scored, homes = list(validation_texts), list(validation_texts), None
    if config.data.common_root:
        # The model reads tunes at root C: scored on them there, plus the bits of drawing each
        # tune's root (`keyroot.home_bits`), so the figure is of the tunes as written, as the
        # reference's is.
        from musicgen.music.keyroot import Homes, movable_pairs, run_homes

        written, scored = movable_pairs(validation_texts)
        homes = run_homes(run_dir) or Homes()
    logged = [(e["step"], e["elapsed"]) for e in read_metrics(run_dir / "metrics.jsonl")]
    state = tf.train.get_checkpoint_state(str(run_dir / "ckpt"))
    curve = []
    for path in state.all_model_checkpoint_paths:
        step = int(path.rsplit("-", 1)[1])
        # Metrics are logged every 10 steps and at the last: the first record at or after `step`.
        seconds = min(elapsed for logged_step, elapsed in logged if logged_step >= step)
        restore_weights(model, path, run_dir)
        likelihood = score_tunes(model, vocab, scored)
        bits = likelihood.bits_per_char
        if homes is not None:
            bits = likelihood.with_home_keys(written, homes).as_written_bits_per_char
        curve.append({"step": step, "seconds": seconds, "bits_per_char": bits})
        log(f"ours: step {step} at {seconds:.0f} s: {bits:.3f}")
    return curve, model, vocab


# ------------------------------------------------------------------------------------------------
# The reference


def train_reference(text: str, budget: float, seed: int = 0) -> dict:
    """The reference recipe's loop (reference.py's model, step and batches) for `budget` seconds;
    weights copied at CURVE_POINTS evenly spaced times, off the clock."""
    import keras
    from reference import (
        BATCH_SIZE,
        LEARNING_RATE,
        SEQ_LENGTH,
        build_reference_model,
        get_batch,
        make_train_step,
        vectorize,
    )

    started = time.perf_counter()
    paused = 0.0
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    vocab, ids = vectorize(text)
    model = build_reference_model(len(vocab), BATCH_SIZE)
    train_step = make_train_step(model, keras.optimizers.Adam(LEARNING_RATE))
    snapshots, steps, next_snapshot = [], 0, budget / CURVE_POINTS
    while True:
        clock = time.perf_counter() - started - paused
        if clock >= next_snapshot or clock >= budget:
            copy_started = time.perf_counter()
            snapshots.append({"step": steps, "seconds": clock, "weights": model.get_weights()})
            paused += time.perf_counter() - copy_started
            next_snapshot += budget / CURVE_POINTS
            if clock >= budget:
                break
        inputs, targets = get_batch(ids, SEQ_LENGTH, BATCH_SIZE, rng)
        float(train_step(inputs, targets).numpy())
        steps += 1
    log(f"reference: {steps} steps in {budget:.0f} s")
    return {
        "vocab": vocab,
        "snapshots": snapshots,
        "steps": steps,
        "chars_per_sec": steps * BATCH_SIZE * SEQ_LENGTH / snapshots[-1]["seconds"],
    }


def reference_bits_per_char(model, vocab: list[str], texts) -> tuple[float, int]:
    """Bits/char of "\\n" + tune + "\\n" predicting tune + "\\n", from a zero state; and how many
    characters were outside the reference's vocabulary (left out of the score)."""
    import tensorflow as tf

    char_to_id = {c: i for i, c in enumerate(vocab)}
    rows, unknown = [], 0
    for text in texts:
        unknown += sum(c not in char_to_id for c in text)
        rows.append([char_to_id.get(c, -1) for c in "\n" + text + "\n"])
    total = count = 0.0
    rows.sort(key=len)
    for start in range(0, len(rows), SCORE_BATCH):
        batch = rows[start : start + SCORE_BATCH]
        width = max(map(len, batch))
        ids = np.full((SCORE_BATCH, width), -1, np.int64)  # the model's batch is fixed
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
        for layer in model.layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()
        logits = model(tf.constant(np.maximum(ids[:, :-1], 0)))  # (batch, time, vocab)
        log_probs = tf.nn.log_softmax(logits).numpy()
        targets = ids[:, 1:]
        scored = (targets >= 0) & (ids[:, :-1] >= 0)
        picked = np.take_along_axis(log_probs, np.maximum(targets, 0)[..., None], -1)[..., 0]
        total -= float(picked[scored].sum())
        count += float(scored.sum())
    return float(total / count / np.log(2)), unknown


def reference_curve(trained: dict, validation_texts) -> tuple[list[dict], int]:
    from reference import build_reference_model

    model = build_reference_model(len(trained["vocab"]), SCORE_BATCH)
    curve, unknown = [], 0
    for snapshot in trained["snapshots"]:
        model.set_weights(snapshot["weights"])
        bits, unknown = reference_bits_per_char(model, trained["vocab"], validation_texts)
        curve.append(
            {"step": snapshot["step"], "seconds": snapshot["seconds"], "bits_per_char": bits}
        )
        log(f"reference: step {snapshot['step']} at {snapshot['seconds']:.0f} s: {bits:.3f}")
    return curve, unknown


def reference_tunes(trained: dict, num: int, length: int, seed: int = 0) -> list[str]:
    """`num` tunes the reference's way: from "X", `tf.random.categorical` on raw logits, one
    model call per character (all tunes as one batch, which changes nothing but the time); each
    tune cut at its first blank line, as the lab cuts songs out of the generated text."""
    import tensorflow as tf
    from reference import START_STRING, build_reference_model

    vocab = trained["vocab"]
    model = build_reference_model(len(vocab), num)
    model.set_weights(trained["snapshots"][-1]["weights"])
    tf.random.set_seed(seed)
    char_to_id = {c: i for i, c in enumerate(vocab)}
    inputs = tf.constant([[char_to_id[c] for c in START_STRING]] * num)
    texts = [START_STRING] * num
    for _ in range(length - len(START_STRING)):
        logits = model(inputs)[:, -1, :]  # (num, vocab)
        next_ids = tf.random.categorical(logits, num_samples=1)  # (num, 1)
        texts = [t + vocab[i] for t, i in zip(texts, next_ids[:, 0].numpy())]
        inputs = next_ids
        if all("\n\n" in t for t in texts):
            break
    return [t.split("\n\n")[0] + "\n" for t in texts]


# ------------------------------------------------------------------------------------------------
# Judging


def bits_at(curve: list[dict], seconds: float) -> float | None:
    """A curve's bits/char at `seconds`, interpolating between its points; None past its end."""
    for before, after in zip(curve, curve[1:]):
        if before["seconds"] <= seconds <= after["seconds"]:
            fraction = (seconds - before["seconds"]) / (after["seconds"] - before["seconds"])
            return before["bits_per_char"] + fraction * (
                after["bits_per_char"] - before["bits_per_char"]
            )
    return curve[-1]["bits_per_char"] if curve and seconds == curve[-1]["seconds"] else None


def seconds_to_reach(curve: list[dict], target: float) -> float | None:
    """When a curve first reaches `target` bits/char, interpolating between its points; None if
    it never does."""
    previous = None
    for point in curve:
        if point["bits_per_char"] <= target:
            if previous is None or previous["bits_per_char"] == point["bits_per_char"]:
                return point["seconds"]
            fraction = (previous["bits_per_char"] - target) / (
                previous["bits_per_char"] - point["bits_per_char"]
            )
            return previous["seconds"] + fraction * (point["seconds"] - previous["seconds"])
        previous = point
    return None


def judged(evaluation: dict) -> dict:
    """The parts of `evaluate_texts`' result the comparison shows (per-tune texts left out)."""
    distributions = evaluation["statistics"]["distributions"]
    return {
        "validity": evaluation["validity"]["generated"],
        "failures": evaluation["validity"]["generated_failures"],
        "novelty": evaluation["novelty"]["generated"],
        "distances_total_variation": {n: d["total_variation"] for n, d in distributions.items()},
        "scalars": evaluation["statistics"]["scalars"]["generated"],
    }


def run(settings: Settings, work_dir: Path) -> dict:
    from musicgen.config import SampleConfig
    from musicgen.evaluation.evaluate import Inputs, evaluate_texts, generate_tunes
    from musicgen.music.keyroot import move_home, run_homes

    tunes, train, validation = load_tunes(settings)
    validation_texts = [t.text for t in validation]
    load_before = os.getloadavg()
    reference_text = "\n".join(t.text for t in train)
    if settings.ours:
        # The reference first, so that our run may still be training meanwhile.
        log(f"reference: training for {settings.budget:.0f} s")
        reference = train_reference(reference_text, settings.budget)
        our_dir, ours = settings.ours, trained_ours(settings.ours)
    else:
        our_dir = work_dir / "ours"
        ours = train_ours(tunes, settings, our_dir)
        budget = settings.budget or ours["seconds"]
        log(f"reference: training for {budget:.0f} s")
        reference = train_reference(reference_text, budget)
    load_after = os.getloadavg()
    our_curve, model, vocab = ours_curve(our_dir, validation_texts)
    ref_curve, ref_unknown = reference_curve(reference, validation_texts)

    sample = SampleConfig(
        num=settings.num, max_length=settings.max_length or SampleConfig.max_length
    )
    our_texts, _ = generate_tunes(model, vocab, sample)
    homes = run_homes(our_dir)
    if homes is not None:  # a root-C model's tunes, moved home as `musicgen generate` moves them
        our_texts = move_home(our_texts, homes, None, sample.random_seed)
    ref_texts = reference_tunes(reference, settings.num, sample.max_length)
    inputs = Inputs((), "", tuple(t.text for t in train), tuple(validation_texts))
    judged_ours = judged(evaluate_texts(our_texts, inputs))
    judged_reference = judged(evaluate_texts(ref_texts, inputs))
    return report(settings, tunes, train, validation, ours, reference, our_curve, ref_curve,
                  ref_unknown, judged_ours, judged_reference, sample,
                  (load_before, load_after))  # fmt: skip


def report(settings, tunes, train, validation, ours, reference, our_curve, ref_curve,
           ref_unknown, judged_ours, judged_reference, sample, loads) -> dict:
    from importlib.metadata import version

    from musicgen.config import RunConfig

    ref_final, our_final = ref_curve[-1]["bits_per_char"], our_curve[-1]["bits_per_char"]
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
        "corpus": {
            "tunes": len(tunes),
            "train_tunes": len(train),
            "validation_tunes": len(validation),
            "validation_chars_outside_reference_vocab": ref_unknown,
        },
        "budget_seconds": ref_curve[-1]["seconds"],
        "ours": {
            "recipe": dataclasses.asdict(
                RunConfig.load(Path(ours["trained_earlier"]) / "config.json")
                if "trained_earlier" in ours
                else RunConfig()
            ),
            "training": ours,
            "curve": our_curve,
            "final_bits_per_char": our_final,
            "generated": judged_ours,
        },
        "reference": {
            "recipe": "bench/reference.py: Embedding 256, stateful LSTM 1024, Adam 5e-3, 8 x 100",
            "training": {
                "steps": reference["steps"],
                "seconds": ref_curve[-1]["seconds"],
                "chars_per_sec": reference["chars_per_sec"],
            },
            "curve": ref_curve,
            "final_bits_per_char": ref_final,
            "generated": judged_reference,
        },
        # Equal wall-clock when the two runs' lengths differ (`--ours` with another `--budget`).
        "bits_per_char_at_reference_budget": {
            "ours": bits_at(our_curve, ref_curve[-1]["seconds"]),
            "reference": ref_final,
        },
        "seconds_to_reach_reference_final": {
            "ours": seconds_to_reach(our_curve, ref_final),
            "reference": seconds_to_reach(ref_curve, ref_final),
        },
        "seconds_to_reach_our_final": {
            "ours": seconds_to_reach(our_curve, our_final),
            "reference": seconds_to_reach(ref_curve, our_final),
        },
        "sampling": {
            "ours": dataclasses.asdict(sample),
            "reference": "from 'X', raw logits (temperature 1), cut at the first blank "
            f"line, at most {sample.max_length} characters",
        },
        "targets": {
            "lower_bits_per_char_than_reference": our_final < ref_final,
            "ours_valid_share_at_least_95": (judged_ours["validity"]["valid_share"] or 0) >= 0.95,
        },
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "tensorflow": version("tensorflow"),
            "load_average_before": loads[0],
            "load_average_after_training": loads[1],
        },
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="our training steps")
    parser.add_argument("--budget", type=float, default=None, help="the reference's seconds")
    parser.add_argument("--num", type=int, default=100, help="tunes generated by each side")
    parser.add_argument("--keep", type=Path, default=None, help="keep our run directory here")
    parser.add_argument(
        "--ours", type=Path, default=None, help="judge this run of ours (see --keep) instead"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run in about a minute")
    args = parser.parse_args(argv)
    if args.ours and not args.budget:
        parser.error("--ours needs --budget: the reference's seconds (at least our run's)")
    if args.quick:
        settings = Settings(
            steps=args.steps or 3,
            budget=args.budget or 8.0,
            num=4,
            max_length=200,
            corpus_tunes=120,
            quick=True,
        )
    else:
        settings = Settings(steps=args.steps, budget=args.budget, num=args.num, ours=args.ours)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="musicgen-ttq-") as folder:
        work_dir = args.keep or Path(folder)
        result = run(settings, work_dir)
    result["seconds"] = time.perf_counter() - started
    print_json(result)


if __name__ == "__main__":
    main()
