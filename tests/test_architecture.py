"""The seams between the parts: who may import whom, and what each part runs without."""

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile

import contract_model
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


def _copy_of_the_parts(destination) -> list[str]:
    """Copies the tracked files of the package (and its pyproject, README) to ``destination``: an install or build
    from the checkout itself would leave build/ and egg-info in it. Returns the parts' tracked paths."""
    parts = subprocess.run(["git", "ls-files", "radassist", "pipelines", "components", "serving", "portal"],
                           capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout.split()
    for path in [*parts, "pyproject.toml", "README.md"]:
        (destination / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, path), destination / path)
    return parts


PORTAL_CHILD = """
import io, json, sys
import numpy as np
from PIL import Image
from portal import create_app
app = create_app({"SECRET_KEY": "x" * 40}, environment="testing")
assert app.test_client().get("/login").status_code == 200
import portal.worker
from serving.client import ServingClient
pixels = np.clip(np.linspace(70, 130, 96)[None, :].repeat(96, 0), 0, 255).astype(np.uint8)
png = io.BytesIO()
Image.fromarray(pixels).save(png, format="PNG")
with ServingClient(sys.argv[1], timeout=30) as client:
    version, info = client.model_info()
    (explained,) = client.explain_batch([png.getvalue()])
    print(json.dumps({"classes": list(info.class_names), "class": explained.class_name,
                      "heatmap": list(explained.heatmap.shape), "version": explained.model_version,
                      "status": client.model_status()}))
"""


@pytest.mark.slow  # a fresh virtual environment with the portal group only, and a model server
def test_the_portal_group_alone_runs_the_portal_and_its_workers_model_calls(tmp_path, model_server):
    """``pip install radassist[portal]`` into an empty environment brings no TensorFlow, TFX, Beam or MLflow, and
    there the portal migrates its database and answers, and the worker's model client reads the model's info,
    explains a scan and lists the served versions."""
    _copy_of_the_parts(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", f"{tmp_path / 'source'}[portal]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               check=True).stdout.lower()
    heavy = ("tensorflow", "tfx", "apache-beam", "mlflow", "kfp", "ml-metadata", "tf-keras", "keras")
    assert not [name for name in heavy if f"\n{name}==" in f"\n{installed}"]
    env = {**os.environ, "RADASSIST_DATABASE_URL": f"sqlite:///{tmp_path / 'portal.db'}",
           "RADASSIST_SCAN_STORE": str(tmp_path / "scans"), "RADASSIST_ENV": "testing"}
    migrated = subprocess.run([str(venv / "bin" / "radassist"), "migrate"], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    result = subprocess.run([python, "-c", PORTAL_CHILD, model_server.address], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["classes"] == list(contract_model.CLASS_NAMES) and answer["class"] in answer["classes"]
    assert answer["version"] == 1 and len(answer["heatmap"]) == 2
    assert answer["status"] == [{"version": 1, "state": "AVAILABLE", "error": ""}]


def test_the_dispatcher_names_the_missing_install(tmp_path):
    """Without the portal's dependencies, `radassist` still starts, and the portal's commands say what to install."""
    code = "import sys\nfrom radassist import cli\nsys.exit(cli.main(sys.argv[1:]))"
    listed = _run(code, {"flask", "sqlalchemy"}, tmp_path, "--help")
    assert listed.returncode == 0 and "portal" in listed.stdout, listed.stderr[-3000:]
    refused = _run(code, {"flask", "sqlalchemy"}, tmp_path, "portal")
    assert refused.returncode == 1 and "pip install 'radassist[portal]'" in refused.stderr, refused.stderr[-3000:]


@pytest.mark.slow  # builds the wheel (pip fetches the build backend)
def test_the_wheel_carries_every_file_the_parts_read(tmp_path):
    """The images install the package, not the checkout: templates, migrations' template and TF Serving's
    descriptors must be in the wheel, as every tracked file of the parts is."""
    parts = _copy_of_the_parts(tmp_path / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(tmp_path / "source")], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("radassist-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    assert not sorted(set(parts) - packaged)
