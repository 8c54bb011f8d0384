"""Kubeflow Pipelines runner: compiles the same ``create_pipeline`` to a KFP v2 spec, and submits it."""

import json
import os
import tempfile
import threading

from tfx import v1 as tfx

from pipelines import configs
from pipelines.pipeline import create_pipeline


def compile_pipeline(*, output_file: str, image: str, pipeline_root: str,
                     options: configs.PipelineOptions) -> str:
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
    runner.run(create_pipeline(**options.arguments(), pipeline_root=pipeline_root))
    return os.path.join(output_dir, filename)


def compile_monitoring(*, output_file: str, image: str, pipeline_root: str, settings: dict) -> str:
    """The monitoring pipeline's PipelineJob JSON (``settings``: create_monitoring_pipeline's arguments as the
    cluster sees them; the window a duration, resolved when each run starts)."""
    from pipelines.monitoring import create_monitoring_pipeline

    output_dir, filename = os.path.split(os.path.abspath(output_file))
    os.makedirs(output_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir, output_filename=filename)
    runner.run(create_monitoring_pipeline(**{**settings, "pipeline_root": pipeline_root}))
    return os.path.join(output_dir, filename)


def pipeline_spec(job_file: str) -> dict:
    """The ``pipelineSpec`` part of TFX's PipelineJob JSON: what kfp.Client accepts as a package."""
    with open(job_file) as handle:
        job = json.load(handle)
    return job["pipelineSpec"]


def _within(seconds: float, what: str, function):
    """``function()`` within ``seconds``, else TimeoutError. kfp.Client has no timeout of its own (its constructor
    alone polls the cluster's healthz five times without one), so the call runs in a daemon thread that is
    abandoned when the deadline passes."""
    outcome = {}

    def call():
        try:
            outcome["value"] = function()
        except Exception as error:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=call, name="kfp-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what}: no answer within {seconds:g} s (it may still complete; check the KFP UI)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def submit(job_file: str, host: str, *, schedule: str | None = None, experiment: str = configs.PIPELINE_NAME,
           run_name: str | None = None, timeout: float = configs.KFP_TIMEOUT_SECONDS, client_factory=None,
           service_account: str = configs.KFP_SERVICE_ACCOUNT) -> str:
    """Creates a run (or, with a 6-field cron ``schedule``, a recurring run) on a KFP cluster, its pods under
    ``service_account`` (the IAM role of that service account: infra/aws/pipeline); returns its id. The whole
    submission may take ``timeout`` seconds (TimeoutError after that)."""
    import kfp  # imported here: only submission needs the KFP client

    factory = client_factory or kfp.Client
    return _within(timeout, f"the KFP API at {host}",
                   lambda: _submit(factory(host=host), job_file, schedule, experiment, run_name, service_account))


def _submit(client, job_file: str, schedule: str | None, experiment: str, run_name: str | None,
            service_account: str) -> str:
    name = run_name or f"{configs.PIPELINE_NAME}-{'schedule' if schedule else 'run'}"
    with tempfile.TemporaryDirectory() as tmp:
        package = os.path.join(tmp, "pipeline.json")
        with open(package, "w") as handle:
            json.dump(pipeline_spec(job_file), handle)
        experiment_id = client.create_experiment(name=experiment).experiment_id
        if schedule:
            job = client.create_recurring_run(
                experiment_id=experiment_id, job_name=name, cron_expression=schedule,
                pipeline_package_path=package, enabled=True, service_account=service_account,
            )
            return job.recurring_run_id
        run = client.create_run_from_pipeline_package(
            package, arguments={}, run_name=name, experiment_name=experiment, service_account=service_account
        )
        return run.run_id
