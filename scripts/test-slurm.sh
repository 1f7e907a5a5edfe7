#!/usr/bin/env bash
# The SLURM test (tests/test_slurm.py): starts a single-node SLURM cluster if none answers and
# this is root (scripts/slurm-up.sh; stopped again afterwards), then runs the test in its own
# venv: the project's venv plus the `cluster` extra. The extra stays out of the main venv:
# wherever scontrol exists, the slurm plugin runs it each time snakemake starts, which would
# slow every workflow test (by up to 10 s each when no controller answers).
# Extra arguments go to pytest. Without root or SLURM the test is skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
base="${SYNTHBIO_VENV:-.venv}"
venv="${SYNTHBIO_CLUSTER_VENV:-$base-cluster}"

if ! sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mix|alloc'; then
  if [[ $EUID -eq 0 ]]; then
    echo "==> starting a single-node SLURM cluster (scripts/slurm-up.sh)"
    bash scripts/slurm-up.sh
    trap 'bash scripts/slurm-down.sh' EXIT
  else
    echo "==> no SLURM cluster answers and this is not root: tests/test_slurm.py will skip"
  fi
fi

# Layered on the main venv (a .pth adds its site-packages), so only the extra's own packages
# are installed here: seconds instead of minutes for a second full install.
if [[ ! -x "$venv/bin/python" ]]; then
  echo "==> creating $venv on top of $base"
  "$base/bin/python" -m venv --without-pip "$venv"
  base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$base_site')" > "$site/_synthbio_base_venv.pth"
fi
stamp="$venv/.installed-$(sha1sum < pyproject.toml | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  echo "==> installing the cluster extra into $venv"
  "$base/bin/python" -m pip --python "$venv/bin/python" install --quiet --disable-pip-version-check -e ".[cluster]"
  touch "$stamp"
fi
"$venv/bin/python" -m pytest -s tests/test_slurm.py "$@"
