"""How fast musicgen ingests a folder of melody MIDI files, and with how much memory: prints JSON.

    .venv/bin/python bench/ingest_midi.py            # 1,200 files, about a minute
    .venv/bin/python bench/ingest_midi.py --quick    # 120 files, a smoke run

Untimed set-up: tunes taken evenly across the bundled corpus are written as MIDI files (musicgen's
renderer: one melody track, a conductor track with tempo, meter and key) into a temporary folder.
Timed, in a fresh subprocess so its memory figures (peak, right after its imports, at the end) are
its own: `load_corpus([folder])`, the path that `musicgen ingest` and `musicgen train --data` take
(finding the files, reading, converting, normalising, dropping duplicates). Then the same subprocess
converts each file once more on its own for the spread of milliseconds per file. The reference, in
the same run when abcMIDI's `midi2abc` is installed, converts a subset of the same files with one
`midi2abc` process per file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import print_json

FILES = 1200
QUICK_FILES = 120
REFERENCE_FILES = 200


def make_files(folder: Path, count: int) -> dict:
    """Writes `count` MIDI files made from corpus tunes; returns what was made."""
    from musicgen.data.corpus import load_corpus
    from musicgen.errors import RenderError
    from musicgen.music.render import abc_to_midi

    tunes, _ = load_corpus()
    step = max(len(tunes) // count, 1)
    made, notes = 0, 0
    for tune in tunes[::step]:
        if made == count:
            break
        try:
            performance = abc_to_midi(tune.text, folder / f"{made:05d}.mid")
        except RenderError:
            continue
        made += 1
        notes += len(performance.notes)
    sizes = [path.stat().st_size for path in folder.glob("*.mid")]
    return {
        "made": made,
        "mean_bytes": round(statistics.mean(sizes)),
        "mean_notes": round(notes / made, 1),
    }


def child(folder: Path) -> dict:
    """Runs in the subprocess: the timed ingestion."""
    from musicgen.data.corpus import load_corpus
    from musicgen.music.midi_in import midi_to_tune

    after_import = _peak_rss_mb()
    started = time.perf_counter()
    tunes, report = load_corpus([folder])
    seconds = time.perf_counter() - started
    per_file = []
    for path in sorted(folder.glob("*.mid")):
        started = time.perf_counter()
        midi_to_tune(path)
        per_file.append(1000 * (time.perf_counter() - started))
    per_file.sort()
    return {
        "files": report.files,
        "converted": report.midi_files,
        "tunes_kept": len(tunes),
        "summary": report.summary(),
        "seconds": round(seconds, 3),
        "files_per_sec": round(report.files / seconds, 1),
        "per_file_ms": {
            "mean": round(statistics.mean(per_file), 3),
            "p50": round(per_file[len(per_file) // 2], 3),
            "p95": round(per_file[int(len(per_file) * 0.95)], 3),
            "max": round(per_file[-1], 3),
        },
        "memory": {
            "after_import_rss_mb": after_import,
            "peak_rss_mb": _peak_rss_mb(),
            "rss_at_end_mb": _rss_mb(),
        },
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _rss_mb() -> float:
    """Resident memory now (Linux), beside the peak: ingestion holds only the tunes' text."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def reference(folder: Path, count: int) -> dict | None:
    """midi2abc on the first `count` files, one process each (how it is used from a script)."""
    tool = shutil.which("midi2abc")
    if tool is None:
        return None
    files = sorted(folder.glob("*.mid"))[:count]
    started = time.perf_counter()
    for path in files:
        subprocess.run([tool, str(path), "-o", os.devnull], capture_output=True, check=True)
    seconds = time.perf_counter() - started
    return {"tool": "midi2abc", "files": len(files), "seconds": round(seconds, 3),
            "files_per_sec": round(len(files) / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FILES} files")
    parser.add_argument("--files", type=int, default=None, help=f"default {FILES}")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    count = args.files or (QUICK_FILES if args.quick else FILES)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        folder = Path(tmp)
        print(f"writing {count} MIDI files (untimed)...", file=sys.stderr)
        made = make_files(folder, count)
        print("ingesting them in a subprocess...", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(folder)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        ours = json.loads(done.stdout)
        theirs = reference(folder, min(REFERENCE_FILES, made["made"]))
    report = {
        "machine": {"cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
        "settings": {"files": count, "grid": "sixteenths", "quick": args.quick},
        "made": made,
        "ours": ours,
        "reference": theirs,
        "ratio_files_per_sec": (
            round(ours["files_per_sec"] / theirs["files_per_sec"], 2) if theirs else None
        ),
    }
    print_json(report, indent=2)


if __name__ == "__main__":
    main()
