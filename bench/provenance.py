"""What every bench script's JSON carries: the code and machine its figures come from.

`print_json(report)` adds a `provenance` field (git commit, whether the work tree had changes,
musicgen's version, Python, platform, cores, load average) and prints the report on stdout.
Figures without the commit that made them cannot be reproduced, so every bench prints through it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, None where the OS does not say."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _installed(package: str) -> str | None:
    """The installed version of `package` (the dependency ranges are open, so benches say it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def provenance() -> dict:
    """The commit, version and machine of this run (commit None outside a git checkout)."""
    import musicgen

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_changes": None if status is None else bool(status),
        "musicgen_version": musicgen.__version__,
        "musicgen_path": str(Path(musicgen.__file__).resolve().parent),
        "python": platform.python_version(),
        "tensorflow": _installed("tensorflow"),
        "keras": _installed("keras"),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),  # musicgen sets "1" unless set
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": load_average(),
    }


def print_json(report: dict, indent: int | None = 1) -> None:
    """Prints `report` with its provenance as one JSON document on stdout."""
    json.dump({**report, "provenance": provenance()}, sys.stdout, indent=indent)
    sys.stdout.write("\n")
    sys.stdout.flush()
