"""Fine-tuning the bundled model against training from scratch, on a tunebook it never saw
(issue 14).

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/finetune.py [--budgets 120,360,1080]
        [--tunes 700] [--num 100] [--contenders reference,scratch,finetuned] [--work-dir DIR]
        > finetune.json
    .venv/bin/python bench/finetune.py --quick   # smoke run: 20 s budgets, 8 tunes judged (a
                                                 # tiny model stands in for a missing bundled one)

The user's tunebook: the first `--tunes` tunes of music21's essenFolksong collection (German folk
songs from the Essen collection: another style, and not among the bundled corpus's collections,
so the bundled model never saw them), read as `musicgen train --data` reads them and split by
musicgen's rule into training and held-out tunes. For each budget of training seconds, each
contender trains on the training tunes from its start, in this one process, one after another:

- `reference`: the MIT lab's recipe (`reference.py`) from scratch, for the budget;
- `scratch`: musicgen's default recipe (`RunConfig()`) from scratch;
- `finetuned`: musicgen's fine-tuning from the bundled model (`train --init bundled`: the parent's
  model and windows, the fine-tuning learning rate).

musicgen's contenders train for budget / seconds-per-step steps, their pace calibrated first with
`--calibration-steps` steps each (as `bench/form_candidates.py` does), so each run's schedule
ends with its budget. Each run is then judged the same way: held-out bits/char of the held-out
tunes, each read whole from its start and as written (a model that reads tunes at root C adds
the bits of each tune's root, `keyroot.home_bits`; the reference is scored as
`bench/time_to_quality.py` scores it), and the share of `--num` generated tunes passing every
headline check (musicgen's moved home, as `musicgen generate` writes them). The target: fine-tuned
at 6 minutes beats from scratch at 18 minutes, with at least 95% valid tunes.

One JSON object goes to stdout, progress to stderr. The machine may be shared: the load average
is read around every run.
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

from form_candidates import train_for  # noqa: E402  (the same calibrated, budgeted training)
from provenance import load_average, print_json  # noqa: E402

COLLECTION = "essenFolksong"
TARGET_VALID = 0.95
HELD_OUT_FRACTION = 0.1  # about 70 of 700 tunes
INHERITED = ("seq_length", "whole_tunes", "length_buckets", "common_root")  # as `train --init`


def log(message: str) -> None:
    print(f"[finetune bench] {message}", file=sys.stderr, flush=True)


def tunebook(count: int, folder: Path) -> Path:
    """The first `count` essenFolksong tunes (in file order), written as one .abc file."""
    from musicgen.data.corpus import load_corpus, music21_corpus_folder, tunebook_text

    source = music21_corpus_folder() / COLLECTION
    tunes, report = load_corpus([source])
    log(f"{COLLECTION}: {report.summary()}; keeping the first {count}")
    path = folder / f"{COLLECTION}-{count}.abc"
    path.write_text(tunebook_text(tunes[:count]), encoding="utf-8")
    return path


def contender_config(name: str, book: Path):
    """(RunConfig, parent label or None) of a musicgen contender."""
    from musicgen.config import DataConfig, InitConfig, RunConfig
    from musicgen.training.finetune import find_parent, finetune_defaults

    paths = (str(book),)
    if name == "scratch":
        config = RunConfig()
        data = dataclasses.replace(config.data, paths=paths, validation_fraction=HELD_OUT_FRACTION)
        return dataclasses.replace(config, data=data), None
    parent = find_parent("bundled")
    windows = {field: getattr(parent.config.data, field) for field in INHERITED}
    data = DataConfig(paths=paths, validation_fraction=HELD_OUT_FRACTION, **windows)
    config = RunConfig(data=data, model=parent.config.model, init=InitConfig(parent.label))
    rate = finetune_defaults(parent, config.train.batch_size, data.seq_length)["learning_rate"]
    train = dataclasses.replace(config.train, learning_rate=rate)
    return dataclasses.replace(config, train=train), parent.label


def judge_ours(run_dir: Path, held_out: list[str], train_texts: list[str], num: int) -> dict:
    from musicgen.config import SampleConfig
    from musicgen.evaluation.evaluate import check_tunes, score_tunes
    from musicgen.generation.generate import Generator, generate_at_home
    from musicgen.music.keyroot import Homes, movable_pairs, run_homes
    from musicgen.runs.checkpoint import load_for_inference

    model, vocab, config = load_for_inference(run_dir, warn=lambda m: log(m), checkpoint="best")
    if config.data.common_root:
        written, moved = movable_pairs(held_out)
        likelihood = score_tunes(model, vocab, moved).with_home_keys(
            written, run_homes(run_dir) or Homes()
        )
        bits = likelihood.as_written_bits_per_char
    else:
        bits = score_tunes(model, vocab, held_out).bits_per_char
    sample = SampleConfig(num=num)
    texts = generate_at_home(Generator(model, vocab), "", sample, config, run_dir)
    validity = check_tunes(texts, use_abc2midi=False).summary()
    return {"held_out_bits_per_char": bits, "valid_share": validity["valid_share"]}


def judge_reference(trained: dict, held_out: list[str], num: int) -> dict:
    from time_to_quality import reference_curve, reference_tunes

    from musicgen.config import SampleConfig
    from musicgen.evaluation.evaluate import check_tunes

    last = dict(trained, snapshots=trained["snapshots"][-1:])
    curve, unknown = reference_curve(last, held_out)
    texts = reference_tunes(trained, num, SampleConfig.max_length)
    validity = check_tunes(texts, use_abc2midi=False).summary()
    return {
        "held_out_bits_per_char": curve[-1]["bits_per_char"],
        "characters_outside_its_vocabulary": unknown,
        "valid_share": validity["valid_share"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="120,360,1080", help="training seconds, comma list")
    parser.add_argument("--tunes", type=int, default=700)
    parser.add_argument("--num", type=int, default=100, help="tunes generated per run")
    parser.add_argument("--contenders", default="reference,scratch,finetuned")
    parser.add_argument("--calibration-steps", type=int, default=40)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--quick", action="store_true", help="20 s budgets, 8 tunes judged")
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets, args.num, args.tunes, args.calibration_steps = "20", 8, 120, 30

    from musicgen.data.corpus import load_corpus
    from musicgen.data.split import split_tunes
    from musicgen.data.tune_split import split_corpus
    from musicgen.runs.bundled import default_name

    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "finetuned" in contenders and default_name() is None:
            if not args.quick:
                raise SystemExit("no bundled model to fine-tune in musicgen/bundled_models/")
            from first_tunes import export_tiny_model  # the machinery, not the real model

            os.environ["MUSICGEN_BUNDLED_DIR"] = str(export_tiny_model(work))
        book = tunebook(args.tunes, work)
        tunes, _ = load_corpus([book])
        train_tunes, held_out_tunes = split_tunes(tunes, HELD_OUT_FRACTION)
        held_out = [t.text for t in held_out_tunes]
        train_texts = [t.text for t in train_tunes]
        log(f"{len(train_tunes)} training tunes, {len(held_out)} held out")
        configs = {n: contender_config(n, book) for n in contenders if n != "reference"}
        paces = {}
        for name, (config, _) in configs.items():
            log(f"{name}: calibrating, {args.calibration_steps} steps")
            paces[name] = train_for(
                config, split_corpus(tunes, config.data), work / f"{name}-calibration",
                args.calibration_steps, measure=True,
            )  # fmt: skip
            log(f"{name}: {paces[name]['seconds_per_step']:.3f} s a step")
        results = []
        for budget in budgets:
            for name in contenders:
                log(f"{name}, {budget:.0f} s")
                if name == "reference":
                    from time_to_quality import train_reference

                    before = load_average()
                    trained = train_reference("\n".join(train_texts), budget)
                    training = {
                        "steps": trained["steps"],
                        "seconds": budget,
                        "chars_per_sec": trained["chars_per_sec"],
                        "load_average_start": before,
                        "load_average_end": load_average(),
                    }
                    judged = judge_reference(trained, held_out, args.num)
                else:
                    config, parent = configs[name]
                    steps = max(10, round(budget / paces[name]["seconds_per_step"]))
                    run_dir = work / f"{name}-{budget:.0f}"
                    training = train_for(config, split_corpus(tunes, config.data), run_dir, steps)
                    if parent:
                        training["parent"] = parent
                    judged = judge_ours(run_dir, held_out, train_texts, args.num)
                log(f"{name}, {budget:.0f} s: {json.dumps(judged)}")
                results.append({"contender": name, "budget_seconds": budget,
                                "training": training, **judged})  # fmt: skip
    by = {(r["contender"], r["budget_seconds"]): r for r in results}
    target = None
    if ("finetuned", 360.0) in by and ("scratch", 1080.0) in by:
        fine, scratch = by[("finetuned", 360.0)], by[("scratch", 1080.0)]
        target = {
            "finetuned_6_min_bits": fine["held_out_bits_per_char"],
            "scratch_18_min_bits": scratch["held_out_bits_per_char"],
            "finetuned_6_min_valid_share": fine["valid_share"],
            "met": fine["held_out_bits_per_char"] < scratch["held_out_bits_per_char"]
            and fine["valid_share"] >= TARGET_VALID,
        }
    output = {
        "benchmark": "finetune",
        "tunebook": {
            "collection": COLLECTION,
            "tunes": len(tunes),
            "training": len(train_tunes),
            "held_out": len(held_out),
        },  # fmt: skip
        "budgets_seconds": budgets,
        "calibration": paces,
        "results": results,
        "target_finetuned_6_min_beats_scratch_18_min": target,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_end": load_average(),
        },  # fmt: skip
        "seconds": time.perf_counter() - started,
    }
    print_json(output)
    return output


if __name__ == "__main__":
    main()
