#!/usr/bin/env bash
# README's main command: train both models on the configured data, serve the blessed models, open the portal.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
mkdir -p outputs
"$PY" -m radassist.cli pipeline run "$@"
# The nodule segmenter: its own data ($RADASSIST_SEG_DATA_DIR, data/lidc-crops, else the bundled sample) and flags.
# shellcheck disable=SC2086 # RADASSIST_SEG_ARGS is a list of flags
"$PY" -m radassist.cli pipeline run --task segmenter ${RADASSIST_SEG_ARGS:-}
"$PY" -m radassist.cli serve --model-base-path "${RADASSIST_MODEL_BASE:-outputs/models}" \
  --model-name radassist --model-name radassist-seg > outputs/serve.log 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
echo "model server: gRPC localhost:8500, REST http://localhost:8501 (log: outputs/serve.log)"
"$PY" -m radassist.cli portal
