#!/usr/bin/env bash
# README's main command: train on the configured data, serve the blessed model, open the portal.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
mkdir -p outputs
"$PY" -m radassist.cli pipeline run "$@"
"$PY" -m radassist.cli serve --model-base-path "${RADASSIST_MODEL_BASE:-outputs/models}" > outputs/serve.log 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
echo "model server: gRPC localhost:8500, REST http://localhost:8501 (log: outputs/serve.log)"
"$PY" -m radassist.cli portal
