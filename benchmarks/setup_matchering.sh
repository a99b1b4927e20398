#!/usr/bin/env bash
# Creates benchmarks/.venv-matchering with Matchering 2.0.x for the comparison in
# benchmarks/mastering.py. Matchering is GPLv3: it lives only in this separate,
# gitignored environment, is run as a separate process, and is never imported by app/.
# Idempotent: skipped when the stamp matches the pinned set below.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-matchering"
py="${PYTHON:-python3}"

# A set known to install and run on CPython 3.11 from PyPI wheels. numpy < 2 and
# scipy < 1.14 because matchering 2.0.6 uses scipy.ndimage.filters and predates numpy 2.
pins=(
    "matchering==2.0.6"
    "numpy==1.26.4"
    "scipy==1.11.4"
    "soundfile==0.12.1"
    "resampy==0.4.3"
    "numba==0.59.1"
    "llvmlite==0.42.0"
    "statsmodels==0.14.1"
    "pandas==2.2.2"
    "patsy==0.5.6"
)
stamp="$venv/.pins"
want="$(printf '%s\n' "${pins[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup_matchering] creating $venv" >&2
    "$py" -m venv "$venv"
fi
echo "[setup_matchering] installing ${pins[0]} (GPLv3, benchmark only)" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "${pins[@]}"
"$venv/bin/python" -c 'import matchering, sys; print("matchering", matchering.__version__, file=sys.stderr)'
printf '%s\n' "${pins[@]}" > "$stamp"
