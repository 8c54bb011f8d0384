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
# Both models from one TF Serving model config; the classifier's calls are logged (PredictionLog records) for
# the monitoring pipeline: `radassist monitor --window 24h` reads outputs/prediction-logs, publishes to
# outputs/monitoring, which the portal's admin Monitoring page shows.
MODELS="$(realpath -m "${RADASSIST_MODEL_BASE:-outputs/models}")"
cat > outputs/models.config <<CONFIG
model_config_list {
  config { name: "radassist" base_path: "$MODELS/radassist" model_platform: "tensorflow"
           logging_config { log_collector_config { filename_prefix: "$(realpath -m outputs/prediction-logs)" }
                            sampling_config { sampling_rate: ${RADASSIST_LOG_SAMPLING_RATE:-1.0} } } }
  config { name: "radassist-seg" base_path: "$MODELS/radassist-seg" model_platform: "tensorflow" }
}
CONFIG
"$PY" -m radassist.cli serve --model-config-file outputs/models.config > outputs/serve.log 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
echo "model server: gRPC localhost:8500, REST http://localhost:8501 (log: outputs/serve.log)"
RADASSIST_MONITORING_DIR="${RADASSIST_MONITORING_DIR:-$(realpath -m outputs/monitoring)}" "$PY" -m radassist.cli portal
