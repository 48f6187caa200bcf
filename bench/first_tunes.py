"""Seconds from launching `musicgen generate` to the first tunes on disk, with the bundled model.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/first_tunes.py > first_tunes.json
    .venv/bin/python bench/first_tunes.py --bundled-dir DIR --trials 5   # models in DIR
    .venv/bin/python bench/first_tunes.py --quick                        # smoke run, 1 trial

Each trial launches `python -m musicgen generate --num 4 --out OUT` as a fresh process in an empty
folder (no checkpoints/, so musicgen takes its bundled model and says so), exactly as a user's
first command after set-up, TensorFlow's import included. It is timed from the launch to the
moment the last .abc, .mid and .wav file is written (the files' modification times) and to the
process's exit; each trial checks that 4 .abc files are there, and a .mid and .wav for every
valid tune. The issue's target is under 30 s on this project's 2-core CPU.

The bundled model is the package's (`musicgen/bundled_models/`), or those of `--bundled-dir` /
`$MUSICGEN_BUNDLED_DIR`. With `--quick` and no bundled model anywhere, a tiny model is trained
for about 20 seconds and exported into a temporary folder first: the timing then says how fast the
machinery is, not the real model (whose size sets the generation part). Prints one JSON object on
stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import print_json

TARGET_SECONDS = 30.0
TUNES = 4


def log(message: str) -> None:
    print(f"[first_tunes bench] {message}", file=sys.stderr, flush=True)


def bundled_folder(bundled_dir: Path | None) -> tuple[Path, str] | None:
    """(the folder of bundled models, the default model's name), or None when there is none."""
    if bundled_dir is not None:
        os.environ["MUSICGEN_BUNDLED_DIR"] = str(bundled_dir)
    from musicgen.runs.bundled import bundled_root, default_name

    name = default_name()
    return None if name is None else (bundled_root(), name)


def export_tiny_model(scratch: Path) -> Path:
    """Trains a small model on 50 O'Neill tunes for 200 steps (some of its tunes render) and
    exports it into `scratch/models`."""
    from musicgen.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from musicgen.data.corpus import load_corpus, music21_corpus_folder
    from musicgen.data.tune_split import split_corpus
    from musicgen.training.export import export_bundled
    from musicgen.training.train import train

    book = music21_corpus_folder() / "oneills1850/0001-0050.abc"
    config = RunConfig(
        data=DataConfig(paths=(str(book),), seq_length=64, whole_tunes=False),  # every bar seen
        model=ModelConfig(embedding_dim=16, units=96, layers=1),
        train=TrainConfig(steps=200, batch_size=32, learning_rate=3e-2, warmup_steps=5,
                          eval_every=100, eval_batches=2, checkpoint_every=100, valid_sample=0),
    )  # fmt: skip
    tunes = load_corpus([book])[0]
    log("no bundled model: training a tiny one for 200 steps (--quick)")
    train(config, split_corpus(tunes, config.data),
          scratch / "run", progress=False, log=lambda _: None)
    export_bundled(scratch / "run", "tiny", root=scratch / "models", tunes=[tunes[0].text])
    return scratch / "models"


def one_trial(models: Path, scratch: Path, index: int) -> dict:
    """One launch of `musicgen generate --num 4` in a new empty folder."""
    folder = scratch / f"trial-{index}"
    folder.mkdir()
    env = {**os.environ, "MUSICGEN_BUNDLED_DIR": str(models), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "musicgen", "generate", "--num", str(TUNES), "--out", "out"]
    load_before = os.getloadavg()
    launched = time.time()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    exited = time.time() - launched
    if done.returncode != 0:
        raise SystemExit(f"first_tunes: generate failed: {done.stderr.strip()[-500:]}")
    out = folder / "out"
    files = {suffix: sorted(out.glob(f"*.{suffix}")) for suffix in ("abc", "mid", "wav")}
    valid = len(files["mid"])
    if len(files["abc"]) != TUNES or len(files["wav"]) != valid:
        raise SystemExit(f"first_tunes: unexpected files in {out}: {files}")
    written = max(path.stat().st_mtime for paths in files.values() for path in paths)
    note = [line for line in done.stderr.splitlines() if "using the bundled model" in line]
    return {
        "seconds_to_files": round(written - launched, 2),
        "seconds_to_exit": round(exited, 2),
        "tunes": TUNES,
        "valid_tunes": valid,
        "files": {suffix: len(paths) for suffix, paths in files.items()},
        "said": note[0] if note else None,
        "load_average_before": [round(x, 2) for x in load_before],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="launches timed (default 3)")
    parser.add_argument("--bundled-dir", type=Path, default=None, help="a folder of models")
    parser.add_argument("--quick", action="store_true", help="1 trial; a tiny model if none")
    args = parser.parse_args()
    trials = 1 if args.quick else args.trials
    with tempfile.TemporaryDirectory(prefix="musicgen-first-tunes-") as scratch_name:
        scratch = Path(scratch_name)
        found = bundled_folder(args.bundled_dir)
        stand_in = found is None
        if found is None and not args.quick:
            raise SystemExit(
                "first_tunes: no bundled model (none in the package, no --bundled-dir or "
                "MUSICGEN_BUNDLED_DIR); pass --quick to time a tiny exported one"
            )
        if found is None:
            os.environ["MUSICGEN_BUNDLED_DIR"] = str(export_tiny_model(scratch))
            found = bundled_folder(None)
        models, name = found
        load_before = os.getloadavg()
        results = []
        for index in range(trials):
            results.append(one_trial(models, scratch, index))
            log(f"trial {index + 1}/{trials}: {results[-1]['seconds_to_files']} s to the files")
        load_after = os.getloadavg()
    times = [trial["seconds_to_files"] for trial in results]
    report = {
        "command": f"musicgen generate --num {TUNES} --out OUT (fresh process, empty folder)",
        "model": name,
        "bundled_dir": str(models),
        "tiny_stand_in": stand_in,
        "trials": results,
        "median_seconds_to_files": statistics.median(times),
        "best_seconds_to_files": min(times),
        "target_seconds": TARGET_SECONDS,
        "meets_target": statistics.median(times) < TARGET_SECONDS,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
        },  # fmt: skip
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
    }
    print_json(report)


if __name__ == "__main__":
    main()
