"""RadAssist's TFX pipelines, one ``create_pipeline`` for both models (``task``):

- classifier: chest-CT slices -> the VGG16 classifier (radassist).
  CtExampleGen -> LeakageAudit -> StatisticsGen -> SchemaGen -> ExampleValidator
               -> Transform -> Trainer -> Evaluator (vs. latest blessed) -> Pusher -> MlflowRegistrar
- segmenter: LIDC-IDRI nodule crops with their readers' masks -> the U-Net segmenter (radassist-seg).
  NoduleExampleGen (patient-wise splits) -> the same components from StatisticsGen on, with the segmenter's
  preprocessing_fn (consensus target) and run_fn, and TFMA's Dice and IoU by nodule size.
"""

import json
import os

from tfx import v1 as tfx

from components import evaluation, features
from components.ct_example_gen import CtExampleGen
from components.leakage_audit import LeakageAudit
from components.mlflow_registry import MlflowRegistrar
from components.segmentation import evaluation as segmentation_evaluation
from components.segmentation import features as segmentation_features
from components.segmentation.example_gen import NoduleExampleGen
from components.trainer.run_fn import DATA_VERSION_KEY, MODEL_NAME_KEY

CLASSIFIER, SEGMENTER = "classifier", "segmenter"
TASKS = (CLASSIFIER, SEGMENTER)
PREPROCESSING_FN = {CLASSIFIER: "components.preprocessing.preprocessing_fn",
                    SEGMENTER: "components.segmentation.preprocessing.preprocessing_fn"}
RUN_FN = {CLASSIFIER: "components.trainer.run_fn.run_fn", SEGMENTER: "components.segmentation.run_fn.run_fn"}
DESCRIPTION = {CLASSIFIER: "RadAssist chest-CT classifier (VGG16)",
               SEGMENTER: "RadAssist lung-nodule segmenter (U-Net on the VGG16 trunk)"}


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    model_base: str,
    model_name: str,
    training: dict,
    accuracy_floor: float,
    regression_tolerance: float,
    near_distance: int,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    task: str = CLASSIFIER,
    dice_floor: float = 0.0,
    data_version: dict | None = None,
    metadata_connection_config=None,
    beam_pipeline_args: list[str] | None = None,
    enable_cache: bool = False,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline; pure (reads no environment). ``training`` holds the task's training-config fields
    (TrainingConfig, SegmentationConfig); ``accuracy_floor`` and ``near_distance`` are the classifier's,
    ``dice_floor`` the segmenter's blessing floor."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if task == CLASSIFIER:
        example_gen = CtExampleGen(input_base=data_root)
        audit = LeakageAudit(examples=example_gen.outputs["examples"], near_distance=near_distance)
        examples, report, first = audit.outputs["audited_examples"], audit.outputs["report"], [example_gen, audit]
        config = evaluation.eval_config(accuracy_floor, regression_tolerance)
        task_params = {"accuracy_floor": accuracy_floor, "near_distance": near_distance,
                       "image_size": features.IMAGE_SIZE}
    else:
        example_gen = NoduleExampleGen(input_base=data_root)
        examples, report, first = example_gen.outputs["examples"], None, [example_gen]
        config = segmentation_evaluation.eval_config(dice_floor, regression_tolerance)
        task_params = {"dice_floor": dice_floor, "crop_size": segmentation_features.CROP_SIZE}

    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN[task],
        materialize=False,  # the pixels are recomputed from bytes by the graph; no 600 kB/example copies
        splits_config=tfx.proto.SplitsConfig(analyze=["train"]),
    )
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN[task],
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["valid"]),
        custom_config={**training, MODEL_NAME_KEY: model_name, DATA_VERSION_KEY: data_version or {}},
    )
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=config,
        example_splits=["test"],
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=os.path.join(model_base, model_name))
        ),
    )
    registrar = MlflowRegistrar(
        report=report,
        model=trainer.outputs["model"],
        evaluation_result=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"],
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        registered_model_name=model_name,
        description=DESCRIPTION[task],
        params_json=json.dumps(
            {**training, **task_params, "task": task, "regression_tolerance": regression_tolerance,
             "data_root": data_root, **{f"data.{k}": v for k, v in (data_version or {}).items()}},
            sort_keys=True, default=str),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[*first, statistics_gen, schema_gen, example_validator, transform, trainer,
                    model_resolver, evaluator, pusher, registrar],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )



