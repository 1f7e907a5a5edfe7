#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, then the SLURM test in its own venv
# (scripts/test-slurm.sh: it starts a single-node SLURM cluster when run as root and none
# answers, and skips with the reason otherwise). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${SYNTHBIO_VENV:-.venv}/bin/python" -m pytest "$@"
if [[ "${SYNTHBIO_SKIP_SLURM:-}" == 1 ]]; then
  echo "==> SYNTHBIO_SKIP_SLURM=1: the SLURM test was not run"
else
  bash scripts/test-slurm.sh "$@"
fi
