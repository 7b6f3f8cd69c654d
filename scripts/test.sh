#!/usr/bin/env bash
# Set up and run the test suite:   bash scripts/test.sh          (fast: unit + integration, a few minutes)
#                                  bash scripts/test.sh --e2e    (the slow ones: real engines, fault injection)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python scripts/gen_proto.py --check
ruff check .
if [ "${1:-}" = "--e2e" ]; then
  shift
  python -m pytest -m "e2e or slow" tests "$@"
else
  python -m pytest "$@"
fi
