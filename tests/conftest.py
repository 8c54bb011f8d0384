"""Shared fixtures: the committed sample, the full dataset (when present) and scratch directories."""

import csv
import functools
import io
import os
import re
import shutil

import pytest
import sqlalchemy as sa

from radassist.stack import ModelServerProcess, free_port  # noqa: F401 - shared with the tests

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(REPO_ROOT, "data", "sample", "chest-ct")
SEGMENTATION_SAMPLE_DIR = os.path.join(REPO_ROOT, "data", "sample", "lidc-crops")
FULL_DATA_CANDIDATES = [os.environ.get("RADASSIST_FULL_DATA_DIR", ""),
                        os.path.join(REPO_ROOT, "..", "shared", "data", "chest-ct")]


@pytest.fixture(scope="session")
def sample_dir() -> str:
    assert os.path.isdir(SAMPLE_DIR), "the committed sample data/sample/chest-ct is missing"
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def full_data_dir() -> str:
    for candidate in FULL_DATA_CANDIDATES:
        if candidate and os.path.isfile(os.path.join(candidate, "MANIFEST.csv")):
            return os.path.abspath(candidate)
    pytest.skip("full chest-ct data not found (set RADASSIST_FULL_DATA_DIR or provide ../shared/data/chest-ct)")


@pytest.fixture()
def sample_copy(tmp_path, sample_dir) -> str:
    target = tmp_path / "chest-ct"
    shutil.copytree(sample_dir, target)
    return str(target)


@pytest.fixture(scope="session")
def first_pipeline_run(tmp_path_factory, sample_dir):
    """`radassist pipeline run --quick` on a copy of the sample with a few bad files added; blessed (floor 0).

    Shared by the pipeline tests (which add a second run) and the serving tests (which serve its model).
    """
    from radassist import cli

    root = tmp_path_factory.mktemp("pipeline")
    data = root / "chest-ct"
    shutil.copytree(sample_dir, data)
    (data / "train" / "normal" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 300)
    (data / "train" / "normal" / "notes.txt").write_text("not an image")
    (data / "test" / "notes").mkdir()
    (data / "test" / "notes" / "a.png").write_text("a text file with an image's name")
    output = root / "outputs"
    args = ["pipeline", "run", "--data", str(data), "--output", str(output), "--quick"]
    assert cli.main(args + ["--seed", "1", "--accuracy-floor", "0"]) == 0
    return {"data": data, "output": output, "args": args}


@pytest.fixture(scope="session")
def segmenter_pipeline_run(tmp_path_factory):
    """`radassist pipeline run --task segmenter --quick` on a copy of the LIDC-IDRI sample, one image's masks
    removed (that slice is skipped); blessed (floor 0). Shared by the segmentation pipeline and serving tests."""
    from radassist import cli

    root = tmp_path_factory.mktemp("segmenter")
    data = root / "lidc-crops"
    shutil.copytree(SEGMENTATION_SAMPLE_DIR, data)
    with open(data / "MANIFEST.csv", newline="") as handle:
        pair = next(row["pair_id"] for row in csv.DictReader(handle) if row["split"] == "train")
    broken = data / "masks" / f"{pair}_mask-3.png"
    broken.unlink()
    output = root / "outputs"
    args = ["pipeline", "run", "--task", "segmenter", "--data", str(data), "--output", str(output), "--quick"]
    assert cli.main(args + ["--dice-floor", "0"]) == 0
    return {"data": data, "output": output, "args": args, "skipped": broken.name.replace("_mask-3.png", "")}


@pytest.fixture(scope="session")
def contract_model_base(tmp_path_factory) -> str:
    """A model base path holding the tiny contract models (tests/contract_model.py) as radassist/1 and
    radassist-seg/1: the serving and portal tests serve them and start at once, without a pipeline run."""
    import contract_model

    base = tmp_path_factory.mktemp("contract-model") / "models"
    contract_model.build(str(base / "radassist" / "1"))
    contract_model.build_segmenter(str(base / contract_model.SEGMENTER_NAME / "1"))
    return str(base)


# --- portal: app -> client -> auth, a fresh database per test, on SQLite and on PostgreSQL -----------------
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PASSWORD = "correct horse battery"


@functools.cache
def postgres_url() -> str:
    """This test process's PostgreSQL database: ``test``, or under pytest-xdist one per worker (``test_gw0``, ...),
    created on first use (looked up once per process), so workers never reset each other's schema."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return f"{POSTGRES_SERVER}/test"
    name = f"test_{worker}"
    engine = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                        {"name": name}).scalar()
            if not exists:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"{POSTGRES_SERVER}/{name}"


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP SCHEMA public CASCADE"))  # tables, triggers and functions
            connection.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def _migrate_and_add_users(app) -> None:
    """The schema and the five accounts every portal test starts from."""
    from portal.accounts import create_user
    from portal.database import upgrade
    from portal.models import Role, db

    upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        admin = create_user("admin@example.org", "Ada Admin", Role.ADMIN, PASSWORD)
        doctor = create_user("doctor@example.org", "Dr. One", Role.DOCTOR, PASSWORD)
        other = create_user("other@example.org", "Dr. Two", Role.DOCTOR, PASSWORD)
        create_user("patient@example.org", "Pat One", Role.PATIENT, PASSWORD, doctor=doctor)
        create_user("patient2@example.org", "Pat Two", Role.PATIENT, PASSWORD, doctor=other)
        db.session.commit()
        assert admin.id
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> str:
    """A migrated SQLite database with the test accounts, made once: each test gets a copy (migrating and hashing
    five passwords per test would cost a second each)."""
    from portal import create_app

    path = tmp_path_factory.mktemp("sqlite-template") / "portal.db"
    _migrate_and_add_users(create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
                                       "SCAN_STORE": str(path.parent / "scans")}, environment="testing"))
    return str(path)


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, tmp_path):
    """The portal on a fresh database (a copy of the SQLite template, or this process's PostgreSQL database reset
    and migrated) holding an admin, two doctors and a patient of each."""
    from portal import create_app

    if request.param == "postgresql":
        try:
            url = postgres_url()
            _reset_postgres(url)
        except sa.exc.OperationalError as error:
            pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {error}")
    else:
        shutil.copy(request.getfixturevalue("sqlite_template"), tmp_path / "portal.db")
        url = f"sqlite:///{tmp_path / 'portal.db'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCAN_STORE": str(tmp_path / "scans")}, environment="testing")
    if request.param == "postgresql":
        _migrate_and_add_users(app)
    yield app
    from portal.models import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture()
def client(app):
    return app.test_client()


def csrf_token(client, url: str) -> str:
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def upload_files(client, page_url: str, upload_url: str, files: list[tuple[str, bytes]]):
    """Posts ``files`` (name, bytes) to an upload form the way a browser does, CSRF token included."""
    token = csrf_token(client, page_url)
    data = {"csrf_token": token, "scans": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(upload_url, data=data, content_type="multipart/form-data")


def user_id(app, email: str) -> int:
    from portal.models import User, db

    with app.app_context():
        return db.session.scalar(db.select(User.id).where(User.email == email))


class Auth:
    def __init__(self, client):
        self.client = client

    def login(self, email: str, password: str = PASSWORD, next_url: str = ""):
        token = csrf_token(self.client, "/login")
        return self.client.post(f"/login{next_url}", data={"email": email, "password": password,
                                                           "csrf_token": token})

    def logout(self):
        token = csrf_token(self.client, "/password")
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture()
def auth(client):
    return Auth(client)


# --- the model server as a real process (serving and portal tests): radassist/stack.py -----------------------
ServerProcess = ModelServerProcess


@pytest.fixture(scope="module")
def model_server(contract_model_base, tmp_path_factory):
    """The contract classifier and segmenter served by a real ``radassist serve``, over this module's own copy of
    their base path."""
    base = tmp_path_factory.mktemp("serving") / "models"
    shutil.copytree(contract_model_base, base)
    process = ServerProcess(str(base), "--model-name", "radassist", "--model-name", "radassist-seg").start()
    yield process
    process.stop()


# Modules whose every test is marked slow (or full_data): not even imported when the run deselects slow tests
# (`make test-fast`), since importing them (TFX, TFMA, MLflow, Playwright) alone takes about 20 s.
SLOW_MODULES = ("test_pipeline.py", "test_portal_browser.py", "test_trainer_units.py", "test_accuracy_full.py",
                "test_kubeflow.py")


def pytest_ignore_collect(collection_path, config):
    markexpr = config.getoption("markexpr") or ""
    if "not slow" in markexpr and collection_path.name in SLOW_MODULES:
        return True
    return None


@pytest.fixture()
def s3(monkeypatch):
    """moto's S3 server on a free port, the AWS variables pointing at it, and a new bucket: (client, bucket)."""
    import uuid

    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"models-{uuid.uuid4().hex[:12]}"  # moto's backend outlives a server: one bucket per test
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    server.stop()
