#!/usr/bin/env bash
# The main job end to end on the embedded default (synthetic demo corpus, stand-in teacher): installs what is missing
# (setup.sh), then distils, fine-tunes and prints WER/CER. `bash run_demo.sh --quick` is a 2-minute smoke run.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec .venv/bin/python demo.py "$@"
