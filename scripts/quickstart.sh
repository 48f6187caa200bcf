#!/usr/bin/env bash
# The main job from a fresh clone: set up, play tunes from the bundled model at once, then train
# on the bundled corpus and write and render new tunes from that run.
# Extra arguments go to `musicgen train` (for example --steps 300 for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${MUSICGEN_VENV:-.venv}"
stamp="quickstart-$(date +%Y%m%d-%H%M%S)"
run_dir="checkpoints/$stamp"
"$venv/bin/musicgen" generate --run-dir bundled --num 8 --out "out/$stamp/bundled"
echo "quickstart: the bundled model's tunes are in out/$stamp/bundled/; play one with:" >&2
echo "  $venv/bin/musicgen play out/$stamp/bundled/<name>.wav" >&2
echo "quickstart: now training a model of your own (Ctrl-C stops it; --resume goes on)" >&2
"$venv/bin/musicgen" train --run-dir "$run_dir" "$@"
"$venv/bin/musicgen" generate --run-dir "$run_dir" --num 8 --out "out/$stamp/trained"
echo "quickstart: the trained run's tunes, MIDI and WAV are in out/$stamp/trained/; play one with:" >&2
echo "  $venv/bin/musicgen play out/$stamp/trained/<name>.wav" >&2
