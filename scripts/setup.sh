#!/usr/bin/env bash
# Sets up musicgen on a fresh machine: a virtualenv in .venv with the package and its dependencies
# from PyPI, plus the Debian packages that give better sound and an independent ABC checker
# (fluidsynth, abcmidi) where this machine can install them. Safe to run again.
#   MUSICGEN_VENV=DIR   put the virtualenv elsewhere
#   MUSICGEN_EXTRAS=test  also install the test tools (and Chromium for the browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${MUSICGEN_VENV:-.venv}"
extras="${MUSICGEN_EXTRAS:-}"

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup: musicgen needs Python 3.11 or newer; install it and run again" >&2
  exit 1
fi

install_debian_packages() {
  local missing=()
  command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
  command -v abc2midi >/dev/null 2>&1 || missing+=(abcmidi)
  # The browser tests of `musicgen serve` drive Debian's headless Chromium through selenium.
  if [[ "$extras" == *test* ]]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || {
    echo "setup: no apt-get; for richer sound install FluidSynth (e.g. 'brew install fluid-synth')" >&2
    return 0
  }
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "setup: not root; for richer sound run 'sudo apt-get install ${missing[*]}'" >&2
      return 0
    fi
  fi
  echo "setup: installing ${missing[*]} (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 &&
      $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; } ||
    echo "setup: could not install ${missing[*]}; musicgen uses its built-in synthesizer" >&2
}

install_debian_packages

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtualenv $venv with $python" >&2
  "$python" -m venv "$venv"
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
echo "setup: installing musicgen and its dependencies into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target" 2>&1 |
  grep -v "^WARNING: Location" >&2 || true
"$venv/bin/python" -c "import musicgen, tensorflow, music21, mido, pretty_midi" 2>/dev/null || {
  echo "setup: the install into $venv failed; see pip's messages above" >&2
  exit 1
}
