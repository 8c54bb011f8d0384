"""Both models from one TF Serving model config file: the classifier and the segmenter each from its own base path,
over gRPC (the client's ``segment``) and REST, on a real server."""

import base64
import io
import shutil
import sys

import numpy as np
import pytest
import requests
from PIL import Image

from radassist.contract import MODEL_NAME, SEGMENTATION_MODEL_NAME, Output, Signature
from serving.batching import concatenate_padded
from serving.client import ServingClient
from serving.model_config import ModelConfigError, ServedModel, format_model_config, parse_model_config
from serving.model_store import VersionPolicy


def test_the_model_config_file_is_tf_servings_own_format():
    models = parse_model_config('''
        model_config_list {
          config { name: "radassist" base_path: "s3://models/radassist" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 3 versions: 5 } } }
          config { name: "radassist-seg" base_path: "/srv/seg/radassist-seg" }
          config { name: "all" base_path: "/srv/all" model_version_policy { all {} } }
        }''')
    assert [(m.name, m.parent, m.folder, m.policy) for m in models] == [
        ("radassist", "s3://models", "radassist", VersionPolicy(pinned=(3, 5))),
        ("radassist-seg", "/srv/seg", "radassist-seg", VersionPolicy()),
        ("all", "/srv", "all", VersionPolicy(latest=sys.maxsize))]
    assert parse_model_config(format_model_config(models)) == models
    refused = {
        "model_config_list {}": "at least one config",
        'model_config_list { config { name: "a" } }': "base_path",
        'model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }': "twice",
        'model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }': "platform",
        'model_config_list { config { name: "a" base_path: "/a" version_labels { key: "stable" value: 1 } } }':
            "labels",
        "not a config": "not a TF Serving model config",
    }
    for text, message in refused.items():
        with pytest.raises(ModelConfigError, match=message):
            parse_model_config(text)


def test_split_requests_with_maps_of_different_sizes_join_padded():
    joined = concatenate_padded([np.ones((2, 3, 4)), np.full((1, 5, 2), 2.0)])
    assert joined.shape == (3, 5, 4) and joined[:2, 3:].sum() == 0 and joined[2, :, 2:].sum() == 0
    assert concatenate_padded([np.ones((1, 2)), np.ones((2, 2))]).shape == (3, 2)


def _slice_png(crop: bytes, side: int = 512) -> bytes:
    """A whole-slice-sized image with the crop pasted at an off-centre place on a dark field."""
    canvas = np.full((side, side), 20, np.uint8)
    canvas[300:428, 100:228] = np.asarray(Image.open(io.BytesIO(crop)))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def both_models(segmenter_pipeline_run, contract_model_base, tmp_path_factory):
    """The contract classifier and the pipeline's segmenter, in two unrelated folders, named by a config file."""
    from conftest import ServerProcess

    root = tmp_path_factory.mktemp("two-models")
    shutil.copytree(f"{contract_model_base}/{MODEL_NAME}", root / "classifier" / MODEL_NAME)
    shutil.copytree(segmenter_pipeline_run["output"] / "models" / SEGMENTATION_MODEL_NAME,
                    root / "segmenter" / SEGMENTATION_MODEL_NAME)
    config = root / "models.config"
    config.write_text(format_model_config([
        ServedModel(MODEL_NAME, str(root / "classifier" / MODEL_NAME)),
        ServedModel(SEGMENTATION_MODEL_NAME, str(root / "segmenter" / SEGMENTATION_MODEL_NAME))]))
    (root / "empty").mkdir()
    server = ServerProcess(str(root / "empty"), "--model-config-file", str(config)).start()
    crop = next((segmenter_pipeline_run["data"] / "images").glob("*.png")).read_bytes()
    yield server, crop
    server.stop()


@pytest.mark.slow  # trains the sample segmenter (the shared pipeline run) and loads both models
def test_one_server_serves_both_models_and_the_client_segments_whole_slices(both_models):
    server, crop = both_models
    with ServingClient(server.address) as client:
        assert client.model_status()[0]["state"] == "AVAILABLE"
        assert client.model_status(SEGMENTATION_MODEL_NAME)[0]["state"] == "AVAILABLE"
        assert client.predict([crop])[0].class_name  # the classifier answers beside the segmenter
        whole, small = client.segment_batch([_slice_png(crop), crop])
    assert whole.probability.shape == (512, 512) and small.probability.shape == (128, 128)
    assert whole.model_name == SEGMENTATION_MODEL_NAME and 0 < whole.threshold < 1
    for segmentation in (whole, small):
        assert segmentation.lesion_count >= len(segmentation.lesions)
        assert sum(lesion.area for lesion in segmentation.lesions) <= segmentation.mask.sum()
        for lesion in segmentation.lesions:
            y0, x0, y1, x1 = lesion.box
            assert y0 <= lesion.centroid[0] <= y1 and x0 <= lesion.centroid[1] <= x1
            assert lesion.long_axis >= lesion.short_axis > 0
            assert segmentation.threshold <= lesion.mean_probability <= lesion.max_probability <= 1


@pytest.mark.slow
def test_rest_answers_the_segment_signature(both_models):
    server, crop = both_models
    body = {"signature_name": Signature.SEGMENT, "instances": [{"b64": base64.b64encode(crop).decode()}]}
    answer = requests.post(f"{server.rest}/v1/models/{SEGMENTATION_MODEL_NAME}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert np.asarray(prediction[Output.PROBABILITY_MAP]).shape == (128, 128)
    assert prediction[Output.IMAGE_SIZE] == [128, 128] and len(prediction[Output.LESION_AREA]) == 16
    status = requests.get(f"{server.rest}/v1/models/{SEGMENTATION_MODEL_NAME}", timeout=10).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
