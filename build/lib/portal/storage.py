"""Content-addressed blob storage for scans: a local folder by default, S3 through boto3 in production."""

import contextlib
import hashlib
import os
import tempfile


class StorageUnavailable(OSError):
    """The blob store (S3) did not answer or refused the request; callers show a 503 or retry later."""


class BlobStore:
    def put(self, data: bytes) -> str:
        """Stores ``data`` under its sha256 (idempotent); returns the digest."""
        raise NotImplementedError

    def get(self, digest: str) -> bytes:
        raise NotImplementedError

    def exists(self, digest: str) -> bool:
        raise NotImplementedError

    def delete(self, digest: str) -> None:
        """Removes a blob no row refers to (the caller checks); missing blobs are fine."""
        raise NotImplementedError


def _checked(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("not a sha256 digest")
    return digest


class LocalBlobStore(BlobStore):
    def __init__(self, root: str):
        self.root = root

    def _path(self, digest: str) -> str:
        digest = _checked(digest)
        return os.path.join(self.root, digest[:2], digest)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not os.path.isfile(path):
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, delete=False) as handle:
                try:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())  # on disk before any row points at it
                except BaseException:
                    os.unlink(handle.name)
                    raise
            os.replace(handle.name, path)  # atomic: readers never see half a file
            directory = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(directory)  # the new name survives a crash too
            finally:
                os.close(directory)
        return digest

    def get(self, digest: str) -> bytes:
        with open(self._path(digest), "rb") as handle:
            return handle.read()

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self._path(digest))

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(digest))


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, timeout: float = 30):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url,
                               config=Config(connect_timeout=timeout, read_timeout=timeout,
                                             retries={"max_attempts": 3}))

    def _key(self, digest: str) -> str:
        return "/".join(p for p in (self.prefix, _checked(digest)) if p)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._typed_errors():
            self.s3.put_object(Bucket=self.bucket, Key=self._key(digest), Body=data)
        return digest

    def get(self, digest: str) -> bytes:
        with self._typed_errors():
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(digest))["Body"].read()

    def exists(self, digest: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with self._typed_errors():
                self.s3.head_object(Bucket=self.bucket, Key=self._key(digest))
        except StorageUnavailable as error:
            if isinstance(error.__cause__, ClientError) and error.__cause__.response.get("Error", {}).get(
                    "Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, digest: str) -> None:
        with self._typed_errors():
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(digest))

    @contextlib.contextmanager
    def _typed_errors(self):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as error:
            raise StorageUnavailable(f"s3://{self.bucket}: {error}") from error


def store_from_uri(uri: str) -> BlobStore:
    """``s3://bucket/prefix`` or a local folder."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        return S3BlobStore(bucket, prefix)
    return LocalBlobStore(uri)
