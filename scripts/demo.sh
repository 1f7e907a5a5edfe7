#!/usr/bin/env bash
# Set up (if needed), then run the workflow on the example table (config/conditions.tsv)
# against the bundled API emulator: no token, no network. The emulator is started on a
# free loopback port and stopped at the end. Outputs go to demo/ (not results/, so that
# real predictions are never replaced by emulated ones). Extra arguments go to snakemake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${SYNTHBIO_VENV:-.venv}"
workdir=demo

emulator_out="$(mktemp)"
"$venv/bin/synthbio-pipeline" emulator --host 127.0.0.1 --port 0 >"$emulator_out" 2>&1 &
emulator_pid=$!
trap 'kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true; rm -f "$emulator_out"' EXIT

url=""
for _ in $(seq 200); do
  url="$(grep -m1 -o 'http://127\.0\.0\.1:[0-9]*' "$emulator_out" || true)"
  [[ -n "$url" ]] && break
  kill -0 "$emulator_pid" 2>/dev/null || { cat "$emulator_out" >&2; echo "the emulator did not start" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "the emulator printed no URL within 20 s" >&2; exit 1; }
echo "==> $(head -n1 "$emulator_out")"

echo "==> snakemake on config/conditions.tsv, outputs in $workdir/"
start=$(date +%s)
# The token is for the emulator only, and for this command only.
SYNTHESIZE_API_KEY=emulator-demo "$venv/bin/snakemake" --cores 2 --directory "$workdir" \
  --configfile config/config.yaml --config api_base_url="$url" conditions="$PWD/config/conditions.tsv" "$@"
echo "==> workflow finished in $(( $(date +%s) - start )) s"

"$venv/bin/python" - "$workdir/results" <<'PY'
import sys
from pathlib import Path

from synthbio_pipeline.formats.parquet import load_expression

for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if (p / "expression.parquet").exists()):
    expression, metadata = load_expression(folder / "expression.parquet", folder / "metadata.parquet")
    print(f"\n{folder}/: {expression.shape[0]:,} genes x {expression.shape[1]} samples, "
          f"{metadata['condition'].nunique()} condition(s), backend: {', '.join(metadata['backend'].unique())}")
    per_condition = metadata.groupby("condition", sort=False).agg(
        samples=("condition", "size"),
        model=("model_id", "first"), mode=("sampling_strategy", "first"))
    per_condition["median library size"] = [
        int(expression[metadata.index[metadata["condition"] == c]].sum().median()) for c in per_condition.index]
    print(per_condition.to_string())
PY
