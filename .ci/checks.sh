#!/usr/bin/env bash
# Static gates, run by .ci/run before the tests: lint, format and types must be clean (0 findings).
# Usage: bash .ci/checks.sh [PYTHON]   (default: the project's .venv, else python3 on PATH)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${1:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
echo "== ruff check"; "$PY" -m ruff check semassoc tests benchmarks examples
echo "== ruff format --check"; "$PY" -m ruff format --check semassoc tests benchmarks examples
echo "== mypy"; "$PY" -m mypy semassoc
