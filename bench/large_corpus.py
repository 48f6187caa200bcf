"""Large corpora: ingest time and peak memory as the corpus grows, and the input pipeline's speed
against what the train step consumes; prints JSON.

    .venv/bin/python bench/large_corpus.py            # 10k, 100k and 1M tunes, about 5 minutes
    .venv/bin/python bench/large_corpus.py --quick    # 2k and 5k tunes, about a minute

Untimed set-up: the bundled corpus's kept tunes are tiled into one folder per size, 1,000 tunes a
file; copy k > 0 of a tune has " (k)" added to its title (or a `T:(k)` line), so every tune stays
distinct after duplicates are dropped.

Timed, each in a fresh subprocess so its peak resident memory (Linux `VmHWM`) is its own:

- `cold`: `encoded.load_encoded_corpus([folder])` with an empty cache: streaming the files tune by
  tune, dropping duplicates, splitting, encoding, writing the cache entry (what the first
  `musicgen train --data folder` does before training);
- `warm`: the same call again, which maps the cached entry (what every later run does);
- `in_memory` (sizes up to 100k): `corpus.load_corpus([folder])`, the path that held every tune as
  a Python object, for contrast.

`time_per_tune_ratio` divides each size's cold seconds per tune by the smallest size's: about 1
means time grows linearly. Memory is judged by `peak_rss_mb` per size.

Pipeline, on the largest corpus's cache entry: the training `tf.data` pipeline (`make_dataset`,
called as `train` calls it, batch 64 x 128, the defaults) iterated for `--batches` batches after a
warm-up, in characters a second; then `train()` itself runs `--steps` steps of the default model on
the same corpus and reports its characters a second (its first step, evaluation and checkpoints
left out). `pipeline_over_train_step` above 1 means the pipeline is never the bottleneck.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import print_json

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 5_000)
IN_MEMORY_UP_TO = 100_000
TUNES_PER_FILE = 1000


def log(message: str) -> None:
    print(f"[large_corpus] {message}", file=sys.stderr, flush=True)


def tiled_texts(texts: list[str], count: int):
    """`count` distinct tune texts: `texts`, then copies with " (k)" added to the title."""
    made = 0
    copy = 0
    while made < count:
        for text in texts:
            if made == count:
                return
            yield text if copy == 0 else _retitled(text, copy)
            made += 1
        copy += 1


def _retitled(text: str, copy: int) -> str:
    lines = text.split("\n")
    if len(lines) > 1 and lines[1].startswith("T:"):
        lines[1] += f" ({copy})"
    else:
        lines.insert(1, f"T:({copy})")
    return "\n".join(lines)


def write_tiled_corpus(folder: Path, texts: list[str], count: int, per_file=TUNES_PER_FILE) -> int:
    """Writes `count` tiled tunes as tunebooks of `per_file` tunes into `folder`; returns files."""
    folder.mkdir(parents=True, exist_ok=True)
    book: list[str] = []
    files = 0
    for text in tiled_texts(texts, count):
        book.append(f"X:{len(book) + 1}\n{text.partition(chr(10))[2]}")
        if len(book) == per_file:
            files = _write_book(folder, files, book)
    if book:
        files = _write_book(folder, files, book)
    return files


def _write_book(folder: Path, files: int, book: list[str]) -> int:
    (folder / f"book-{files:05d}.abc").write_text("\n".join(book), encoding="utf-8")
    book.clear()
    return files + 1


# ------------------------------------------------------------------------------------------------
# Subprocesses


def child_ingest(folder: Path, cache: Path) -> dict:
    from musicgen.data.encoded import load_encoded_corpus

    after_import = _peak_rss_mb()
    started = time.perf_counter()
    corpus = load_encoded_corpus([folder], cache_dir=cache)
    seconds = time.perf_counter() - started
    tunes = corpus.tune_count("train") + corpus.tune_count("validation")
    return {
        "from_cache": corpus.from_cache,
        "tunes": tunes,
        "summary": corpus.report.summary(),
        "characters": sum(corpus.characters_in.values()),
        "seconds": round(seconds, 3),
        "tunes_per_sec": round(tunes / seconds, 1),
        "after_import_rss_mb": after_import,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_in_memory(folder: Path) -> dict:
    from musicgen.data.corpus import load_corpus

    after_import = _peak_rss_mb()
    started = time.perf_counter()
    tunes, _ = load_corpus([folder])
    seconds = time.perf_counter() - started
    return {
        "tunes": len(tunes),
        "seconds": round(seconds, 3),
        "tunes_per_sec": round(len(tunes) / seconds, 1),
        "after_import_rss_mb": after_import,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_pipeline(folder: Path, cache: Path, batches: int, steps: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from musicgen.config import stream_recipe
    from musicgen.data.dataset import make_dataset
    from musicgen.data.encoded import load_encoded_corpus
    from musicgen.training.train import train

    config = stream_recipe()  # windows from anywhere: streaming is what this bench measures
    seq_length, batch_size = config.data.seq_length, config.train.batch_size
    corpus = load_encoded_corpus([folder], cache_dir=cache)
    train_ids, _ = corpus.ids_in(corpus.vocabulary())
    dataset = make_dataset(
        train_ids,
        seq_length,
        batch_size,
        shuffle=True,
        seed=1,
        repeat=True,
        tune_starts=corpus.train_starts,
    )
    batches_iter = iter(dataset)
    for _ in range(10):  # warm-up: tracing, the first prefetch
        next(batches_iter)
    started = time.perf_counter()
    for _ in range(batches):
        inputs, targets = next(batches_iter)
    seconds = time.perf_counter() - started
    assert inputs.shape == targets.shape == (batch_size, seq_length)
    pipeline = batches * batch_size * seq_length / seconds
    del batches_iter, dataset

    train_config = dataclasses.replace(
        config.train, steps=steps, eval_every=10**6, checkpoint_every=10**6
    )
    config = dataclasses.replace(config, train=train_config)
    with tempfile.TemporaryDirectory(prefix="large-corpus-run-") as run_dir:
        result = train(config, corpus, Path(run_dir) / "run", progress=False, log=log)
    return {
        "from_cache": corpus.from_cache,
        "train_characters": len(corpus.train),
        "batch": [batch_size, seq_length],
        "pipeline": {
            "batches": batches,
            "seconds": round(seconds, 3),
            "chars_per_sec": round(pipeline),
        },
        "train_step": {
            "steps": steps,
            "chars_per_sec": round(result.chars_per_sec),
            "model": "stream_recipe(): the default LSTM, 64 x 128 windows from anywhere",
        },
        "pipeline_over_train_step": round(pipeline / result.chars_per_sec, 1),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (`ru_maxrss` may
    carry the peak of the process that forked it: a test run's, TensorFlow included)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def run_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


# ------------------------------------------------------------------------------------------------


def measure(sizes, tmp: Path, batches: int, steps: int) -> dict:
    from musicgen.data.corpus import load_corpus

    texts = [tune.text for tune in load_corpus()[0]]
    results = {}
    for size in sizes:
        folder, cache = tmp / f"corpus-{size}", tmp / f"cache-{size}"
        started = time.perf_counter()
        files = write_tiled_corpus(folder, texts, size)
        log(f"{size:,} tunes in {files} files written in {time.perf_counter() - started:.1f} s")
        cold = run_child("ingest", str(folder), str(cache))
        warm = run_child("ingest", str(folder), str(cache))
        assert not cold["from_cache"] and warm["from_cache"]
        assert cold["tunes"] == size, cold  # every tiled tune is distinct
        entry = {"files": files, "cold": cold, "warm": warm}
        if size <= IN_MEMORY_UP_TO:
            entry["in_memory"] = run_child("memory", str(folder))
        log(
            f"{size:,}: cold {cold['seconds']} s, warm {warm['seconds']} s, "
            f"peak {cold['peak_rss_mb']} MB"
        )
        results[size] = entry
    largest = max(sizes)
    log(f"pipeline and train steps on the {largest:,}-tune corpus...")
    pipeline = run_child(
        "pipeline",
        str(tmp / f"corpus-{largest}"),
        str(tmp / f"cache-{largest}"),
        str(batches),
        str(steps),
    )
    return {"sizes": results, "pipeline": pipeline}


def summarise(results: dict) -> dict:
    sizes = sorted(results)
    per_tune = {s: results[s]["cold"]["seconds"] / s for s in sizes}
    return {
        "time_per_tune_ratio": {
            f"{s}/{sizes[0]}": round(per_tune[s] / per_tune[sizes[0]], 2) for s in sizes
        },
        "cold_tunes_per_sec": {s: results[s]["cold"]["tunes_per_sec"] for s in sizes},
        "warm_seconds": {s: results[s]["warm"]["seconds"] for s in sizes},
        "peak_rss_mb": {
            "cold": {s: results[s]["cold"]["peak_rss_mb"] for s in sizes},
            "warm": {s: results[s]["warm"]["peak_rss_mb"] for s in sizes},
            "in_memory": {
                s: results[s]["in_memory"]["peak_rss_mb"]
                for s in sizes
                if "in_memory" in results[s]
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes " + str(QUICK_SIZES))
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help=f"default {SIZES}")
    parser.add_argument("--batches", type=int, default=None, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=None, help="train steps timed")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "ingest":
            report = child_ingest(Path(rest[0]), Path(rest[1]))
        elif kind == "memory":
            report = child_in_memory(Path(rest[0]))
        else:
            report = child_pipeline(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(report))
        return
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    batches = args.batches or (50 if args.quick else 300)
    steps = args.steps or (6 if args.quick else 30)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="large-corpus-bench-") as tmp:
        measured = measure(sizes, Path(tmp), batches, steps)
    report = {
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        },
        "settings": {
            "sizes": list(sizes),
            "tunes_per_file": TUNES_PER_FILE,
            "batches": batches,
            "steps": steps,
            "quick": args.quick,
        },
        **summarise(measured["sizes"]),
        "pipeline": measured["pipeline"],
        "sizes": measured["sizes"],
    }
    print_json(report, indent=2)


if __name__ == "__main__":
    main()
