#!/usr/bin/env bash
# Trains musicgen's bundled model from scratch, exactly as it was trained for the release, then
# exports its best checkpoint into the package (float16 weights, JSON, no optimizer state).
#
#   bash scripts/train_bundled.sh [RUN_DIR]          # default RUN_DIR: checkpoints/bundled-train
#   bash scripts/train_bundled.sh RUN_DIR --resume   # continue an interrupted run
#
# The recipe is the best one measured for tunes that come home (issue 13, README "One root for
# every tune"): the default LSTM (2 x 384, 2.0M parameters) on 32 whole tunes a step (windows of
# 512 from a tune's start), every tune moved to root C, trained for 2,400 steps instead of 1,024.
# See README, "Fine-tuning (--init) and the bundled model".
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${1:-checkpoints/bundled-train}
shift || true
musicgen=${MUSICGEN_VENV:-.venv}/bin/musicgen
python=${MUSICGEN_VENV:-.venv}/bin/python

"$musicgen" train --run-dir "$run_dir" --whole-tunes --seq-length 512 --batch-size 32 \
    --common-root --steps 2400 --random-seed 0 "$@"
"$python" scripts/export_bundled.py "$run_dir" folk-lstm
