"""ModelManager and batching on small real SavedModels (fast; the VGG16 server is tested in test_serving)."""

import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf

from serving import errors
from serving.batching import BatchingOptions, BatchScheduler
from serving.model_store import AVAILABLE, END, ModelManager, VersionPolicy
from serving.storage import LocalStorage


def _save_model(path: str, scale: float) -> None:
    """A SavedModel with a batch-major `predict_image`: length of each encoded input times `scale`."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def predict_image(images):
        lengths = tf.cast(tf.strings.length(images), tf.float32)
        tf.debugging.assert_positive(lengths, message="empty input")
        return {"score": lengths * scale}

    module.predict_image = predict_image
    tf.saved_model.save(module, path, signatures={"predict_image": predict_image})


@pytest.fixture()
def base(tmp_path):
    root = tmp_path / "models"
    _save_model(str(root / "toy" / "1"), scale=1.0)
    return root


def _score(manager, payload=b"abcd", version=None):
    served = manager.acquire("toy", version)
    try:
        outputs = served.run("predict_image", {"images": np.array([payload], dtype=object)})
        return served.version, float(outputs["score"][0])
    finally:
        served.release()


def test_latest_version_is_served_and_old_one_unloaded(base):
    manager = ModelManager(LocalStorage(str(base)), ["toy"], batching=BatchingOptions(enabled=False))
    manager.poll_once()
    assert _score(manager) == (1, 4.0)
    _save_model(str(base / "toy" / "2"), scale=10.0)
    manager.poll_once()
    assert _score(manager) == (2, 40.0)
    assert [s["version"] for s in manager.status("toy")] == [2]
    with pytest.raises(errors.ModelNotFound):
        manager.acquire("toy", 1)
    with pytest.raises(errors.ModelNotFound):
        manager.acquire("other")


def test_pinned_policy_serves_exactly_the_pinned_versions(base):
    _save_model(str(base / "toy" / "2"), scale=10.0)
    manager = ModelManager(LocalStorage(str(base)), ["toy"], VersionPolicy(pinned=(1,)),
                           batching=BatchingOptions(enabled=False))
    manager.poll_once()
    assert manager.loaded() == {"toy": [1]}
    assert _score(manager) == (1, 4.0)


def test_failed_version_is_reported_kept_out_and_retried_when_its_files_change(base, tmp_path):
    manager = ModelManager(LocalStorage(str(base)), ["toy"], batching=BatchingOptions(enabled=False))
    manager.poll_once()
    partial = base / "toy" / "2"
    partial.mkdir()
    (partial / "saved_model.pb").write_bytes(b"half-copied")  # what a poll sees in the middle of a push
    manager.poll_once()
    status = {s["version"]: s for s in manager.status("toy")}
    assert status[2]["state"] == END and status[2]["error"]
    assert status[1]["state"] == AVAILABLE and _score(manager) == (1, 4.0)
    shutil.rmtree(partial)
    _save_model(str(tmp_path / "complete"), scale=10.0)
    shutil.copytree(tmp_path / "complete", partial)  # the copy completes
    manager.poll_once()
    assert _score(manager) == (2, 40.0)
    assert [s["version"] for s in manager.status("toy")] == [2]


def test_wrong_inputs_are_invalid_argument(base):
    manager = ModelManager(LocalStorage(str(base)), ["toy"], batching=BatchingOptions(enabled=False))
    manager.poll_once()
    served = manager.acquire("toy")
    try:
        with pytest.raises(errors.SignatureNotFound):
            served.run("nope", {"images": np.array([b"x"], dtype=object)})
        with pytest.raises(errors.InvalidInput, match="DT_STRING"):
            served.run("predict_image", {"images": np.zeros(2, np.float32)})
        with pytest.raises(errors.InvalidInput, match="missing"):
            served.run("predict_image", {"pictures": np.array([b"x"], dtype=object)})
        with pytest.raises(errors.InvalidInput, match="rejected"):
            served.run("predict_image", {"images": np.array([b""], dtype=object)})
    finally:
        served.release()


def test_batching_merges_concurrent_requests_and_isolates_bad_ones():
    sizes = []

    def run(inputs):
        values = inputs["x"]
        if (values < 0).any():
            raise errors.InvalidInput("negative")
        return {"y": values * 2}

    scheduler = BatchScheduler(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000),
                               on_batch=sizes.append)
    results, failures = {}, {}

    def call(i):
        try:
            results[i] = scheduler.submit({"x": np.array([i if i != 3 else -1])}, timeout=10)["y"][0]
        except errors.InvalidInput as error:
            failures[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scheduler.close()
    assert results == {i: 2 * i for i in range(6) if i != 3}
    assert list(failures) == [3]
    assert max(sizes) > 1  # requests really were merged


def test_scheduler_refuses_work_after_close():
    scheduler = BatchScheduler(lambda inputs: inputs, BatchingOptions())
    scheduler.close()
    with pytest.raises(errors.Unavailable):
        scheduler.submit({"x": np.array([1])})


def test_manager_reports_every_executed_batch_size(base):
    sizes = []
    manager = ModelManager(LocalStorage(str(base)), ["toy"], batching=BatchingOptions(batch_timeout_micros=1000),
                           on_batch=sizes.append)
    manager.poll_once()
    assert _score(manager, b"abc") == (1, 3.0)
    manager.stop()
    assert sizes == [1]
