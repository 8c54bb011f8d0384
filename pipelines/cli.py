"""The pipeline's commands: ``radassist pipeline run`` (LocalDagRunner) and ``radassist pipeline compile`` (KFP).

This entry point owns the environment the runners read: the data-folder policy, $RADASSIST_OUTPUT_DIR,
$RADASSIST_MODEL_BASE, $MLFLOW_TRACKING_URI; the runners and ``create_pipeline`` take arguments only.
"""

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


def cmd_run(args) -> int:
    from tfx import v1 as tfx

    from pipelines.local_runner import LocalSettings, build
    from radassist.progress import PipelineProgress
    from radassist.summary import format_summary, read_summary

    # MLflow's client takes its per-call timeout from the environment only (the registrar has no other way).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(configs.MLFLOW_TIMEOUT_SECONDS))
    data_root, is_sample = resolve_data_dir(args.data, task=args.task)
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
    output_dir = args.output or os.environ.get("RADASSIST_OUTPUT_DIR") or os.path.join(REPO_ROOT, configs.OUTPUT_SUBDIR)
    options = configs.PipelineOptions(
        data_root=data_root,
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
            run_id = submit(path, args.submit, schedule=args.schedule, timeout=args.kfp_timeout)
        except (TimeoutError, OSError) as error:
            raise SystemExit(f"error: submitting to {args.submit}: {error}") from error
        print(f"{'recurring run' if args.schedule else 'run'} created: {run_id}")
    return 0


def _add_training_flags(parser) -> None:
    parser.add_argument("--task", choices=configs.TASKS, default="classifier",
                        help="which model: the classifier (radassist, default) or the nodule segmenter (radassist-seg)")
    parser.add_argument("--seed", type=int, help="training seed (default 0)")
    parser.add_argument("--recipe", choices=["cpu", "full"], help="cpu (default) or full fine-tuning (GPU)")
    parser.add_argument("--weights", help="VGG16 weights: hed (default, offline; $RADASSIST_HED_WEIGHTS names "
                                          "another copy of HED's file), imagenet, or a file path")
    parser.add_argument("--training-json", help="JSON object of TrainingConfig (SegmentationConfig) overrides")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: a smoke run, not a model")
    parser.add_argument("--beam-arg", action="append", help="Beam pipeline argument (repeatable)")


def add_commands(areas) -> None:
    """Registers ``pipeline run`` and ``pipeline compile`` on the dispatcher's subparsers."""
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
    _add_training_flags(compile_)
    compile_.set_defaults(func=cmd_compile, filter_stderr=True)
