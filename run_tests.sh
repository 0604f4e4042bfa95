#!/usr/bin/env bash
# The test command: sets up .venv/ if needed, then runs the whole suite (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh
ruff check .
# one worker per core, each given whole files (their module fixtures are built once), longest first
python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder "$@"
