#!/usr/bin/env bash
# Sets up musicgen with its test tools and runs the whole test suite, slow tests included.
# Extra arguments go to pytest (for example -m "not slow" for a quick run).
set -euo pipefail
cd "$(dirname "$0")/.."
MUSICGEN_EXTRAS=test bash scripts/setup.sh
venv="${MUSICGEN_VENV:-.venv}"
"$venv/bin/ruff" check musicgen tests bench
status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
