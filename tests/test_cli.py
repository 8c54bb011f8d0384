import os

import pytest

from radassist import cli


def test_data_dir_falls_back_to_the_sample_loudly(tmp_path, monkeypatch):
    monkeypatch.delenv("RADASSIST_DATA_DIR", raising=False)
    path, is_sample = cli.resolve_data_dir(None, str(tmp_path))
    assert is_sample and path.endswith(os.path.join("data", "sample", "chest-ct"))


def test_data_dir_prefers_flag_then_environment_then_default(tmp_path, monkeypatch):
    (tmp_path / "data" / "chest-ct").mkdir(parents=True)
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir()
    env.mkdir()
    monkeypatch.setenv("RADASSIST_DATA_DIR", str(env))
    assert cli.resolve_data_dir(str(flag), str(tmp_path)) == (str(flag), False)
    assert cli.resolve_data_dir(None, str(tmp_path)) == (str(env), False)
    monkeypatch.delenv("RADASSIST_DATA_DIR")
    assert cli.resolve_data_dir(None, str(tmp_path)) == (str(tmp_path / "data" / "chest-ct"), False)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="data directory not found"):
        cli.resolve_data_dir(str(tmp_path / "nowhere"), str(tmp_path))


def test_quick_and_seed_flags_become_training_options():
    args = cli.make_parser().parse_args(["pipeline", "run", "--quick", "--seed", "5", "--recipe", "full",
                                         "--training-json", '{"dropout": 0.5}'])
    options = cli._training_options(args)
    assert options["seed"] == 5 and options["recipe"] == "full" and options["dropout"] == 0.5
    assert options["finetune_epochs"] == 1
