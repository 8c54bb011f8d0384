"""Kubeflow Pipelines runner: compiles the same ``create_pipeline`` to a KFP v2 spec, and submits it."""

import json
import os
import tempfile

from tfx import v1 as tfx

from pipelines import configs
from pipelines.pipeline import create_pipeline

KFP_TIMEOUT_SECONDS = 60


def compile_pipeline(
    *,
    output_file: str,
    image: str,
    pipeline_root: str,
    data_root: str,
    model_base: str,
    mlflow_tracking_uri: str,
    training: dict | None = None,
    beam_pipeline_args: list[str] | None = None,
    pipeline_name: str = configs.PIPELINE_NAME,
    model_name: str = configs.MODEL_NAME,
    accuracy_floor: float = configs.ACCURACY_FLOOR,
    regression_tolerance: float = configs.REGRESSION_TOLERANCE,
    near_distance: int = configs.NEAR_DUPLICATE_BITS,
) -> str:
    """Writes TFX's PipelineJob JSON for KubeflowV2DagRunner to ``output_file``; returns its path.

    Paths (data, model base, pipeline root) are as the cluster sees them: s3://, gs:// or mounted volumes.
    """
    output_dir, filename = os.path.split(os.path.abspath(output_file))
    os.makedirs(output_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir,
        output_filename=filename,
    )
    runner.run(
        create_pipeline(
            pipeline_name=pipeline_name,
            pipeline_root=pipeline_root,
            data_root=data_root,
            model_base=model_base,
            model_name=model_name,
            training=training or {},
            accuracy_floor=accuracy_floor,
            regression_tolerance=regression_tolerance,
            near_distance=near_distance,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=configs.MLFLOW_EXPERIMENT,
            beam_pipeline_args=beam_pipeline_args,
        )
    )
    return os.path.join(output_dir, filename)


def pipeline_spec(job_file: str) -> dict:
    """The ``pipelineSpec`` part of TFX's PipelineJob JSON: what kfp.Client accepts as a package."""
    with open(job_file) as handle:
        job = json.load(handle)
    return job["pipelineSpec"]


def submit(job_file: str, host: str, *, schedule: str | None = None, experiment: str = configs.PIPELINE_NAME,
           run_name: str | None = None, client_factory=None) -> str:
    """Creates a run (or, with a 6-field cron ``schedule``, a recurring run) on a KFP cluster; returns its id."""
    import kfp  # imported here: only submission needs the KFP client

    factory = client_factory or kfp.Client
    client = factory(host=host)
    name = run_name or f"{configs.PIPELINE_NAME}-{'schedule' if schedule else 'run'}"
    with tempfile.TemporaryDirectory() as tmp:
        package = os.path.join(tmp, "pipeline.json")
        with open(package, "w") as handle:
            json.dump(pipeline_spec(job_file), handle)
        experiment_id = client.create_experiment(name=experiment).experiment_id
        if schedule:
            job = client.create_recurring_run(
                experiment_id=experiment_id, job_name=name, cron_expression=schedule,
                pipeline_package_path=package, enabled=True,
            )
            return job.recurring_run_id
        run = client.create_run_from_pipeline_package(
            package, arguments={}, run_name=name, experiment_name=experiment
        )
        return run.run_id
