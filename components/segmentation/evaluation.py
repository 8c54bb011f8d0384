"""TFMA configuration of the segmenter's Evaluator: Dice and IoU of the lesion mask against the consensus on the
test split, overall and by nodule size (the Transform graph's size bin), and the blessing on Dice."""

from components.segmentation import features
from radassist.contract import Signature

LESION_MASK = "lesion_mask"  # serving_default's output for TFMA: the probability map at the lesion threshold, {0, 1}


def eval_config(dice_floor: float, regression_tolerance: float = 0.0):
    """Blessing: per-slice mean Dice >= ``dice_floor`` and not below the last blessed segmenter's by more than
    ``regression_tolerance``."""
    from tensorflow_model_analysis.proto import config_pb2

    module = "components.segmentation.metrics"
    blessing = config_pb2.MetricThreshold(
        value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": dice_floor}),
        change_threshold=config_pb2.GenericChangeThreshold(direction=config_pb2.MetricDirection.HIGHER_IS_BETTER,
                                                           absolute={"value": -regression_tolerance - 1e-10}))
    return config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec(signature_name=Signature.SERVING_DEFAULT, label_key=features.MASK_KEY,
                                          prediction_key=LESION_MASK,
                                          preprocessing_function_names=["transform_features"])],
        slicing_specs=[config_pb2.SlicingSpec(), config_pb2.SlicingSpec(feature_keys=[features.SIZE_BIN_KEY])],
        metrics_specs=[config_pb2.MetricsSpec(metrics=[
            config_pb2.MetricConfig(class_name="ExampleCount"),
            # The blessing reads the whole test split: the size slices are reported, not held to the floor (the
            # smallest nodules are the hardest for readers too).
            config_pb2.MetricConfig(class_name="SliceDice", module=module, config='{"name": "dice"}',
                                    per_slice_thresholds=[config_pb2.PerSliceMetricThreshold(
                                        slicing_specs=[config_pb2.SlicingSpec()], threshold=blessing)]),
            config_pb2.MetricConfig(class_name="SliceIoU", module=module, config='{"name": "iou"}'),
        ])],
    )

