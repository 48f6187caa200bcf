"""How much of the bundled corpus engraves as sheet music, and how fast: prints one JSON object.

    .venv/bin/python bench/score.py            # every tune of the bundled corpus, about 2 minutes
    .venv/bin/python bench/score.py --tunes 500

Three figures: the share of tunes our isolated engraver (`musicgen.music.score`) engraves, with the
reasons of those it does not; its seconds per tune (batches of `--batch` tunes, the worker's
start-up timed apart); and, for comparison, raw verovio in this process on tunes the isolated run
engraved: in this process on our safe text (none of them can abort it), and on the tunes as written
in a child process, since raw verovio may die on those.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter

from provenance import print_json

from musicgen.data.corpus import load_corpus
from musicgen.music.score import VEROVIO_OPTIONS, Engraver, engraving_text

RAW_SAMPLE = 300  # tunes timed with raw verovio

_RAW = """
import json, sys, time
import verovio
verovio.enableLog(verovio.LOG_OFF)
texts = json.load(sys.stdin)
toolkit = verovio.toolkit()
toolkit.setOptions(json.loads(sys.argv[1]))
done = 0
started = time.perf_counter()
for text in texts:
    toolkit.loadData(text)
    toolkit.renderToSVG(1)
    done += 1
    print(done, time.perf_counter() - started, flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tunes", type=int, default=0, help="First N tunes only (0: all).")
    parser.add_argument("--batch", type=int, default=100, help="Tunes per engrave() call.")
    args = parser.parse_args()
    tunes, _ = load_corpus()
    if args.tunes:
        tunes = tunes[: args.tunes]
    texts = [tune.text for tune in tunes]
    isolated, results = _isolated(texts, args.batch)
    engraved = [text for text, result in zip(texts, results) if result.svg is not None]
    sample = engraved[:RAW_SAMPLE]
    failures = Counter(result.reason for result in results if result.svg is None)
    examples = [
        {"source": tune.source, "reason": result.reason}
        for tune, result in zip(tunes, results)
        if result.svg is None
    ][:10]
    figures = {
        "tunes": len(texts),
        "engraved": len(engraved),
        "engraved_share": round(len(engraved) / len(texts), 4),
        "failures_by_reason": dict(failures.most_common()),
        "failure_examples": examples,
        "isolated": isolated,
        "raw_verovio_in_process_safe_text": _raw_here([engraving_text(t) for t in sample]),
        "raw_verovio_as_written_child_process": _raw(sample),
    }
    print_json(figures, indent=2)


def _isolated(texts: list[str], batch: int) -> tuple[dict, list]:
    with Engraver() as engraver:
        started = time.perf_counter()
        engraver.engrave([texts[0]])
        startup = time.perf_counter() - started
        results = []
        started = time.perf_counter()
        for first in range(0, len(texts), batch):
            results += engraver.engrave(texts[first : first + batch])
        seconds = time.perf_counter() - started
        restarts = engraver.restarts
    return {
        "first_call_seconds": round(startup, 3),
        "seconds_per_tune": round(seconds / len(texts), 4),
        "worker_restarts": restarts,
    }, results


def _raw_here(texts: list[str]) -> dict:
    """Raw verovio in this process (these tunes engraved in the worker, so none aborts here)."""
    import verovio

    verovio.enableLog(verovio.LOG_OFF)
    toolkit = verovio.toolkit()
    toolkit.setOptions(VEROVIO_OPTIONS)
    started = time.perf_counter()
    for text in texts:
        toolkit.loadData(text)
        toolkit.renderToSVG(1)
    seconds = time.perf_counter() - started
    return {"tunes": len(texts), "seconds_per_tune": round(seconds / len(texts), 4)}


def _raw(texts: list[str]) -> dict:
    """Raw verovio on `texts` in one child process: seconds per tune, and whether it died."""
    child = subprocess.run(
        [sys.executable, "-c", _RAW, json.dumps(VEROVIO_OPTIONS)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
    )
    lines = child.stdout.split()
    done = int(lines[-2]) if len(lines) >= 2 else 0
    seconds = float(lines[-1]) if lines else 0.0
    return {
        "tunes": len(texts),
        "engraved_before_exit": done,
        "seconds_per_tune": round(seconds / done, 4) if done else None,
        "process_died": child.returncode != 0,
        "exit_code": child.returncode,
    }


if __name__ == "__main__":
    main()
