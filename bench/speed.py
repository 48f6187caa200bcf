"""Training and generation speed, and peak memory, of musicgen against the reference recipe.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/speed.py [--quick] [--rounds N] > speed.json

Prints one JSON object on stdout; progress goes to stderr. Each measured part runs in its own
subprocess (this script with `--part NAME`), one after another in the same run, so each part has its
own resident-memory peak and none warms another's caches. The compared parts run twice, in the order
A B B A, so load that drifts during the run weighs on both sides alike. Compare the ratios; absolute
figures on a shared 2-core machine wander from run to run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from parts import Settings, log, run_part
from provenance import print_json

import musicgen  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS for every part's process)

# Reference and ours side by side; each pair is run A B, then B A in the next round.
COMPARED = (
    "train_reference",
    "train_ours_same_size",
    "generate_reference",
    "generate_ours_same_size",
)
# Ours at the default size, once, for information.
INFORMATION = ("train_ours_default", "generate_ours_default")
TARGETS = {"train_same_size": 1.0, "generate_1": 10.0, "generate_32": 100.0}


def load_benchmark_tunes(corpus_chars: int) -> tuple[list, str]:
    """The first tunes of our default corpus, about `corpus_chars` characters joined by blank lines.

    Returns:
        (tunes, text): the tunes our side trains on and the text the reference trains on.
    """
    from musicgen.data.corpus import load_corpus

    tunes, _ = load_corpus()
    chosen, total = [], 0
    for tune in tunes:
        if total >= corpus_chars:
            break
        chosen.append(tune)
        total += len(tune.text) + 1
    # Each tune's text ends with one newline, so this leaves a blank line between tunes.
    return chosen, "\n".join(tune.text for tune in chosen)


def schedule(rounds: int) -> list[str]:
    """The parts in running order: A B, B A, A B, ... then the information-only parts."""
    order: list[str] = []
    for round_index in range(rounds):
        order += COMPARED if round_index % 2 == 0 else COMPARED[::-1]
    return order + list(INFORMATION)


def run_in_subprocess(part: str, work_dir: Path, quick: bool) -> dict:
    """Runs one part in a fresh interpreter; returns the JSON object it printed."""
    command = [sys.executable, str(Path(__file__).resolve()), "--part", part]
    command += ["--work-dir", str(work_dir)] + (["--quick"] if quick else [])
    log(f"{part} ...")
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: part {part} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"{part}: {_headline(result)} ({time.perf_counter() - started:.0f} s)")
    return result


def _headline(result: dict) -> str:
    if "chars_per_sec" in result:
        return f"{result['chars_per_sec']:,.0f} chars/s"
    return ", ".join(
        f"{result[k]['tunes']} tunes {result[k]['chars_per_sec']:,.0f} chars/s"
        for k in ("batch_1", "batch_n")
    )


def combine_rates(runs: list[dict]) -> dict:
    """Runs of one timed figure as one: all characters over all seconds; each run's rate kept."""
    combined = dict(runs[0])
    chars = sum(r["chars"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    combined.update(chars=chars, seconds=seconds, chars_per_sec=chars / seconds)
    if len(runs) > 1:
        combined["runs_chars_per_sec"] = [round(r["chars_per_sec"], 1) for r in runs]
        if "calls_chars_per_sec" in runs[0]:
            combined["calls_chars_per_sec"] = [c for r in runs for c in r["calls_chars_per_sec"]]
    return combined


def combine_runs(runs: list[dict]) -> dict:
    """Every round of one part as one record; memory is the highest peak of any round."""
    combined = combine_rates(runs) if "chars" in runs[0] else dict(runs[0])
    for key in ("batch_1", "batch_n"):
        if key in runs[0]:
            combined[key] = combine_rates([r[key] for r in runs])
    for key in ("first_call_seconds", "compile_seconds"):  # each round is a cold process
        if key in runs[0]:
            combined[key] = sum(r[key] for r in runs) / len(runs)
    combined["memory"] = {name: max(r["memory"][name] for r in runs) for name in runs[0]["memory"]}
    combined["rounds"] = len(runs)
    return combined


def ratios(ours_train: dict, ref_train: dict, ours_gen: dict, ref_gen: dict) -> dict:
    def ratio(ours: float, reference: float) -> float:
        return round(ours / reference, 3)

    return {
        "train_same_size": ratio(ours_train["chars_per_sec"], ref_train["chars_per_sec"]),
        "generate_1": ratio(ours_gen["batch_1"]["chars_per_sec"], ref_gen["chars_per_sec"]),
        "generate_32": ratio(ours_gen["batch_n"]["chars_per_sec"], ref_gen["chars_per_sec"]),
    }


def summarise(runs: dict[str, list[dict]], settings: Settings) -> dict:
    parts = {name: combine_runs(results) for name, results in runs.items()}
    compared = (
        "train_ours_same_size",
        "train_reference",
        "generate_ours_same_size",
        "generate_reference",
    )
    per_round = [ratios(*(runs[name][i] for name in compared)) for i in range(settings.rounds)]
    return {
        "ratios": ratios(*(parts[name] for name in compared)),
        "ratios_per_round": per_round,
        "targets": TARGETS,
        "train": {
            "reference": parts["train_reference"],
            "ours_same_size": parts["train_ours_same_size"],
            "ours_default": parts["train_ours_default"],
        },
        "generate": {
            "reference": parts["generate_reference"],
            "ours_same_size": parts["generate_ours_same_size"],
            "ours_default": parts["generate_ours_default"],
        },
        "peak_rss_mb": {name: part["memory"]["peak_rss_mb"] for name, part in parts.items()},
    }


def machine_info(device: str, load_before: float) -> dict:
    return {
        "cores": os.cpu_count(),
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),  # musicgen sets "1" unless set
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }


def write_work_dir(work_dir: Path, tunes: list, text: str) -> None:
    """What every part reads (`parts.read_tunes`, `parts.read_reference_text`): the tunes for
    musicgen's side and the reference's one text."""
    tunes_json = json.dumps([dataclasses.asdict(tune) for tune in tunes])
    (work_dir / "tunes.json").write_text(tunes_json, encoding="utf-8")
    (work_dir / "reference.txt").write_text(text, encoding="utf-8")


def run_all(settings: Settings, quick: bool) -> dict:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    tunes, text = load_benchmark_tunes(settings.corpus_chars)
    corpus = {
        "source": (
            "the first tunes of musicgen.data.corpus.load_corpus(), the bundled default corpus"
        ),
        "substitution": "the lab's irish.abc is not available; both sides use these tunes instead, "
        "the reference as one text with the tunes joined by blank lines",
        "tunes": len(tunes),
        "characters": len(text),
        "distinct_characters": len(set(text)),
    }
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as work:
        work_dir = Path(work)
        write_work_dir(work_dir, tunes, text)
        for part in schedule(settings.rounds):
            runs.setdefault(part, []).append(run_in_subprocess(part, work_dir, quick))
    return {
        "benchmark": "musicgen vs the MIT 6.S191 lab 1 reference recipe (bench/reference.py)",
        "quick": quick,
        "machine": machine_info(runs["train_reference"][0]["device"], load_before),
        "settings": dataclasses.asdict(settings),
        "corpus": corpus,
        **summarise(runs, settings),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: few steps and characters"
    )
    parser.add_argument("--part", choices=sorted({*COMPARED, *INFORMATION}), help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--rounds", type=int, default=None, help="runs of each compared part (default 2, quick 1)"
    )
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds is not None:
        settings = dataclasses.replace(settings, rounds=max(1, args.rounds))
    if args.part:
        print(json.dumps(run_part(args.part, args.work_dir, settings)))
    else:
        print_json(run_all(settings, args.quick), indent=2)


if __name__ == "__main__":
    main()
