#!/usr/bin/env bash
# Installs what is missing (setup.sh), then runs the test suite on the CPU. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec .venv/bin/python -m pytest tests "$@"
