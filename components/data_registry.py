"""Data versions with DVC: the data registry every training run can name and every model records.

The registry is a git repository whose DVC files track the data roots the models are trained on (``chest-ct``:
``train/valid/test/<class>/...``; after a retraining round also ``holdout/`` and ``DATA_VERSION.json``). The
files themselves live in a DVC remote: a local folder by default, an S3 bucket in production (any S3 endpoint:
``endpoint_url`` for MinIO or a test server). A revision is the registry's git commit: ``pull`` restores exactly
that data, and a model trained on it records the revision (its info file, ML Metadata, MLflow), so it can be
rebuilt from its record. DVC stores each distinct file once, so a retraining round adds only its new cases.

DVC runs as its own command (``.venv/bin/dvc``, installed by scripts/bootstrap_env.sh in a virtual environment of
its own), each call with a timeout; any failure is a ``DataRegistryError`` with DVC's or git's own message.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile

DEFAULT_NAME = "chest-ct"
REMOTE_NAME = "storage"
TIMEOUT_SECONDS = 900.0  # one DVC or git command (a push of a whole data set included)
AUTHOR = ("-c", "user.name=RadAssist", "-c", "user.email=radassist@localhost")  # commits need a name


class DataRegistryError(RuntimeError):
    """A DVC or git command failed or timed out, or the registry is not one."""


@dataclasses.dataclass(frozen=True)
class DataRevision:
    """One tracked data root at one registry commit: what a model records to be rebuilt."""

    registry: str  # the registry repository: a local path or a git URL
    name: str      # the tracked folder in it
    rev: str       # the git commit
    md5: str       # DVC's hash of the folder's contents (".dir")
    files: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def dvc_executable() -> str:
    """$RADASSIST_DVC, else the ``dvc`` beside this interpreter (.venv/bin/dvc), else the one on PATH."""
    candidates = [os.environ.get("RADASSIST_DVC", ""), os.path.join(os.path.dirname(sys.executable), "dvc"),
                  shutil.which("dvc") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DataRegistryError("DVC is not installed: run `make env` (it installs .venv/bin/dvc) or set RADASSIST_DVC")


def _run(command: list[str], cwd: str | None = None, timeout: float = TIMEOUT_SECONDS) -> str:
    environment = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment,
                              check=False)
    except subprocess.TimeoutExpired as error:
        raise DataRegistryError(f"{' '.join(command[:3])} took over {timeout:g} s") from error
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise DataRegistryError(f"{' '.join(command[:3])} failed: {' '.join(message[-6:])}")
    return done.stdout


def _git(*args: str, cwd: str | None = None) -> str:
    return _run(["git", *AUTHOR, *args], cwd=cwd)


def _dvc(*args: str, cwd: str | None = None) -> str:
    return _run([dvc_executable(), *args], cwd=cwd)


def is_url(location: str) -> bool:
    return "://" in location or location.startswith("git@")


def _parse_dvc_file(text: str, name: str) -> tuple[str, int]:
    import yaml

    try:
        (out,) = yaml.safe_load(text)["outs"]
        return str(out["md5"]), int(out.get("nfiles", 0))
    except (TypeError, KeyError, ValueError, yaml.YAMLError) as error:
        raise DataRegistryError(f"{name}.dvc is not a DVC file of one tracked folder") from error


class DataRegistry:
    """A local clone of the data registry (``root``): what ``radassist data init/add/log`` work on."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    @property
    def exists(self) -> bool:
        return os.path.isdir(os.path.join(self.root, ".dvc")) and os.path.isdir(os.path.join(self.root, ".git"))

    def init(self, remote: str, endpoint_url: str = "") -> None:
        """A new registry whose default DVC remote is ``remote`` (a folder, made absolute, or s3://bucket/prefix)."""
        if self.exists:
            raise DataRegistryError(f"{self.root} is already a data registry")
        os.makedirs(self.root, exist_ok=True)
        remote = remote if is_url(remote) else os.path.abspath(remote)
        _git("init", "-q", cwd=self.root)
        _dvc("init", "-q", cwd=self.root)
        _dvc("remote", "add", "-d", REMOTE_NAME, remote, cwd=self.root)
        if endpoint_url:
            _dvc("remote", "modify", REMOTE_NAME, "endpointurl", endpoint_url, cwd=self.root)
        # The cache links files into the workspace instead of holding a second copy of every image.
        _dvc("config", "cache.type", "reflink,hardlink,copy", cwd=self.root)
        _git("add", "-A", cwd=self.root)
        _git("commit", "-q", "-m", f"data registry (DVC remote {remote})", cwd=self.root)

    def _require(self) -> None:
        if not self.exists:
            raise DataRegistryError(f"{self.root} is not a data registry (create one with `radassist data init`)")

    def add(self, source: str, name: str = DEFAULT_NAME, message: str = "") -> DataRevision:
        """Makes ``name`` a copy of the folder ``source`` (links followed), commits it and pushes its files to the
        remote; returns the new revision (the current one when nothing changed)."""
        self._require()
        if not os.path.isdir(source):
            raise DataRegistryError(f"no data folder at {source}")
        target = os.path.join(self.root, name)
        staging = tempfile.mkdtemp(prefix=f".{name}-", dir=self.root)
        try:
            shutil.copytree(source, os.path.join(staging, name), symlinks=False)
            if os.path.lexists(target):
                shutil.rmtree(target)  # the cache keeps the files the last revision links
            os.replace(os.path.join(staging, name), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _dvc("add", "-q", name, cwd=self.root)
        _git("add", f"{name}.dvc", ".gitignore", cwd=self.root)
        if _git("status", "--porcelain", "--", f"{name}.dvc", cwd=self.root).strip():
            _git("commit", "-q", "-m", message or f"{name}: {os.path.abspath(source)}", cwd=self.root)
        _dvc("push", "-q", f"{name}.dvc", cwd=self.root)
        return self.describe(name)

    def describe(self, name: str = DEFAULT_NAME, rev: str = "HEAD") -> DataRevision:
        self._require()
        commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}", cwd=self.root).strip()
        try:
            text = _git("show", f"{commit}:{name}.dvc", cwd=self.root)
        except DataRegistryError as error:
            raise DataRegistryError(f"{name} is not tracked at {rev} in {self.root}") from error
        md5, files = _parse_dvc_file(text, name)
        return DataRevision(self.root, name, commit, md5, files)

    def log(self, name: str = DEFAULT_NAME) -> list[dict]:
        """The revisions that changed ``name``, newest first: {rev, date, message}."""
        self._require()
        lines = _git("log", "--format=%H%x09%cI%x09%s", "--", f"{name}.dvc", cwd=self.root).splitlines()
        return [dict(zip(("rev", "date", "message"), line.split("\t", 2), strict=True)) for line in lines if line]


def pull(registry: str, rev: str, out: str, name: str = DEFAULT_NAME) -> DataRevision:
    """Restores ``name`` as it was at revision ``rev`` of ``registry`` (a local registry or a git URL, its files
    from the remote that revision names) into the new folder ``out``; returns what was restored."""
    if os.path.exists(out):
        raise DataRegistryError(f"{out} exists: pull into a new folder")
    location = registry if is_url(registry) else os.path.abspath(registry)
    with tempfile.TemporaryDirectory() as scratch:  # the registry's history (small): which commit, which contents
        clone = os.path.join(scratch, "registry")
        _git("clone", "-q", location, clone)
        found = DataRegistry(clone).describe(name, rev)
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    _dvc("get", location, name, "--rev", found.rev, "-o", partial)
    os.replace(partial, out)  # whole, or not at all
    return dataclasses.replace(found, registry=location)
