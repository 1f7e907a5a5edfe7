#!/usr/bin/env bash
# Every performance figure (targets P1-P4), each printed next to its anchor and target, in one run
# (about 35 minutes on a quiet 2-core machine). Run from the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python}"
echo "== P1: one result JSON to Parquet (convert.py)"
"$python" convert.py --scaling 100,3000 "$@"
echo "== P3: merging (merge.py)"
"$python" merge.py
echo "== P2, P4 and P1's whole-workflow row (workflow.py)"
"$python" workflow.py
