"""Data versions with DVC: the registry tracks data roots revision by revision, and any revision (or the one a model
recorded) comes back byte for byte, from a local DVC remote and from S3 (moto's server)."""

import filecmp
import json
import os
import shutil

import pytest

from components import data_registry
from radassist import cli
from radassist.contract import MODEL_INFO_PATH

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "sample", "chest-ct")


def same_tree(first: str, second: str) -> bool:
    """Every file in both folders, with the same bytes (linked folders followed)."""
    def files(root):
        return sorted(os.path.relpath(os.path.join(folder, name), root)
                      for folder, _, names in os.walk(root, followlinks=True) for name in names)

    names = files(first)
    return names == files(second) and all(filecmp.cmp(os.path.join(first, n), os.path.join(second, n), shallow=False)
                                          for n in names)


def a_second_round(tmp_path) -> str:
    """The sample with a confirmed case added and one image gone: what a retraining round changes."""
    data = tmp_path / "round-2"
    shutil.copytree(SAMPLE, data)
    (data / "train" / "normal_confirmed").mkdir()
    shutil.copy(data / "test" / "normal" / sorted(os.listdir(data / "test" / "normal"))[0],
                data / "train" / "normal_confirmed" / "confirmed-1.png")
    os.remove(data / "valid" / "normal" / sorted(os.listdir(data / "valid" / "normal"))[0])
    return str(data)


def test_each_revision_comes_back_byte_for_byte_from_a_local_remote(tmp_path):
    registry = data_registry.DataRegistry(str(tmp_path / "registry"))
    registry.init(str(tmp_path / "remote"))
    first = registry.add(SAMPLE, message="the sample")
    second_data = a_second_round(tmp_path)
    second = registry.add(second_data, message="round 2")
    assert first.rev != second.rev and first.md5 != second.md5 and second.files == first.files
    assert registry.add(second_data).rev == second.rev  # nothing changed: no new revision
    assert [entry["rev"] for entry in registry.log()] == [second.rev, first.rev]
    assert registry.describe(rev=first.rev) == first

    data_registry.pull(registry.root, first.rev, str(tmp_path / "v1"))
    data_registry.pull(registry.root, second.rev, str(tmp_path / "v2"))
    assert same_tree(str(tmp_path / "v1"), SAMPLE) and same_tree(str(tmp_path / "v2"), second_data)
    # From the remote alone: a fresh clone of the registry's git history, no DVC cache.
    clone = tmp_path / "clone"
    data_registry._git("clone", "-q", registry.root, str(clone))
    restored = data_registry.pull(str(clone), first.rev, str(tmp_path / "v1-again"))
    assert restored.md5 == first.md5 and same_tree(str(tmp_path / "v1-again"), SAMPLE)

    with pytest.raises(data_registry.DataRegistryError, match="exists"):
        data_registry.pull(registry.root, first.rev, str(tmp_path / "v1"))
    with pytest.raises(data_registry.DataRegistryError):
        registry.describe(rev="0" * 40)
    with pytest.raises(data_registry.DataRegistryError, match="not a data registry"):
        data_registry.DataRegistry(str(tmp_path / "nowhere")).add(SAMPLE)


def test_the_cli_tracks_data_and_pulls_the_revision_a_model_recorded(tmp_path, capsys):
    common = ["--data-registry", str(tmp_path / "registry"), "--output", str(tmp_path / "outputs")]
    assert cli.main(["data", "init", *common]) == 0
    capsys.readouterr()
    assert cli.main(["data", "add", *common, "--data", SAMPLE, "-m", "the sample"]) == 0
    revision = json.loads(capsys.readouterr().out)
    assert os.listdir(tmp_path / "outputs" / "dvc-remote")  # the default remote holds the files
    # A model version records its data revision in its info file: `data pull --model` restores that data.
    model = tmp_path / "model" / "1"
    (model / os.path.dirname(MODEL_INFO_PATH)).mkdir(parents=True)
    (model / MODEL_INFO_PATH).write_text(json.dumps({"model_name": "radassist", "data_version": revision}))
    assert cli.main(["data", "pull", *common, "--model", str(model), "--out", str(tmp_path / "rebuilt")]) == 0
    assert same_tree(str(tmp_path / "rebuilt"), SAMPLE)
    (model / MODEL_INFO_PATH).write_text(json.dumps({"model_name": "radassist", "data_version": {}}))
    with pytest.raises(SystemExit, match="records no data revision"):
        cli.main(["data", "pull", *common, "--model", str(model), "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="not tracked|failed"):
        cli.main(["data", "pull", *common, "--rev", "no-such-branch", "--out", str(tmp_path / "none")])


def test_an_s3_remote_round_trip(s3, tmp_path):
    client, bucket = s3
    registry = data_registry.DataRegistry(str(tmp_path / "registry"))
    registry.init(f"s3://{bucket}/dvc", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    revision = registry.add(SAMPLE)
    stored = client.list_objects_v2(Bucket=bucket, Prefix="dvc/")
    assert stored["KeyCount"] >= 100  # every distinct file, content-addressed
    shutil.rmtree(os.path.join(registry.root, ".dvc", "cache"))  # nothing local: the files must come from S3
    restored = data_registry.pull(registry.root, revision.rev, str(tmp_path / "restored"))
    assert restored.md5 == revision.md5 and same_tree(str(tmp_path / "restored"), SAMPLE)


def test_a_training_run_takes_its_data_by_revision_pulled_once_per_commit(tmp_path):
    """`radassist pipeline run --data-rev REV`: the revision's data is pulled into <output>/data-cache once per
    commit, and the run gets the revision the model will record."""
    from pipelines import cli as pipeline_cli

    registry = data_registry.DataRegistry(str(tmp_path / "registry"))
    registry.init(str(tmp_path / "remote"))
    first = registry.add(SAMPLE)
    registry.add(a_second_round(tmp_path))
    pulled = pipeline_cli.pulled_revision(registry.root, first.rev[:10], "chest-ct", str(tmp_path / "outputs"))
    assert pulled["data_version"] == first.to_dict() and same_tree(pulled["root"], SAMPLE)
    assert pulled["root"] == str(tmp_path / "outputs" / "data-cache" / f"chest-ct-{first.rev}")
    marker = os.path.join(pulled["root"], "train", "normal", "pulled-once")
    open(marker, "w").close()
    assert pipeline_cli.pulled_revision(registry.root, first.rev, "chest-ct", str(tmp_path / "outputs")) == pulled
    assert os.path.exists(marker)  # reused, not pulled again
    with pytest.raises(SystemExit, match="data: "):
        pipeline_cli.pulled_revision(registry.root, "no-such-revision", "chest-ct", str(tmp_path / "outputs"))


def test_a_run_on_a_revision_is_a_run_on_real_data(tmp_path, monkeypatch):
    """`pipeline run --data-rev` never takes the sample's path (its banner, its zero blessing floor), even where no
    --data or $RADASSIST_DATA_DIR is set; --data with --data-rev is refused."""
    from pipelines import cli as pipeline_cli

    monkeypatch.delenv("RADASSIST_DATA_DIR", raising=False)
    monkeypatch.delenv("RADASSIST_DATA_REGISTRY", raising=False)
    registry = data_registry.DataRegistry(str(tmp_path / "registry"))
    registry.init(str(tmp_path / "remote"))
    revision = registry.add(SAMPLE)
    parser = cli.make_parser()
    args = parser.parse_args(["pipeline", "run", "--data-rev", revision.rev, "--data-registry", registry.root])
    root, is_sample, recorded = pipeline_cli.training_data(args, str(tmp_path / "outputs"))
    assert not is_sample and recorded == revision.to_dict() and same_tree(root, SAMPLE)
    untracked = parser.parse_args(["pipeline", "run"])
    assert pipeline_cli.training_data(untracked, str(tmp_path / "outputs"))[2] == {}
    both = parser.parse_args(["pipeline", "run", "--data", SAMPLE, "--data-rev", revision.rev])
    with pytest.raises(SystemExit, match="not both"):
        pipeline_cli.training_data(both, str(tmp_path / "outputs"))
