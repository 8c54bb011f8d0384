"""Shared fixtures: the committed sample, the full dataset (when present) and scratch directories."""

import os
import shutil

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(REPO_ROOT, "data", "sample", "chest-ct")
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
