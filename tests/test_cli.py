import io
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from pipelines import cli as pipeline_cli
from radassist import cli, quiet


def test_data_dir_falls_back_to_the_sample_loudly(tmp_path, monkeypatch):
    monkeypatch.delenv("RADASSIST_DATA_DIR", raising=False)
    path, is_sample = pipeline_cli.resolve_data_dir(None, str(tmp_path))
    assert is_sample and path.endswith(os.path.join("data", "sample", "chest-ct"))


def test_data_dir_prefers_flag_then_environment_then_default(tmp_path, monkeypatch):
    (tmp_path / "data" / "chest-ct").mkdir(parents=True)
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir()
    env.mkdir()
    monkeypatch.setenv("RADASSIST_DATA_DIR", str(env))
    assert pipeline_cli.resolve_data_dir(str(flag), str(tmp_path)) == (str(flag), False)
    assert pipeline_cli.resolve_data_dir(None, str(tmp_path)) == (str(env), False)
    monkeypatch.delenv("RADASSIST_DATA_DIR")
    assert pipeline_cli.resolve_data_dir(None, str(tmp_path)) == (str(tmp_path / "data" / "chest-ct"), False)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="data directory not found"):
        pipeline_cli.resolve_data_dir(str(tmp_path / "nowhere"), str(tmp_path))


def test_quick_and_seed_flags_become_training_options():
    args = cli.make_parser().parse_args(["pipeline", "run", "--quick", "--seed", "5", "--recipe", "full",
                                         "--training-json", '{"dropout": 0.5}'])
    options = pipeline_cli.training_options(args)
    assert options["seed"] == 5 and options["recipe"] == "full" and options["dropout"] == 0.5
    assert options["finetune_epochs"] == 1


class _Sink(io.BytesIO):
    def flush(self):
        pass


def test_the_stderr_filter_drops_noise_and_keeps_what_a_user_needs():
    sink = _Sink()
    noisy = quiet.StderrFilter(sink)
    noisy.feed(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
               b"I0000 00:00:1796148314.120642   26734 cudart_stub.cc:31] Could not find cuda drivers on your ")
    noisy.feed(b"machine, GPU will not be used.\n\rpipeline:   9%|9         | 1/11")
    noisy.idle()  # the bar's partial line is passed on while the child works
    assert sink.getvalue() == b"\rpipeline:   9%|9         | 1/11"
    noisy.feed(b" [00:02<00:20]2026-12-01 18:05:31,584 WARNING absl: Fallback to non-ZetaSQL contexts\n"
               b"WARNING components.leakage_audit: LeakageAudit: dropping train/x.png (several labels)\n"
               b"Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n")
    noisy.close()
    kept = sink.getvalue().decode()
    assert "LeakageAudit: dropping" in kept and "ValueError: bad" in kept and "Traceback" in kept
    assert "cudart" not in kept and "InitializeLog" not in kept and "ZetaSQL" not in kept


@pytest.mark.slow
def test_the_command_line_is_quiet_by_default(tmp_path):
    """`radassist pipeline compile` (which loads TensorFlow and TFX) prints what it did and no start-up noise."""
    command = [sys.executable, "-m", "radassist.cli", "pipeline", "compile", "--output", str(tmp_path / "p.json")]
    result = subprocess.run(command, capture_output=True, timeout=300, cwd=REPO_ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"wrote" in result.stdout and (tmp_path / "p.json").exists()
    assert not quiet.NOISE.search(result.stderr), result.stderr.decode()[-3000:]
