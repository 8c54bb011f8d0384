"""The seams between the parts: who may import whom, and what each part runs without."""

import ast
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

# A meta-path finder that makes the named top-level packages uninstallable, for one child process.
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, Block())
"""


def _imports(folder: str) -> dict[str, set[str]]:
    """Top-level packages each module under ``folder`` imports (at any depth of the module)."""
    found = {}
    for root, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as handle:
                    tree = ast.parse(handle.read())
                names = set()
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names |= {alias.name.split(".")[0] for alias in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        names.add(node.module.split(".")[0])
                found[os.path.relpath(path, REPO_ROOT)] = names
    return found


@pytest.mark.parametrize(("folder", "forbidden"), [("portal", {"components", "pipelines"}),
                                                   ("serving", {"components", "pipelines", "portal"}),
                                                   ("components", {"portal", "serving"})])
def test_parts_import_only_the_contract_of_each_other(folder, forbidden):
    offenders = {path: sorted(names & forbidden) for path, names in _imports(folder).items() if names & forbidden}
    assert not offenders


def test_the_contract_depends_on_nothing_but_the_standard_library():
    (names,) = [names for path, names in _imports("radassist").items() if path.endswith("contract.py")]
    assert names <= set(sys.stdlib_module_names) | {"PIL"}  # Pillow only inside open_image, imported there


def _run(code: str, blocked: set[str], tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RADASSIST_DATABASE_URL": f"sqlite:///{tmp_path / 'portal.db'}",
           "RADASSIST_SCAN_STORE": str(tmp_path / "scans")}
    program = f"BLOCKED = {sorted(blocked)!r}\n{BLOCKER}\n{code}"
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, env=env)


@pytest.mark.slow  # a child process importing the portal, its worker and TF Serving's stubs
def test_the_portal_and_its_worker_run_without_tfx_beam_or_mlflow(tmp_path):
    """The portal's web app answers without TensorFlow at all; the worker and the serving client import without
    TFX, Beam, MLflow or the pipeline's libraries."""
    code = """
import sys
from portal import create_app
from portal.database import upgrade
app = create_app({"SECRET_KEY": "x" * 40}, environment="testing")
upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
assert app.test_client().get("/login").status_code == 200
assert "tensorflow" not in sys.modules, "the web app imported TensorFlow"
import portal.worker, serving.client  # the worker's model client: TF Serving's stubs
print("ok")
"""
    heavy = {"tfx", "apache_beam", "mlflow", "tensorflow_transform", "tensorflow_model_analysis",
             "tensorflow_data_validation", "tfx_bsl", "kfp", "ml_metadata", "components", "pipelines"}
    result = _run(code, heavy, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_the_dispatcher_names_the_missing_install(tmp_path):
    """Without the portal's dependencies, `radassist` still starts, and the portal's commands say what to install."""
    code = "import sys\nfrom radassist import cli\nsys.exit(cli.main(sys.argv[1:]))"
    listed = _run(code, {"flask", "sqlalchemy"}, tmp_path, "--help")
    assert listed.returncode == 0 and "portal" in listed.stdout, listed.stderr[-3000:]
    refused = _run(code, {"flask", "sqlalchemy"}, tmp_path, "portal")
    assert refused.returncode == 1 and "pip install 'radassist[portal]'" in refused.stderr, refused.stderr[-3000:]
