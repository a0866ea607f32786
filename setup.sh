#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): system packages, a virtual environment in .venv, Python packages.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in ffmpeg espeak-ng sox; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -f /usr/share/dict/brazilian ] || missing+=(wbrazilian)  # word list of the demo corpus's lexicon sentences
if ((${#missing[@]})); then
  echo "Installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || ! cmp -s <(cat requirements.txt requirements-dev.txt requirements-nodeps.txt) "$stamp"; then
  echo "Installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  if grep -qv '^\s*\(#\|$\)' requirements-nodeps.txt; then
    .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  fi
  cat requirements.txt requirements-dev.txt requirements-nodeps.txt > "$stamp"
fi
