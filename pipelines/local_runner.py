"""Local runner: LocalDagRunner with SQLite ML Metadata under the output directory."""

import dataclasses
import logging
import os

from tfx import v1 as tfx

from pipelines import configs
from pipelines.pipeline import create_pipeline


@dataclasses.dataclass
class LocalSettings:
    """Where a local run reads and writes; every path is derived from ``output_dir`` unless given."""

    data_root: str
    output_dir: str
    model_base: str = ""
    mlflow_tracking_uri: str = ""
    pipeline_name: str = configs.PIPELINE_NAME
    model_name: str = configs.MODEL_NAME
    training: dict = dataclasses.field(default_factory=dict)
    accuracy_floor: float = configs.ACCURACY_FLOOR
    regression_tolerance: float = configs.REGRESSION_TOLERANCE
    near_distance: int = configs.NEAR_DUPLICATE_BITS
    mlflow_experiment: str = configs.MLFLOW_EXPERIMENT
    beam_pipeline_args: list[str] = dataclasses.field(default_factory=lambda: ["--direct_num_workers=1"])

    def __post_init__(self):
        self.output_dir = os.path.abspath(self.output_dir)
        self.data_root = os.path.abspath(self.data_root)
        self.model_base = os.path.abspath(self.model_base or os.path.join(self.output_dir, "models"))
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = "sqlite:///" + os.path.join(self.output_dir, "mlflow", "mlflow.db")

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "tfx", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "tfx", "metadata.sqlite")


def build(settings: LocalSettings) -> tfx.dsl.Pipeline:
    os.makedirs(os.path.dirname(settings.metadata_path), exist_ok=True)
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(settings.mlflow_tracking_uri.removeprefix("sqlite:///")), exist_ok=True)
    return create_pipeline(
        pipeline_name=settings.pipeline_name,
        pipeline_root=settings.pipeline_root,
        data_root=settings.data_root,
        model_base=settings.model_base,
        model_name=settings.model_name,
        training=settings.training,
        accuracy_floor=settings.accuracy_floor,
        regression_tolerance=settings.regression_tolerance,
        near_distance=settings.near_distance,
        mlflow_tracking_uri=settings.mlflow_tracking_uri,
        mlflow_experiment=settings.mlflow_experiment,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            settings.metadata_path
        ),
        beam_pipeline_args=settings.beam_pipeline_args,
    )


def run(settings: LocalSettings) -> None:
    """Runs the whole pipeline in this process."""
    logging.getLogger(__name__).info("pipeline root %s", settings.pipeline_root)
    tfx.orchestration.LocalDagRunner().run(build(settings))
