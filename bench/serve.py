"""`musicgen serve` under load, on loopback: many clients at once, then one warm request.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/serve.py [--run-dir RUN] > serve.json

Starts `musicgen serve --port 0` in a subprocess and sends `--requests` generate requests of
`--tunes` tunes each from `--clients` concurrent clients. A 503 must carry `Retry-After`; the
client then waits that long and asks again, as a polite client does (`--no-retry`: the 503 is
its answer), and a request's latency runs from its first attempt. Each request asks for its own
title and random seed, so every answer can be checked as its own: all its tunes carry its title,
its files live under its own batch id, and the ABC served for each tune is the ABC the answer
holds. Then the server must still answer, and one request of `--tunes` tunes is timed alone,
warm (`--warm-rounds` times; target under 2 s for 4 tunes of the default-size model on this
project's 2-core CPU).

Without `--run-dir`, the newest run under checkpoints/ is used; with none there, a default-size
run is trained for 50 steps into a temporary folder first (the speed of a model does not depend
on how well it is trained). Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from provenance import print_json

ROOT = Path(__file__).resolve().parent.parent
WARM_TARGET_S = 2.0


def log(message: str) -> None:
    print(f"[serve bench] {message}", file=sys.stderr, flush=True)


def find_or_train_run(run_dir: Path | None, scratch: Path) -> Path:
    if run_dir is not None:
        return run_dir
    runs = sorted(ROOT.glob("checkpoints/*/config.json"), key=lambda p: p.stat().st_mtime)
    if runs:
        return runs[-1].parent
    run = scratch / "default-50"
    log(f"no run under checkpoints/: training a default-size run for 50 steps into {run}")
    command = [sys.executable, "-m", "musicgen", "train", "--run-dir", str(run), "--steps", "50"]
    subprocess.run([*command, "--eval-every", "50", "--checkpoint-every", "50"], check=True)
    return run


def start_server(run_dir: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "musicgen", "serve", "--run-dir", str(run_dir), "--port", "0"]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        found = re.search(r"serving (http://\S+/)", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, found.group(1)
    raise SystemExit("the server did not start:\n" + "".join(lines))


def post(url: str, fields: dict, timeout: float = 600) -> tuple[int, object, dict, float]:
    """(status, headers (case-insensitive), JSON answer, seconds) of one generate request."""
    body = json.dumps(fields).encode()
    request = urllib.request.Request(
        url + "api/generate", data=body, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, headers, data = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        status, headers, data = error.code, error.headers, error.read()
    seconds = time.perf_counter() - started
    return status, headers, json.loads(data or b"{}"), seconds


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read()


def own_answer(base: str, answer: dict, title: str, tunes: int) -> str | None:
    """Why `answer` is not wholly the answer to the request titled `title`, or None."""
    if len(answer.get("tunes", [])) != tunes:
        return f"{len(answer.get('tunes', []))} tunes instead of {tunes}"
    prefix = f"/files/{answer['batch']}/"
    for tune in answer["tunes"]:
        if tune["title"] != title or f"T:{title}\n" not in tune["abc"]:
            return f"a tune titled {tune['title']!r} in the answer to {title!r}"
        if not all(link.startswith(prefix) for link in tune["files"].values()):
            return "a file outside the request's batch"
        if fetch(base + tune["files"]["abc"].lstrip("/")).decode() != tune["abc"]:
            return "the served .abc differs from the answer's ABC"
    return None


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def load_test(base: str, args) -> dict:
    def one(index: int) -> dict:
        title = f"Tune {index}"
        fields = {"num": args.tunes, "title": title, "random_seed": index}
        fields["max_length"] = args.max_length
        started, refusals, retry_after = time.perf_counter(), 0, []
        while True:
            status, headers, answer, _ = post(base, fields)
            if status != 503:
                break
            refusals += 1
            retry_after.append(headers.get("Retry-After"))
            if args.no_retry or refusals >= args.max_attempts:
                break
            time.sleep(float(headers.get("Retry-After") or 1))
        row = {"index": index, "status": status, "seconds": time.perf_counter() - started}
        row.update(refusals=refusals, retry_after=retry_after)
        if status == 200:
            row["mixed"] = own_answer(base, answer, title, args.tunes)
            row["batch"] = answer["batch"]
            row["server_seconds"] = answer["seconds"]["total"]
        elif status != 503:
            row["error"] = answer
        return row

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        rows = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - started
    ok = [r for r in rows if r["status"] == 200]
    busy = [r for r in rows if r["status"] == 503]
    latencies = [r["seconds"] for r in ok]
    retry_after = [value for r in rows for value in r["retry_after"]]
    return {
        "requests": len(rows),
        "clients": args.clients,
        "tunes_per_request": args.tunes,
        "clients_honour_retry_after": not args.no_retry,
        "wall_seconds": round(wall, 2),
        "answered_200": len(ok),
        "answered_503_finally": len(busy),
        "answered_other": [r for r in rows if r["status"] not in (200, 503)],
        "responses_503": len(retry_after),
        "requests_refused_at_least_once": sum(r["refusals"] > 0 for r in rows),
        "every_request_answered": len(ok) + len(busy) == len(rows),
        "every_503_has_retry_after": all(str(v).isdigit() for v in retry_after),
        "retry_after_s": sorted({int(v) for v in retry_after if str(v).isdigit()}),
        "mixed_answers": [r for r in ok if r["mixed"]],
        "distinct_batches": len({r["batch"] for r in ok}) == len(ok),
        "latency_200_s": {
            "p50": _round(percentile(latencies, 0.5)),
            "p95": _round(percentile(latencies, 0.95)),
            "max": _round(max(latencies, default=None)),
        },
        "server_seconds_per_batch": {
            "p50": _round(percentile([r["server_seconds"] for r in ok], 0.5)),
            "p95": _round(percentile([r["server_seconds"] for r in ok], 0.95)),
        },
        "tunes_per_second": round(len(ok) * args.tunes / wall, 2),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def warm_requests(base: str, args) -> dict:
    rounds = []
    for index in range(args.warm_rounds):
        fields = {"num": args.tunes, "random_seed": 1000 + index, "max_length": args.max_length}
        status, _, answer, seconds = post(base, fields)
        if status != 200:
            raise SystemExit(f"warm request answered {status}: {answer}")
        rounds.append(
            {
                "seconds": round(seconds, 3),
                "server_seconds": answer["seconds"],
                "characters": sum(t["characters"] for t in answer["tunes"]),
            }
        )
    median = statistics.median(r["seconds"] for r in rounds)
    return {
        "tunes": args.tunes,
        "rounds": rounds,
        "median_seconds": round(median, 3),
        "target_seconds": WARM_TARGET_S,
        "meets_target": median < WARM_TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--tunes", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1200)
    parser.add_argument("--warm-rounds", type=int, default=3)
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="count a 503 as the answer; default: wait its "
        "Retry-After and ask again, up to --max-attempts times",
    )
    parser.add_argument("--max-attempts", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="6 requests from 3 clients")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.clients, args.max_length, args.warm_rounds = 6, 3, 300, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="musicgen-serve-bench-") as scratch:
        run_dir = find_or_train_run(args.run_dir, Path(scratch))
        load_before = os.getloadavg()
        started = time.perf_counter()
        process, base = start_server(run_dir)
        start_seconds = time.perf_counter() - started
        log(f"server up at {base} in {start_seconds:.1f} s; {args.requests} requests")
        try:
            post(base, {"num": 1, "max_length": 64})  # the first batch after start-up, untimed
            load = load_test(base, args)
            alive = json.loads(fetch(base + "api/models")) is not None and process.poll() is None
            log(
                f"load done: {load['answered_200']} x 200, {load['responses_503']} x 503 on the way"
            )
            warm = warm_requests(base, args)
        finally:
            process.send_signal(signal.SIGINT)
            exit_code = process.wait(60)
    config = json.loads((run_dir / "config.json").read_text())
    result = {
        "run_dir": str(run_dir),
        "model": config["model"],
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },  # fmt: skip
        "server_start_seconds": round(start_seconds, 2),
        "load": load,
        "alive_after_load": alive,
        "warm_request": warm,
        "clean_exit_on_ctrl_c": exit_code == 0,
    }
    print_json(result)


if __name__ == "__main__":
    main()
