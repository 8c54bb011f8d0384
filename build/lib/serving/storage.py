"""Model base paths on a local folder or S3: list integer versions and materialise one version locally."""

import os
import shutil
import tempfile
import urllib.parse

S3_TIMEOUT_SECONDS = 30


class ModelStorage:
    """Read access to ``<base>/<model name>/<integer version>/`` trees."""

    def list_versions(self, model_name: str) -> list[int]:
        raise NotImplementedError

    def local_path(self, model_name: str, version: int) -> str:
        """A local directory holding the version (downloaded first for remote stores)."""
        raise NotImplementedError

    def release(self, path: str) -> None:
        """Forget a path returned by local_path (deletes downloaded copies)."""

    def fingerprint(self, model_name: str, version: int) -> tuple:
        """Changes whenever the version's files change (so a failed load is retried once a copy completes)."""
        raise NotImplementedError


class LocalStorage(ModelStorage):
    def __init__(self, base_path: str):
        self.base_path = os.path.abspath(base_path)

    def list_versions(self, model_name: str) -> list[int]:
        root = os.path.join(self.base_path, model_name)
        if not os.path.isdir(root):
            return []
        return sorted(int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n)))

    def local_path(self, model_name: str, version: int) -> str:
        return os.path.join(self.base_path, model_name, str(version))

    def fingerprint(self, model_name: str, version: int) -> tuple:
        root = self.local_path(model_name, version)
        entries = []
        for folder, _, files in os.walk(root):
            for name in files:
                info = os.stat(os.path.join(folder, name))
                entries.append((os.path.relpath(os.path.join(folder, name), root), info.st_size, info.st_mtime_ns))
        return tuple(sorted(entries))


class S3Storage(ModelStorage):
    """``s3://bucket/prefix``; versions are downloaded to a scratch folder before loading."""

    def __init__(self, base_path: str, endpoint_url: str | None = None, cache_dir: str | None = None):
        import boto3
        from botocore.config import Config

        parsed = urllib.parse.urlparse(base_path)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        config = Config(connect_timeout=S3_TIMEOUT_SECONDS, read_timeout=S3_TIMEOUT_SECONDS,
                        retries={"max_attempts": 3})
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="radassist-models-")

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def list_versions(self, model_name: str) -> list[int]:
        paginator = self.s3.get_paginator("list_objects_v2")
        versions = set()
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(model_name) + "/", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if name.isdigit():
                    versions.add(int(name))
        return sorted(versions)

    def local_path(self, model_name: str, version: int) -> str:
        prefix = self._key(model_name, str(version)) + "/"
        target = os.path.join(self.cache_dir, model_name, str(version))
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix):]
                if not relative or relative.endswith("/"):
                    continue
                destination = os.path.join(target, *relative.split("/"))
                if not os.path.abspath(destination).startswith(os.path.abspath(target) + os.sep):
                    raise ValueError(f"refusing S3 key outside the version folder: {item['Key']}")
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                self.s3.download_file(self.bucket, item["Key"], destination)
        return target

    def fingerprint(self, model_name: str, version: int) -> tuple:
        paginator = self.s3.get_paginator("list_objects_v2")
        prefix = self._key(model_name, str(version)) + "/"
        return tuple(sorted((item["Key"], item["Size"], item.get("ETag", ""))
                            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                            for item in page.get("Contents", [])))

    def release(self, path: str) -> None:
        if path.startswith(self.cache_dir):
            shutil.rmtree(path, ignore_errors=True)


def storage_for(base_path: str) -> ModelStorage:
    if base_path.startswith("s3://"):
        return S3Storage(base_path)
    return LocalStorage(base_path)
