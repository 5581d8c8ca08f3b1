#!/usr/bin/env bash
# Run the test suite in ./.venv, creating and installing it first when needed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh
python -m pytest -q "$@"
