#!/usr/bin/env bash
# The main job from a fresh clone: set up, train on the bundled corpus, write and render new tunes.
# Extra arguments go to `musicgen train` (for example --steps 300 for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${MUSICGEN_VENV:-.venv}"
run_dir="checkpoints/quickstart-$(date +%Y%m%d-%H%M%S)"
"$venv/bin/musicgen" train --run-dir "$run_dir" "$@"
"$venv/bin/musicgen" generate --run-dir "$run_dir" --num 8 --out "out/$(basename "$run_dir")"
echo "quickstart: tunes, MIDI and WAV in out/$(basename "$run_dir")/; play one with:" >&2
echo "  $venv/bin/musicgen play out/$(basename "$run_dir")/<name>.wav" >&2
