"""Serving from s3:// through boto3, against moto's S3 server (AWS itself is out of reach)."""

import glob
import os

import pytest
from conftest import free_port
from contract_model import grey_png

from serving.client import ServingClient
from serving.server import ModelServer, ServerConfig
from serving.storage import S3Storage


def _upload(s3, local_dir: str, prefix: str) -> None:
    client, bucket = s3
    for path in glob.glob(os.path.join(local_dir, "**", "*"), recursive=True):
        if os.path.isfile(path):
            client.upload_file(path, bucket, f"{prefix}/{os.path.relpath(path, local_dir)}")


def test_s3_storage_lists_and_downloads_versions(s3, contract_model_base, tmp_path):
    version_dir = os.path.join(contract_model_base, "radassist", "1")
    _upload(s3, version_dir, "prod/radassist/7")
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="prod/radassist/notes/readme.txt", Body=b"not a version")
    storage = S3Storage(f"s3://{bucket}/prod", cache_dir=str(tmp_path))
    assert storage.list_versions("radassist") == [7]
    local = storage.local_path("radassist", 7)
    assert os.path.isfile(os.path.join(local, "saved_model.pb"))
    assert os.path.isfile(os.path.join(local, "assets.extra", "tf_serving_warmup_requests"))
    storage.release(local)
    assert not os.path.exists(local)


def test_server_serves_a_model_from_s3(s3, contract_model_base):
    version_dir = os.path.join(contract_model_base, "radassist", "1")
    _upload(s3, version_dir, "prod/radassist/3")
    server = ModelServer(ServerConfig(model_base_path=f"s3://{s3[1]}/prod", model_names=["radassist"],
                                      grpc_port=free_port(), rest_port=free_port(), host="127.0.0.1")).start()
    try:
        image = grey_png(200)
        with ServingClient(f"127.0.0.1:{server.grpc_port}", "radassist", timeout=60) as client:
            prediction = client.predict([image])[0]
        assert prediction.model_version == 3
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    finally:
        server.stop()


def test_portal_blob_store_on_s3_is_content_addressed(s3):
    from portal.storage import store_from_uri

    client, bucket = s3
    store = store_from_uri(f"s3://{bucket}/scans")
    digest = store.put(b"a ct slice")
    assert store.put(b"a ct slice") == digest  # idempotent
    assert store.get(digest) == b"a ct slice"
    assert client.list_objects_v2(Bucket=bucket, Prefix="scans/")["KeyCount"] == 1
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
