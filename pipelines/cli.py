"""The pipelines' commands: ``radassist pipeline run`` (LocalDagRunner), ``radassist pipeline compile`` (KFP) and
``radassist monitor`` (the monitoring pipeline, locally or compiled for KFP) and ``radassist retrain`` (the training
pipeline on base data plus doctor-confirmed cases, promoted by rule).

This entry point owns the environment the runners read: the data-folder policy, $RADASSIST_OUTPUT_DIR,
$RADASSIST_MODEL_BASE, $MLFLOW_TRACKING_URI; the runners and ``create_pipeline`` take arguments only.
"""

import argparse
import json
import os
import sys

from pipelines import configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DataDirError(SystemExit):
    """No usable data directory; exits with a message instead of a stack trace."""


DATA_FOLDERS = {  # task -> (environment variable, ./data folder, committed sample)
    "classifier": ("RADASSIST_DATA_DIR", configs.DATA_SUBDIR, configs.SAMPLE_DATA_SUBDIR),
    "segmenter": ("RADASSIST_SEG_DATA_DIR", configs.SEGMENTER_DATA_SUBDIR, configs.SEGMENTER_SAMPLE_DATA_SUBDIR),
}


def resolve_data_dir(explicit: str | None, repo_root: str = REPO_ROOT, task: str = "classifier") -> tuple[str, bool]:
    """--data, else the task's variable ($RADASSIST_DATA_DIR, $RADASSIST_SEG_DATA_DIR), else its ./data folder
    (data/chest-ct, data/lidc-crops), else its committed sample (flagged True)."""
    variable, folder, sample = DATA_FOLDERS[task]
    candidate = explicit or os.environ.get(variable)
    if candidate:
        if not os.path.isdir(candidate):
            raise DataDirError(f"data directory not found: {candidate}")
        return os.path.abspath(candidate), False
    default = os.path.join(repo_root, folder)
    if os.path.isdir(default):
        return default, False
    return os.path.join(repo_root, sample), True


def training_options(args) -> dict:
    """The task's training-config overrides from the training flags (--training-json, then --seed, --recipe,
    --weights, --quick); $RADASSIST_HED_WEIGHTS names HED's weights file when --weights does not."""
    training = json.loads(args.training_json) if args.training_json else {}
    segmenter = getattr(args, "task", "classifier") == "segmenter"
    if args.seed is not None:
        training["seed"] = args.seed
    if args.recipe:
        training["recipe"] = args.recipe
    weights = args.weights or os.environ.get("RADASSIST_HED_WEIGHTS")
    if segmenter:
        unet = training.setdefault("unet", {})
        if weights and (args.weights or "weights" not in unet):
            unet["weights"] = weights
        if not unet:
            training.pop("unet")
    elif args.weights or (weights and "weights" not in training):
        training["weights"] = weights
    if args.quick:
        training.update(dict(epochs=1, window=64) if segmenter else
                        dict(augmented_views=2, head_epochs=3, finetune_epochs=1))
    return training


def output_folder(args) -> str:
    """The output directory, absolute: --output, else $RADASSIST_OUTPUT_DIR, else ./outputs in the repository."""
    return os.path.abspath(args.output or os.environ.get("RADASSIST_OUTPUT_DIR")
                           or os.path.join(REPO_ROOT, configs.OUTPUT_SUBDIR))


DATA_NAMES = {task: os.path.basename(DATA_FOLDERS[task][1]) for task in DATA_FOLDERS}  # tracked folder per task


def registry_location(args, output_dir: str) -> str:
    """The data registry: --data-registry, else $RADASSIST_DATA_REGISTRY, else <output>/data-registry."""
    return (getattr(args, "data_registry", None) or os.environ.get("RADASSIST_DATA_REGISTRY")
            or os.path.join(os.path.abspath(output_dir), configs.DATA_REGISTRY_SUBDIR))


def pulled_revision(registry: str, rev: str, name: str, output_dir: str) -> dict:
    """The data root of ``name`` at revision ``rev`` (a local registry's is pulled once per commit into
    <output>/data-cache/; a remote registry's names may move, so it is pulled each time) and the revision the model
    will record."""
    import shutil

    from components import data_registry

    try:
        found = None if data_registry.is_url(registry) else data_registry.DataRegistry(registry).describe(name, rev)
        commit = found.rev if found else rev
        root = os.path.join(os.path.abspath(output_dir), configs.DATA_CACHE_SUBDIR, f"{name}-{commit}")
        if found and os.path.isdir(root):
            revision = found  # pulled before: the same files
        else:
            shutil.rmtree(root, ignore_errors=True)
            revision = data_registry.pull(registry, rev, root, name)
    except data_registry.DataRegistryError as error:
        raise SystemExit(f"data: {error}") from error
    print(f"data {name} at {revision.rev[:12]} of {registry}", file=sys.stderr)
    return {"root": root, "data_version": revision.to_dict()}


def training_data(args, output_dir: str) -> tuple[str, bool, dict]:
    """``pipeline run``'s data root, whether it is the committed sample, and the data version the model records:
    --data-rev's registry revision (real data: never the sample's banner or blessing floor), else the data-folder
    policy (resolve_data_dir; untracked)."""
    if not args.data_rev:
        return *resolve_data_dir(args.data, task=args.task), {}
    if args.data:
        raise SystemExit("pipeline run: give --data or --data-rev, not both")
    revision = pulled_revision(registry_location(args, output_dir), args.data_rev,
                               args.data_name or DATA_NAMES[args.task], output_dir)
    return revision["root"], False, revision["data_version"]


def cmd_run(args) -> int:
    from tfx import v1 as tfx

    from pipelines.local_runner import LocalSettings, build
    from radassist.progress import PipelineProgress
    from radassist.summary import format_summary, read_summary

    # MLflow's client takes its per-call timeout from the environment only (the registrar has no other way).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(configs.MLFLOW_TIMEOUT_SECONDS))
    output_dir = output_folder(args)
    data_root, is_sample, data_version = training_data(args, output_dir)
    if is_sample:
        banner = "!" * 100
        if args.task == "segmenter":
            what = ("the 42-crop LIDC-IDRI SAMPLE", "segmenter", "LIDC-IDRI nodule crops (MANIFEST.csv, images/, "
                    "masks/)\n  into data/lidc-crops", "RADASSIST_SEG_DATA_DIR")
        else:
            what = ("the 120-image SAMPLE", "classifier", "Kaggle 'Chest CT-Scan images' set\n  into data/chest-ct "
                    "(train/valid/test/<class>/...)", "RADASSIST_DATA_DIR")
        print(f"{banner}\n  NO DATASET CONFIGURED: training on {what[0]} in {data_root}.\n"
              f"  The model will be a demo, not a usable {what[1]}. Put the {what[2]} or pass --data / set "
              f"{what[3]}.\n{banner}", file=sys.stderr)
    options = configs.PipelineOptions(
        data_root=data_root,
        data_version=data_version,
        model_base=args.model_base or os.environ.get("RADASSIST_MODEL_BASE", ""),
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        training=training_options(args),
        task=args.task,
        accuracy_floor=args.accuracy_floor if args.accuracy_floor is not None else (0.0 if is_sample else
                                                                                    configs.ACCURACY_FLOOR),
        dice_floor=args.dice_floor if args.dice_floor is not None else (0.0 if is_sample else configs.DICE_FLOOR),
        beam_pipeline_args=args.beam_arg,
    )
    settings = LocalSettings(options, output_dir)
    print(f"data {options.data_root}\noutput {settings.output_dir}\nmodels {options.model_base}\n"
          f"MLflow {options.mlflow_tracking_uri}", file=sys.stderr)
    pipeline = build(settings)
    with PipelineProgress(settings.metadata_path, [c.id for c in pipeline.components]):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    print(format_summary(read_summary(settings.metadata_path)))
    return 0


def cmd_compile(args) -> int:
    from pipelines.kubeflow_runner import compile_pipeline, submit

    options = configs.PipelineOptions(data_root=args.data or "s3://radassist-data/"
                                      + os.path.basename(DATA_FOLDERS[args.task][1]),
                                      model_base=args.model_base, mlflow_tracking_uri=args.mlflow_tracking_uri,
                                      training=training_options(args), task=args.task,
                                      beam_pipeline_args=args.beam_arg)
    path = compile_pipeline(output_file=args.output, image=args.image, pipeline_root=args.pipeline_root,
                            options=options)
    print(f"wrote {path}")
    if args.submit:
        try:
            run_id = submit(path, args.submit, schedule=args.schedule, timeout=args.kfp_timeout,
                            service_account=args.service_account)
        except (TimeoutError, OSError) as error:
            raise SystemExit(f"error: submitting to {args.submit}: {error}") from error
        print(f"{'recurring run' if args.schedule else 'run'} created: {run_id}")
    return 0


def monitor_settings(args) -> tuple[dict, str]:
    """``create_monitoring_pipeline``'s arguments from the monitor's flags and the environment (the output folder's
    defaults: prediction-logs/, models/, monitoring/), and the output folder. Compiled for KFP, --data is a path
    as the cluster sees it (s3://...), taken as given."""
    output_dir = output_folder(args)
    model_base = args.model_base or os.environ.get("RADASSIST_MODEL_BASE") or os.path.join(output_dir, "models")
    data_root = args.data if args.compile and args.data else resolve_data_dir(args.data)[0]
    thresholds = json.loads(args.thresholds_json) if args.thresholds_json else {}
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + os.path.join(output_dir, "mlflow", "mlflow.db")
    return {
        "pipeline_name": configs.MONITORING_PIPELINE_NAME,
        "pipeline_root": os.path.join(output_dir, "tfx", configs.MONITORING_PIPELINE_NAME),
        "log_prefix": args.logs or os.environ.get("RADASSIST_PREDICTION_LOG_DIR")
        or os.path.join(output_dir, configs.PREDICTION_LOG_SUBDIR),
        "model_name": args.model,
        "model_dir": os.path.join(model_base, args.model),
        "data_root": data_root,
        "window": args.window,
        "thresholds": thresholds,
        "baseline_cache_dir": os.path.join(output_dir, configs.MONITORING_BASELINE_SUBDIR),
        "reference_splits": args.reference_splits,
        "publish_dir": args.publish_dir or os.environ.get("RADASSIST_MONITORING_DIR")
        or os.path.join(output_dir, configs.MONITORING_SUBDIR),
        "mlflow_tracking_uri": tracking,
        "webhook_url": os.environ.get("RADASSIST_MONITOR_WEBHOOK_URL", ""),
        "pushgateway_url": os.environ.get("RADASSIST_PUSHGATEWAY_URL", ""),
        "feedback": _feedback_path(args),
    }, output_dir


def _feedback_path(args) -> str:
    """The feedback export the window's labelled calls come from (--feedback, else $RADASSIST_FEEDBACK_CSV); a local
    path must exist (a typo must not pass for a window nobody signed), an s3:// one is read when the run starts."""
    path = args.feedback or os.environ.get("RADASSIST_FEEDBACK_CSV", "")
    if path and "://" not in path:
        if not os.path.isfile(path):
            raise SystemExit(f"monitor: feedback export not found: {path}")
        path = os.path.abspath(path)
    return path


def cmd_monitor(args) -> int:
    from tfx import v1 as tfx

    from components.monitoring import logs
    from pipelines.monitoring import create_monitoring_pipeline, latest_report
    from radassist.progress import PipelineProgress

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(configs.MLFLOW_TIMEOUT_SECONDS))
    try:
        window = logs.Window.parse(args.window)
    except ValueError as error:
        raise SystemExit(f"monitor: {error}") from error
    settings, output_dir = monitor_settings(args)
    if args.compile:
        return _compile_monitoring(args, settings)
    # A duration is fixed here, so the run (and its record in ML Metadata) names the exact window it read.
    settings["window"] = f"{window.start.isoformat()}/{window.end.isoformat()}"
    tracking = settings["mlflow_tracking_uri"]
    if tracking.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(tracking.removeprefix("sqlite:///")), exist_ok=True)
    metadata_path = os.path.join(output_dir, "tfx", configs.MONITORING_METADATA_FILE)
    os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
    pipeline = create_monitoring_pipeline(
        **settings, beam_pipeline_args=args.beam_arg or ["--direct_num_workers=1"],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    print(f"window {window.start:%Y-%m-%d %H:%M} - {window.end:%Y-%m-%d %H:%M} UTC\nlogs {settings['log_prefix']}\n"
          f"model {settings['model_dir']}\npublished to {settings['publish_dir']}", file=sys.stderr)
    with PipelineProgress(metadata_path, [c.id for c in pipeline.components]):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    summary, folder = latest_report(metadata_path)
    print(f"{summary['model']} {summary['window']['label']}: {summary['images']} images: {summary['verdict']}"
          f"\nreport: {os.path.join(folder, 'report.html')}")
    return EXIT_DRIFT if summary["alert"] and args.fail_on_drift else 0


EXIT_DRIFT = 3  # ``monitor --fail-on-drift``: the window drifted (cron mails it; 1 stays "the run failed")


def _compile_monitoring(args, settings: dict) -> int:
    from pipelines.kubeflow_runner import compile_monitoring, submit

    path = compile_monitoring(output_file=args.compile, image=args.image, pipeline_root=args.pipeline_root,
                              settings={**settings, "window": args.window,
                                        "baseline_cache_dir": args.baseline_cache
                                        or settings["baseline_cache_dir"],
                                        # read in the cluster when each run starts (a Secret's env), not baked in
                                        "webhook_url": "env:RADASSIST_MONITOR_WEBHOOK_URL",
                                        "pushgateway_url": "env:RADASSIST_PUSHGATEWAY_URL"})
    print(f"wrote {path}")
    if args.submit:
        try:
            run_id = submit(path, args.submit, schedule=args.schedule, timeout=args.kfp_timeout,
                            experiment=configs.MONITORING_PIPELINE_NAME, service_account=args.service_account,
                            run_name=f"{configs.MONITORING_PIPELINE_NAME}-{'schedule' if args.schedule else 'run'}")
        except (TimeoutError, OSError) as error:
            raise SystemExit(f"error: submitting to {args.submit}: {error}") from error
        print(f"{'recurring run' if args.schedule else 'run'} created: {run_id}")
    return 0


def _add_monitor_command(areas) -> None:
    monitor = areas.add_parser("monitor", help="drift of a window of the served model's traffic (TFX)",
                               description="Runs the monitoring pipeline over a window of the model server's "
                               "prediction logs: features, TFDV statistics, drift against the model's training "
                               "images; publishes the report for the portal's Monitoring page.")
    monitor.add_argument("--window", required=True, help="START/END (ISO 8601, UTC) or a duration back from now: "
                                                         "24h, 7d, 90m")
    monitor.add_argument("--model", default=configs.MODEL_NAME, help="the served model's name")
    monitor.add_argument("--logs", help="the prediction logs' filename_prefix, local or s3:// (default: "
                                        "$RADASSIST_PREDICTION_LOG_DIR or <output>/prediction-logs)")
    monitor.add_argument("--data", help="the data root the model was trained on (default as `pipeline run`)")
    monitor.add_argument("--reference-splits", default="test",
                         help="the data root's splits the window is compared with (comma-separated; default test: the "
                              "frozen official test split, held out from training and calibration)")
    monitor.add_argument("--output", help="output directory (default: $RADASSIST_OUTPUT_DIR or ./outputs)")
    monitor.add_argument("--model-base", help="the pushed models (default: $RADASSIST_MODEL_BASE or <output>/models)")
    monitor.add_argument("--publish-dir", help="where reports are published for the portal (default: "
                                               "$RADASSIST_MONITORING_DIR or <output>/monitoring)")
    monitor.add_argument("--thresholds-json", help="JSON object of drift threshold overrides (components/monitoring/"
                                                   "drift.Thresholds)")
    monitor.add_argument("--feedback", help="the doctors' readings: a CSV of `radassist feedback export --out` "
                                            "(local or s3://; default $RADASSIST_FEEDBACK_CSV): the window's labelled "
                                            "calls are scored with TFMA")
    monitor.add_argument("--fail-on-drift", action="store_true", help=f"exit {EXIT_DRIFT} when the window drifted")
    monitor.add_argument("--beam-arg", action="append", help="Beam pipeline argument (repeatable)")
    monitor.add_argument("--compile", metavar="FILE", help="compile for Kubeflow instead of running (the window "
                                                           "stays a duration, resolved when each run starts)")
    monitor.add_argument("--image", default=configs.KFP_IMAGE)
    monitor.add_argument("--pipeline-root", default=configs.KFP_PIPELINE_ROOT)
    monitor.add_argument("--baseline-cache", help="with --compile: the baseline cache as the cluster sees it")
    monitor.add_argument("--submit", metavar="HOST", help="with --compile: KFP API host to create a run on")
    monitor.add_argument("--schedule", metavar="CRON", help="with --submit: a recurring run (6-field cron)")
    monitor.add_argument("--kfp-timeout", type=float, default=configs.KFP_TIMEOUT_SECONDS)
    monitor.add_argument("--service-account", default=configs.KFP_MONITORING_SERVICE_ACCOUNT,
                         help="with --submit: the Kubernetes service account its pods run as (its IAM role)")
    monitor.set_defaults(func=cmd_monitor, filter_stderr=True)


def cmd_retrain(args) -> int:
    """Builds the data version (base + confirmed cases), runs the training pipeline on it with pushes going to a
    staging folder, and promotes the candidate to the served model base only by the promotion rule."""
    import shutil

    import tensorflow as tf
    from tfx import v1 as tfx

    from components import retraining
    from components.monitoring.baseline import Predictor, version_path
    from pipelines.local_runner import LocalSettings, build
    from radassist.progress import PipelineProgress
    from radassist.summary import read_summary

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(configs.MLFLOW_TIMEOUT_SECONDS))
    base_root, _ = resolve_data_dir(args.data)
    output_dir = output_folder(args)
    model_base = os.path.abspath(args.model_base or os.environ.get("RADASSIST_MODEL_BASE")
                                 or os.path.join(output_dir, "models"))
    cases, counts = retraining.read_confirmed(args.feedback, args.images, base_root)
    training_cases, held = retraining.split_holdout(cases, args.holdout_share)
    if not training_cases:
        raise SystemExit(f"retrain: no confirmed case to learn from ({counts})")
    version = retraining.build_data_version(base_root, training_cases, held,
                                            os.path.join(output_dir, configs.DATA_VERSIONS_SUBDIR))
    print(f"data version {version.id}: base {version.manifest['base_counts']} + {len(training_cases)} confirmed "
          f"training cases, {len(held)} held back ({counts})", file=sys.stderr)
    data_version = {"id": version.id, **tracked_version(args, output_dir, version, len(training_cases))}
    staging = os.path.join(output_dir, configs.RETRAIN_STAGING_SUBDIR)
    options = configs.PipelineOptions(
        data_root=version.root, data_version=data_version, model_base=staging,
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        training=training_options(args), accuracy_floor=args.accuracy_floor if args.accuracy_floor is not None
        else configs.ACCURACY_FLOOR, regression_tolerance=args.regression_tolerance, beam_pipeline_args=args.beam_arg)
    settings = LocalSettings(options, output_dir)
    pipeline = build(settings)
    with PipelineProgress(settings.metadata_path, [c.id for c in pipeline.components]):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    summary = read_summary(settings.metadata_path)
    images, labels = retraining.holdout_images(version)

    def holdout_accuracy(path: str | None) -> float | None:
        if path is None or not labels:
            return None
        names = Predictor(path).outputs(images)["class_name"]
        return retraining.accuracy([n.decode() for n in names], labels)

    model_dir = os.path.join(model_base, options.model_name)
    try:
        served = version_path(model_dir)[0]
    except (FileNotFoundError, tf.errors.NotFoundError):
        served = None  # nothing served yet
    candidate = summary["pushed_destination"] if summary["pushed"] else None
    # The round's model on the held-back cases, whether or not the Evaluator blessed it (the record says both).
    candidate_accuracy = holdout_accuracy(candidate or summary.get("trained_model"))
    served_accuracy = holdout_accuracy(served)
    promote, reason = retraining.promotion(summary["blessed"] and candidate is not None, candidate_accuracy,
                                           served_accuracy, args.holdout_tolerance)
    record = {"data_version": data_version, "data_root": version.root, "blessed": summary["blessed"],
              "official_test": summary.get("metrics"), "holdout_cases": len(labels),
              "holdout_accuracy": {"candidate": candidate_accuracy, "served": served_accuracy},
              "promoted": promote, "reason": reason, "candidate": candidate, "served_before": served,
              "trained_model": summary.get("trained_model")}
    if promote:
        target = os.path.join(model_dir, os.path.basename(candidate.rstrip("/")))
        shutil.copytree(candidate, target + ".partial")
        with open(os.path.join(target + ".partial", retraining.DATA_VERSION_INFO), "w", encoding="utf-8") as handle:
            json.dump({"data_version": version.id, "dvc": data_version, "manifest": version.manifest}, handle,
                      indent=2)
        os.replace(target + ".partial", target)  # whole, or not at all: the server hot-reloads it
        record["promoted_to"] = target
    print(json.dumps(record, indent=2, default=str))
    return 0 if promote else EXIT_NOT_PROMOTED


def tracked_version(args, output_dir: str, version, confirmed: int) -> dict:
    """The data version as a revision of the data registry (its DVC revision, which the model records), when a
    registry is configured or exists at the default place; {} (untracked) otherwise."""
    from components import data_registry

    configured = args.data_registry or os.environ.get("RADASSIST_DATA_REGISTRY")
    registry = data_registry.DataRegistry(registry_location(args, output_dir))
    if not configured and not registry.exists:
        return {}
    try:
        revision = registry.add(version.root, DATA_NAMES["classifier"],
                                f"retraining data version {version.id}: the base + {confirmed} confirmed cases")
    except data_registry.DataRegistryError as error:
        raise SystemExit(f"retrain: tracking the data version: {error}") from error
    print(f"data version {version.id} is revision {revision.rev[:12]} of {registry.root}", file=sys.stderr)
    return revision.to_dict()


EXIT_NOT_PROMOTED = 4  # ``retrain``: the candidate was trained but not pushed (the rule said no)


def _add_retrain_command(areas) -> None:
    retrain = areas.add_parser("retrain", help="train on the base data plus doctor-confirmed cases; push only if "
                                               "no worse", description=cmd_retrain.__doc__)
    retrain.add_argument("--feedback", required=True, help="labels CSV of `radassist feedback export --out`")
    retrain.add_argument("--images", required=True, help="images folder of `radassist feedback export --images`")
    retrain.add_argument("--data", help="the base data root (default as `pipeline run`)")
    retrain.add_argument("--output", help="output directory (default: $RADASSIST_OUTPUT_DIR or ./outputs): its ML "
                                          "Metadata holds the last blessed model; data versions go under it")
    retrain.add_argument("--model-base", help="the served models (default: $RADASSIST_MODEL_BASE or <output>/models)")
    retrain.add_argument("--holdout-share", type=float, default=0.2, help="share of confirmed cases held back")
    retrain.add_argument("--data-registry", help="track the data version in this DVC data registry (default: "
                                                 "$RADASSIST_DATA_REGISTRY, or <output>/data-registry if it exists)")
    retrain.add_argument("--holdout-tolerance", type=float, default=0.0,
                         help="how much lower than the served model's the held-back accuracy may be")
    retrain.add_argument("--regression-tolerance", type=float, default=configs.REGRESSION_TOLERANCE,
                         help="the Evaluator's: how much lower than the last blessed model's the test accuracy may be")
    retrain.add_argument("--accuracy-floor", type=float, help=f"blessing floor (default {configs.ACCURACY_FLOOR})")
    _add_training_flags(retrain, task=False)
    retrain.set_defaults(func=cmd_retrain, filter_stderr=True, task="classifier")


def cmd_data(args) -> int:
    """``radassist data init|add|pull|log``: the DVC data registry."""
    from components import data_registry
    from radassist.contract import MODEL_INFO_PATH

    output_dir = output_folder(args)
    location = registry_location(args, output_dir)
    registry = data_registry.DataRegistry(location)
    try:
        if args.action == "init":
            remote = args.remote or os.environ.get("RADASSIST_DVC_REMOTE") or os.path.join(
                os.path.abspath(output_dir), configs.DVC_REMOTE_SUBDIR)
            registry.init(remote, endpoint_url=args.endpoint_url or "")
            print(f"data registry {registry.root}, DVC remote {remote}")
        elif args.action == "add":
            revision = registry.add(args.data, args.name, args.message or "")
            print(json.dumps(revision.to_dict(), indent=2))
        elif args.action == "log":
            for entry in registry.log(args.name):
                print(f"{entry['rev']}  {entry['date']}  {entry['message']}")
        else:  # pull: by revision, or the revision a model recorded
            name, rev = args.name, args.rev
            if args.model:
                with open(os.path.join(args.model, MODEL_INFO_PATH), encoding="utf-8") as handle:
                    recorded = json.load(handle).get("data_version") or {}
                if not recorded.get("rev"):
                    raise SystemExit(f"data pull: {args.model} records no data revision (trained on untracked "
                                     "data)")
                location, name, rev = args.data_registry or recorded["registry"], recorded["name"], recorded["rev"]
            elif not rev:
                raise SystemExit("data pull: give --rev REV or --model MODEL_VERSION_DIR")
            revision = data_registry.pull(location, rev, args.out, name)
            print(json.dumps({**revision.to_dict(), "out": os.path.abspath(args.out)}, indent=2))
    except data_registry.DataRegistryError as error:
        raise SystemExit(f"data {args.action}: {error}") from error
    return 0


def _add_data_command(areas) -> None:
    data = areas.add_parser("data", help="data versions with DVC: the registry training runs name and models record",
                            description="The DVC data registry: a git repository whose DVC files track the training "
                            "data (and retraining rounds' confirmed cases); files in a DVC remote (a folder, or S3).")
    actions = data.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-registry", help="the registry (default: $RADASSIST_DATA_REGISTRY or "
                                                "<output>/data-registry)")
    common.add_argument("--output", help="output directory for the defaults (default: $RADASSIST_OUTPUT_DIR or "
                                         "./outputs)")
    common.add_argument("--name", default=DATA_NAMES["classifier"], help="the tracked folder (default chest-ct)")
    init = actions.add_parser("init", parents=[common], help="create the registry")
    init.add_argument("--remote", help="DVC remote: a folder or s3://bucket/prefix (default: $RADASSIST_DVC_REMOTE "
                                       "or <output>/dvc-remote)")
    init.add_argument("--endpoint-url", help="an S3 endpoint other than AWS's (MinIO, a test server)")
    add = actions.add_parser("add", parents=[common], help="track a data folder's current contents as a new revision")
    add.add_argument("--data", required=True, help="the data root to track (copied into the registry)")
    add.add_argument("-m", "--message", help="the revision's message")
    pull = actions.add_parser("pull", parents=[common], help="restore the data of a revision (or of a model)")
    pull.add_argument("--rev", help="a git commit, branch or tag of the registry")
    pull.add_argument("--model", help="a pushed model version's folder: pull the revision it was trained on")
    pull.add_argument("--out", required=True, help="a new folder for the data")
    actions.add_parser("log", parents=[common], help="the revisions of the tracked folder, newest first")
    data.set_defaults(func=cmd_data)


def _add_training_flags(parser, task: bool = True) -> None:
    if task:
        parser.add_argument("--task", choices=configs.TASKS, default="classifier",
                            help="which model: the classifier (radassist, default) or the nodule segmenter "
                                 "(radassist-seg)")
    parser.add_argument("--seed", type=int, help="training seed (default 0)")
    parser.add_argument("--recipe", choices=["cpu", "full"], help="cpu (default) or full fine-tuning (GPU)")
    parser.add_argument("--weights", help="VGG16 weights: hed (default, offline; $RADASSIST_HED_WEIGHTS names "
                                          "another copy of HED's file), imagenet, or a file path")
    parser.add_argument("--training-json", help="JSON object of TrainingConfig (SegmentationConfig) overrides")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: a smoke run, not a model")
    parser.add_argument("--beam-arg", action="append", help="Beam pipeline argument (repeatable)")


def add_commands(areas) -> None:
    """Registers ``pipeline run``, ``pipeline compile``, ``monitor`` and ``retrain`` on the dispatcher's
    subparsers."""
    pipeline = areas.add_parser("pipeline", help="the TFX training pipeline").add_subparsers(dest="action",
                                                                                               required=True)
    run = pipeline.add_parser("run", help="run locally (LocalDagRunner, SQLite ML Metadata)")
    run.add_argument("--data", help="classifier: data root with train/valid/test/<class>/ (default: "
                                    "$RADASSIST_DATA_DIR, ./data/chest-ct, else the bundled sample); segmenter: the "
                                    "nodule crops' folder (default: $RADASSIST_SEG_DATA_DIR, ./data/lidc-crops, "
                                    "else the bundled sample)")
    run.add_argument("--output", help="output directory (default: $RADASSIST_OUTPUT_DIR or ./outputs)")
    run.add_argument("--model-base", help="where blessed models are pushed (default: <output>/models)")
    run.add_argument("--accuracy-floor", type=float, help=f"blessing floor (default {configs.ACCURACY_FLOOR})")
    run.add_argument("--dice-floor", type=float, help=f"the segmenter's blessing floor (default {configs.DICE_FLOOR})")
    run.add_argument("--data-rev", help="train on the data registry's revision REV (a git commit, branch or tag) "
                                        "instead of --data; the model records it")
    run.add_argument("--data-registry", help="the DVC data registry (default: $RADASSIST_DATA_REGISTRY or "
                                             "<output>/data-registry); a local clone or a git URL")
    run.add_argument("--data-name", help="the tracked folder (default: chest-ct, the segmenter's lidc-crops)")
    _add_training_flags(run)
    run.set_defaults(func=cmd_run, filter_stderr=True)

    compile_ = pipeline.add_parser("compile", help="compile for Kubeflow Pipelines (KFP v2), optionally submit")
    compile_.add_argument("--output", default="radassist_pipeline.json")
    compile_.add_argument("--image", default=configs.KFP_IMAGE, help="container image built from Dockerfile.train")
    compile_.add_argument("--pipeline-root", default=configs.KFP_PIPELINE_ROOT)
    compile_.add_argument("--data", help="default: s3://radassist-data/chest-ct (the segmenter's: .../lidc-crops)")
    compile_.add_argument("--model-base", default="s3://radassist-models")
    compile_.add_argument("--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                                          "http://mlflow.radassist:5000"))
    compile_.add_argument("--submit", metavar="HOST", help="KFP API host to create a run on")
    compile_.add_argument("--schedule", metavar="CRON", help="with --submit: a recurring run (6-field cron)")
    compile_.add_argument("--kfp-timeout", type=float, default=configs.KFP_TIMEOUT_SECONDS,
                          help="seconds each call to the KFP API may take")
    compile_.add_argument("--service-account", default=configs.KFP_SERVICE_ACCOUNT,
                          help="with --submit: the Kubernetes service account its pods run as (its IAM role)")
    _add_training_flags(compile_)
    compile_.set_defaults(func=cmd_compile, filter_stderr=True)
    _add_monitor_command(areas)
    _add_retrain_command(areas)
    _add_data_command(areas)
