"""Pipeline defaults. Runners and CLIs read the environment and override these; libraries take arguments."""

import os

PIPELINE_NAME = "radassist"
MODEL_NAME = "radassist"            # TF Serving model name and MLflow registered model name
DATA_SUBDIR = os.path.join("data", "chest-ct")
SAMPLE_DATA_SUBDIR = os.path.join("data", "sample", "chest-ct")
OUTPUT_SUBDIR = "outputs"           # pipeline root, ML Metadata, MLflow store and pushed models live here

ACCURACY_FLOOR = 0.6                # blessing: official-test accuracy must reach this ...
REGRESSION_TOLERANCE = 0.0          # ... and not fall below the last blessed model's by more than this
NEAR_DUPLICATE_BITS = 50            # of 256 pHash bits: Hamming distance counted as a near copy
MLFLOW_EXPERIMENT = "radassist-training"

# Kubeflow
KFP_IMAGE = "ghcr.io/radassist/radassist-train:latest"
KFP_PIPELINE_ROOT = "s3://radassist-pipelines/root"
