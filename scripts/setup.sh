#!/usr/bin/env bash
# Create the project's virtual environment (.venv, or $SYNTHBIO_VENV) and install everything
# the demo and the tests need. Idempotent: a second run only checks that it is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SYNTHBIO_VENV:-.venv}"
python="${PYTHON:-python3}"
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python 3.11 or newer is needed; {sys.executable} is {sys.version.split()[0]}. Set PYTHON=python3.11.")
PY
if [[ ! -x "$venv/bin/python" ]]; then
  echo "==> creating $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  echo "==> installing synthbio-pipeline with Snakemake, pandas, pyarrow, matplotlib and the test tools"
  echo "    into $venv: once, about 2 to 3 minutes on a 2-core machine (pip is quiet meanwhile)"
  installing=$(date +%s)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[workflow,test]"
  if "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then
    # The tests read the .h5ad exports back with anndata, as scanpy users do. Its releases for
    # Python 3.11 declare pandas < 3 (the project uses pandas 3), though reading h5ad works with
    # it: install anndata without that constraint, for the tests only (the test extra has it
    # normally on Python 3.12+). pip reports the declared conflict; it is expected.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "anndata==0.12.19"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "array-api-compat" "legacy-api-wrap" "natsort" "scverse-misc" "zarr" "scipy" 2>&1 \
      | grep -v "dependency resolver\|anndata 0.12.19 requires pandas" || true
  fi
  touch "$stamp"
  echo "==> installed in $(($(date +%s) - installing)) s"
fi
