#!/usr/bin/env bash
# End-to-end check of `python -m lmbook bundle` (CI): build a bundle for this machine's
# platform and Python, install it into a fresh virtual environment with no package index
# (pip's configuration and extra wheel folders switched off too), run `lmbook doctor`
# from it with the bundle's data, and execute chapter 1 and the student edition of
# chapter 1 from the bundle's notebooks, checking that every cell runs and that each
# exercise's checker reports its stub as failing.
#
#   tools/check_bundle.sh [--minimal] [WORKDIR]    (default _build/bundle-check; needs internet for pip)
#
# --minimal checks a subset, to save CI time: the bundle of lmbook and its dependencies only
# (`bundle --minimal`: no Jupyter, no chapter 8/10/12 libraries), and the notebooks run with
# IPython alone (lmbook's ipywidgets brings it) instead of a Jupyter kernel.
# PYTHON (default .venv/bin/python, else python3) builds the bundle: it needs lmbook's
# dependencies, and reads the data from LMBOOK_DATA_DIR or the cache like the chapters.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
minimal=()
plain=()
if [ "${1:-}" = "--minimal" ]; then minimal=(--minimal); plain=(--plain); shift; fi
work=${1:-_build/bundle-check}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
start=$(date +%s)
stamp() { echo "[bundle-check +$(( $(date +%s) - start ))s] $*"; }
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)

stamp "building the bundle ${minimal[*]} with $python"
PYTHONPATH="$repo" "$python" -m lmbook bundle "${minimal[@]}" "$work/bundle"

# (--no-compile: Python compiles only the modules the checks import, not every module of every wheel.)
stamp "installing it into a fresh virtual environment, no index"
"$python" -m venv "$work/venv"
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
  "$work/venv/bin/pip" install -q --no-compile --no-index --find-links "$work/bundle/wheels" -r "$work/bundle/requirements.txt"

# From here on nothing may come from this checkout: no PYTHONPATH, the bundle's data, an empty cache.
cd "$work/bundle"
run() { env -u PYTHONPATH PATH="$work/venv/bin:$PATH" LMBOOK_DATA_DIR="$work/bundle/data" \
        LMBOOK_CACHE_DIR="$work/cache" MPLBACKEND=Agg "$@"; }
run python -c "import lmbook, sys; assert lmbook.__file__.startswith('$work/venv'), lmbook.__file__"

stamp "doctor"
run python -m lmbook doctor --seconds 2

# student_edition.py only needs nbformat (and nbclient, or IPython with --plain) from the bundle's environment.
stamp "chapter 1 from the bundle's notebooks"
run python "$repo/tools/student_edition.py" notebooks --existing --execute 01 "${plain[@]}"
stamp "chapter 1 of the student edition"
run python "$repo/tools/student_edition.py" student --existing --execute 01 "${plain[@]}"

size=$(du -sm "$work/bundle" | cut -f1)
stamp "bundle check passed (bundle ${size} MB)"
