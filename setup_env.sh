# Sourced by run_all.sh and run_tests.sh: creates .venv/ at the repository root when it is
# missing (or when requirements.txt changed since it was built) and activates it.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_stamp="$_root/.venv/.requirements.sha256"
_want="$(cat "$_root/requirements.txt" "$_root/pyproject.toml" | sha256sum | cut -d" " -f1)"
if [ ! -x "$_root/.venv/bin/python" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
    echo "setting up $_root/.venv (first run: about 2 minutes) ..." >&2
    python3 -m venv "$_root/.venv" || { echo "error: python3 -m venv failed (Python >= 3.10 with venv needed)" >&2; exit 1; }
    "$_root/.venv/bin/python" -m pip install -q --upgrade pip >&2 || exit 1
    "$_root/.venv/bin/python" -m pip install -q -r "$_root/requirements.txt" >&2 \
        || { echo "error: installing requirements.txt failed" >&2; exit 1; }
    "$_root/.venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$_root" >&2 \
        || { echo "error: installing the project (pip install -e .) failed" >&2; exit 1; }
    echo "$_want" > "$_stamp"
fi
# shellcheck disable=SC1091
source "$_root/.venv/bin/activate"
unset _root _stamp _want
