"""Pipeline defaults. Runners and CLIs read the environment and override these; libraries take arguments."""

import dataclasses
import os

from radassist import contract

TASKS = ("classifier", "segmenter")  # pipelines.pipeline's tasks: the two models
PIPELINE_NAME = "radassist"
MODEL_NAME = contract.MODEL_NAME   # TF Serving model name and MLflow registered model name
DATA_SUBDIR = os.path.join("data", "chest-ct")
SAMPLE_DATA_SUBDIR = os.path.join("data", "sample", "chest-ct")
# The segmenter's: its own pipeline (and ML Metadata context, so its baseline is its own), model and experiment.
SEGMENTER_PIPELINE_NAME = "radassist-seg"
SEGMENTER_MODEL_NAME = contract.SEGMENTATION_MODEL_NAME
SEGMENTER_DATA_SUBDIR = os.path.join("data", "lidc-crops")
SEGMENTER_SAMPLE_DATA_SUBDIR = os.path.join("data", "sample", "lidc-crops")
SEGMENTER_MLFLOW_EXPERIMENT = "radassist-segmentation"
DICE_FLOOR = 0.5                    # blessing: the segmenter's mean per-slice test Dice must reach this
OUTPUT_SUBDIR = "outputs"           # pipeline root, ML Metadata, MLflow store and pushed models live here
# Monitoring (pipelines/monitoring.py): its pipeline, ML Metadata file and folders under the output directory.
MONITORING_PIPELINE_NAME = "radassist-monitoring"
MONITORING_METADATA_FILE = "monitoring-metadata.sqlite"
PREDICTION_LOG_SUBDIR = "prediction-logs"   # the served models' logging_config filename_prefix (scripts/up.sh)
MONITORING_SUBDIR = "monitoring"            # published reports, read by the portal's Monitoring page
MONITORING_BASELINE_SUBDIR = "monitoring-baselines"  # baseline features, one file per model version and data
DATA_VERSIONS_SUBDIR = "data-versions"      # `radassist retrain`: base data + confirmed cases, one folder each
RETRAIN_STAGING_SUBDIR = "retrain-staging"  # its pipeline pushes here; promoted to the model base by rule
DATA_REGISTRY_SUBDIR = "data-registry"      # `radassist data`: the DVC data registry (git), unless configured
DVC_REMOTE_SUBDIR = "dvc-remote"            # its default DVC remote (a folder; s3://... in production)
DATA_CACHE_SUBDIR = "data-cache"            # data pulled by revision for `pipeline run --data-rev`, one per commit

ACCURACY_FLOOR = 0.6                # blessing: official-test accuracy must reach this ...
REGRESSION_TOLERANCE = 0.0          # ... and not fall below the last blessed model's by more than this
NEAR_DUPLICATE_BITS = 50            # of 256 pHash bits: Hamming distance counted as a near copy
MLFLOW_EXPERIMENT = "radassist-training"
MLFLOW_TIMEOUT_SECONDS = 30         # each MLflow REST call (the CLI and Dockerfile.train set the client's variable)

# Kubeflow
KFP_IMAGE = "ghcr.io/radassist/radassist-train:latest"
KFP_PIPELINE_ROOT = "s3://radassist-pipelines/root"
KFP_TIMEOUT_SECONDS = 60.0          # each call to the KFP API (submission)
KFP_SERVICE_ACCOUNT = "radassist-pipeline"              # training runs' pods (IRSA role: infra/aws/pipeline)
KFP_MONITORING_SERVICE_ACCOUNT = "radassist-monitoring"  # the monitoring pipeline's


@dataclasses.dataclass
class PipelineOptions:
    """Every ``create_pipeline`` argument that does not depend on where the pipeline runs, with its default: the
    runners add their environment (pipeline root, ML Metadata) and pass ``arguments()`` on."""

    data_root: str
    model_base: str
    mlflow_tracking_uri: str
    training: dict = dataclasses.field(default_factory=dict)   # TrainingConfig / SegmentationConfig overrides
    task: str = "classifier"
    pipeline_name: str = ""         # "" = the task's: PIPELINE_NAME or SEGMENTER_PIPELINE_NAME (same for the two below)
    model_name: str = ""
    accuracy_floor: float = ACCURACY_FLOOR
    dice_floor: float = DICE_FLOOR
    regression_tolerance: float = REGRESSION_TOLERANCE
    near_distance: int = NEAR_DUPLICATE_BITS
    mlflow_experiment: str = ""
    beam_pipeline_args: list[str] | None = None
    # What the data is, recorded in the model's info file, ML Metadata and MLflow: the DVC revision (registry, rev,
    # md5) and the retraining data version's id when there is one; empty for untracked data.
    data_version: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")
        segmenter = self.task == "segmenter"
        self.pipeline_name = self.pipeline_name or (SEGMENTER_PIPELINE_NAME if segmenter else PIPELINE_NAME)
        self.model_name = self.model_name or (SEGMENTER_MODEL_NAME if segmenter else MODEL_NAME)
        self.mlflow_experiment = self.mlflow_experiment or (SEGMENTER_MLFLOW_EXPERIMENT if segmenter
                                                            else MLFLOW_EXPERIMENT)

    def arguments(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
