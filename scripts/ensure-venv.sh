#!/usr/bin/env bash
# Create ./.venv (if needed) and install semassoc with its test tools into it. Safe to run again: it reinstalls
# only when pyproject.toml changed. Sourced by examples/demo.sh and tests/run.sh.
#   SEMASSOC_PYTHON      the Python to build the venv with (default: python3; needs 3.10+)
#   SEMASSOC_TORCH_SPEC  what to pip-install for torch (default: torch==2.13.0; CPU wheel where one is cached)
#   SEMASSOC_EXTRAS      the extras to install (default: dev; CI uses dev,spark to run the Spark engine's tests)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${SEMASSOC_PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "semassoc needs Python 3.10+" >&2; exit 2; }
  "$python" -m venv "$venv"
fi
stamp="$venv/.semassoc-installed"
extras="${SEMASSOC_EXTRAS:-dev}"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  # torch first: an unpinned torch resolves to a multi-GB CUDA build on Linux.
  if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    "$venv/bin/python" -m pip install -q "${SEMASSOC_TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
  fi
  "$venv/bin/python" -m pip install -q -e "$root[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c 'import semassoc, torch, sentence_transformers, qdrant_edge' \
    || { echo "installing semassoc into $venv failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
