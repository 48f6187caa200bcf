"""What oneDNN's CPU kernels are worth here: training and generation with TF_ENABLE_ONEDNN_OPTS=1
against 0, side by side in one run.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/onednn.py [--rounds 2] [--quick] > onednn.json

TensorFlow 2.21 leaves oneDNN off unless the variable says otherwise on CPUs it does not recognise
(its log says "Using the default setting: false" on this project's AMD EPYC); musicgen sets it to 1
when the user has not (`musicgen/__init__.py`). Each part of `bench/speed.py` (the reference
recipe's training, musicgen's default training and generation) runs in a fresh process with the
variable at 1 and at 0, in the order on, off, off, on per round, on the same tunes. Prints one
JSON object with the ratios on/off; progress goes to stderr.
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

from parts import Settings, log  # noqa: E402
from provenance import load_average, print_json  # noqa: E402
from speed import (  # noqa: E402
    combine_runs,
    load_benchmark_tunes,
    run_in_subprocess,
    write_work_dir,
)

PARTS = ("train_reference", "train_ours_default", "generate_ours_default")
ORDER = ("1", "0", "0", "1")  # oneDNN on, off, off, on


def chars_per_sec(record: dict, key: str | None = None) -> float:
    return (record[key] if key else record)["chars_per_sec"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="on/off/off/on rounds (default 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny settings")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    started, load_start = time.perf_counter(), load_average()
    tunes, text = load_benchmark_tunes(settings.corpus_chars)
    runs: dict[str, dict[str, list[dict]]] = {part: {"1": [], "0": []} for part in PARTS}
    with tempfile.TemporaryDirectory(prefix="musicgen-onednn-") as work:
        work_dir = Path(work)
        write_work_dir(work_dir, tunes, text)
        for _ in range(args.rounds):
            for setting in ORDER:
                os.environ["TF_ENABLE_ONEDNN_OPTS"] = setting  # the part's process inherits it
                for part in PARTS:
                    log(f"TF_ENABLE_ONEDNN_OPTS={setting}")
                    runs[part][setting].append(run_in_subprocess(part, work_dir, args.quick))
    parts = {part: {s: combine_runs(r) for s, r in by.items()} for part, by in runs.items()}
    figures = {}
    for part, keys in (
        ("train_reference", [None]),
        ("train_ours_default", [None]),
        ("generate_ours_default", ["batch_1", "batch_n"]),
    ):
        for key in keys:
            on, off = (chars_per_sec(parts[part][s], key) for s in ("1", "0"))
            name = part if key is None else f"{part}_{key}"
            figures[name] = {
                "chars_per_sec_on": round(on, 1),
                "chars_per_sec_off": round(off, 1),
                "on_over_off": round(on / off, 3),
            }
    print_json({
        "bench": "onednn",
        "order": "on, off, off, on per round",
        "rounds": args.rounds,
        "quick": args.quick,
        "figures": figures,
        "settings": dataclasses.asdict(settings),
        "tunes": len(tunes),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    })  # fmt: skip


if __name__ == "__main__":
    main()
