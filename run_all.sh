#!/usr/bin/env bash
# Runs a whole recipe (the demo without data): `bash run_all.sh --help`; the options and the recipe's
# logic are in hpa/cli/run_all.py and hpa/pipeline/recipe.py. This file sets up .venv/ and passes
# signals on.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
# The recipe runs as a child that this script waits for, so that a signal to the script (kill PID,
# Ctrl-C, a closed terminal) reaches it: SIGTERM stops training at the next step with last.pt saved
# there, and the same command resumes. (Ctrl-C becomes SIGTERM: a background child ignores SIGINT.)
python -m hpa.cli.run_all "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
rc=0
while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break  # a trapped signal ends `wait` early: wait until the recipe has stopped
done
exit "$rc"
