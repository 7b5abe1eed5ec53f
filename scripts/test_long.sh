#!/usr/bin/env bash
# The long test set: what the default run (README) leaves out because a faster representative of it
# is in the default run (more GEMM-core configs, the 8x8 OS cycle-model case, the 16x16 key layer).
# Usage: bash scripts/test_long.sh [pytest args]; "--all" runs the default and the long set together.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--all" ]; then
    shift
    exec .venv/bin/python -m pytest -n 2 -m "long or not long" "$@"
fi
exec .venv/bin/python -m pytest -n 2 -m long "$@"
