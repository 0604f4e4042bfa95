#!/usr/bin/env bash
# Once, for bench/bench_published.py: the publisher's code (CellProfiling/densenet) and
# cellmaps-image-embedding in an environment of its own (its pins, numpy 1.x and opencv-python 4.9,
# clash with the project's). Both are ignored by git. DENSENET_URL overrides where the code is cloned from.
set -euo pipefail
cd "$(dirname "$0")"
[ -x ../.venv/bin/python ] || { echo "error: ../.venv missing; run the tests or run_all.sh once first" >&2; exit 1; }
[ -d .third_party/densenet ] || git clone -q "${DENSENET_URL:-https://github.com/CellProfiling/densenet}" .third_party/densenet
if [ ! -x .venv-cellmaps/bin/python ]; then
    python3 -m venv .venv-cellmaps
    # torch and torchvision come from the project's environment (the pinned build, from local disk),
    # searched after this environment's own packages, so cellmaps' own pins win everywhere else
    site="$(../.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    own="$(.venv-cellmaps/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$site" > "$own/zz_project_torch.pth"
    .venv-cellmaps/bin/python -m pip install -q cellmaps-image-embedding==0.3.3
fi
echo "ready: bench/.third_party/densenet and bench/.venv-cellmaps"
