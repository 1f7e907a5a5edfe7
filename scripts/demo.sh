#!/usr/bin/env bash
# Set up (if needed) and run the demo against the bundled API emulator: no token, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${SYNTHBIO_VENV:-.venv}/bin/python" -m synthbio_pipeline.demo "$@"
