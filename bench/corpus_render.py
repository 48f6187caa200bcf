"""How much of the bundled corpus musicgen's renderer plays, and how fast: prints one JSON object.

    .venv/bin/python bench/corpus_render.py
"""

from __future__ import annotations

import time
from collections import Counter

from provenance import print_json

from musicgen.data.corpus import load_corpus
from musicgen.errors import RenderError
from musicgen.music.render import abc_to_performance


def main() -> None:
    started = time.perf_counter()
    tunes, report = load_corpus()
    ingest_seconds = time.perf_counter() - started
    failures: Counter = Counter()
    started = time.perf_counter()
    for tune in tunes:
        try:
            abc_to_performance(tune.text)
        except RenderError as exc:
            failures[exc.reason] += 1
    render_seconds = time.perf_counter() - started
    rendered = len(tunes) - sum(failures.values())
    print_json(
        {
            "ingest": report.summary(),
            "ingest_seconds": round(ingest_seconds, 2),
            "tunes": len(tunes),
            "rendered": rendered,
            "rendered_share": round(rendered / len(tunes), 4),
            "failures_by_reason": dict(failures.most_common()),
            "render_ms_per_tune": round(1000 * render_seconds / len(tunes), 3),
        },
        indent=2,
    )


if __name__ == "__main__":
    main()
