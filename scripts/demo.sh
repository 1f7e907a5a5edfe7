#!/usr/bin/env bash
# Set up (if needed), then run the workflow on a table of conditions against the bundled API
# emulator, build its report and say what to do next: no token, no network. The emulator is
# started on a free loopback port and stopped at the end. Outputs go to demo/ (not results/,
# so that real predictions are never replaced by emulated ones).
#
#   bash scripts/demo.sh                      # the example table, config/conditions.tsv
#   bash scripts/demo.sh my_conditions.tsv    # your own table (.tsv or .csv)
#   bash scripts/demo.sh [TABLE] --forceall   # anything else goes to snakemake
set -euo pipefail
cd "$(dirname "$0")/.."
table="$PWD/config/conditions.tsv"
if [[ $# -gt 0 && "$1" != -* ]]; then
  [[ -f "$1" ]] || { echo "no such table: $1 (a .tsv or .csv of conditions; see config/README.md)" >&2; exit 2; }
  table="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
  shift
fi
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

shown_table="${table#"$PWD"/}"
echo "==> snakemake on $shown_table, outputs in $workdir/"
start=$(date +%s)
config=(--configfile config/config.yaml --config api_base_url="$url" conditions="$table")
# The token is for the emulator only, and for this command only.
SYNTHESIZE_API_KEY=emulator-demo "$venv/bin/snakemake" --cores 2 --directory "$workdir" "${config[@]}" "$@"
echo "==> workflow finished in $(($(date +%s) - start)) s"

"$venv/bin/python" - "$workdir/results" "$table" <<'PY'
import hashlib
import json
import sys
from pathlib import Path

from synthbio_pipeline.formats.parquet import load_expression

# Only this run's groups: an earlier demo run on another table may have left others.
table_sha256 = hashlib.sha256(Path(sys.argv[2]).read_bytes()).hexdigest()


def made_by_this_table(folder: Path) -> bool:
    provenance = folder / "provenance.json"
    return provenance.exists() and json.loads(provenance.read_text()).get("conditions_table_sha256") == table_sha256


for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if (p / "expression.parquet").exists() and made_by_this_table(p)):
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

# The report describes the run recorded with the outputs (results/*/provenance.json): no token.
echo
echo "==> building the report (snakemake --report)"
"$venv/bin/snakemake" --quiet all --directory "$workdir" "${config[@]}" --report "$PWD/$workdir/report.html"
[[ -f "$workdir/report.html" ]] || { echo "the report was not written" >&2; exit 1; }
modality="$(ls "$workdir/results" | grep -m1 -x -e bulk -e single-cell || true)"
cat <<EOF

==> report: $workdir/report.html ($(du -h "$workdir/report.html" | cut -f1), self-contained)

Next steps
  1. Open the report in a browser:
       xdg-open $workdir/report.html        # or: open $workdir/report.html (macOS); file://$PWD/$workdir/report.html
  2. Load the outputs in Python ($venv/bin/python):
       from synthbio_pipeline.formats.parquet import load_expression
       expression, metadata = load_expression("$workdir/results/${modality:-bulk}/expression.parquet",
                                              "$workdir/results/${modality:-bulk}/metadata.parquet")
       expression.loc["ENSG00000141510"]    # TP53: one value per sample
  3. Run your own table: copy config/conditions.tsv, edit the rows (columns: config/README.md), then
       bash scripts/demo.sh my_conditions.tsv                  # against the emulator, as here
     For real predictions: synthbio-pipeline token set (or export SYNTHESIZE_API_KEY=...), then
       $venv/bin/snakemake --cores 2 --config conditions=my_conditions.tsv
EOF
