"""Local runner: LocalDagRunner with SQLite ML Metadata under the output directory."""

import dataclasses
import os

from tfx import v1 as tfx

from pipelines import configs
from pipelines.pipeline import create_pipeline


@dataclasses.dataclass
class LocalSettings:
    """Where a local run reads and writes: ``options`` (data, models, MLflow; relative paths made absolute, the model
    base and MLflow store put under ``output_dir`` when not given) and the output directory for everything else."""

    options: configs.PipelineOptions
    output_dir: str

    def __post_init__(self):
        options = self.options
        self.output_dir = os.path.abspath(self.output_dir)
        options.data_root = os.path.abspath(options.data_root)
        options.model_base = os.path.abspath(options.model_base or os.path.join(self.output_dir, "models"))
        if not options.mlflow_tracking_uri:
            options.mlflow_tracking_uri = "sqlite:///" + os.path.join(self.output_dir, "mlflow", "mlflow.db")
        if options.beam_pipeline_args is None:
            options.beam_pipeline_args = ["--direct_num_workers=1"]

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "tfx", self.options.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "tfx", "metadata.sqlite")


def build(settings: LocalSettings) -> tfx.dsl.Pipeline:
    os.makedirs(os.path.dirname(settings.metadata_path), exist_ok=True)
    tracking = settings.options.mlflow_tracking_uri
    if tracking.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(tracking.removeprefix("sqlite:///")), exist_ok=True)
    return create_pipeline(
        **settings.options.arguments(),
        pipeline_root=settings.pipeline_root,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            settings.metadata_path
        ),
    )
