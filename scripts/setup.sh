#!/usr/bin/env bash
# Create .venv (if missing) and install fleet with its dev tools into it. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e '.[dev]' 2>&1 | grep -v -i -E 'warning|^\s*$' || true
python -c "import fleet.cli.main" # fails loudly if the install is broken
