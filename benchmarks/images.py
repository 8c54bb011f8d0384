"""Image sizes (issue 15): each image's Python environment installed into a folder the way its Dockerfile installs
it (`pip install ".[<groups>]"`, plus Dockerfile.train's separate DVC environment), without Docker; the installed
size, the number of distributions, the largest ones, and whether the portal's carries anything of the training stack.

Writes benchmarks/results/images.json. Usage: python -m benchmarks.images
"""

import argparse
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import write_result
from benchmarks.accuracy import RESULTS_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = {  # image -> (Dockerfile, the pyproject groups it installs into its main environment, its extra environments)
    "portal": ("Dockerfile.portal", "portal", {}),
    "train": ("Dockerfile.train", "train,serve", {"dvc": "data"}),
}
SMOKE = {  # what each Dockerfile's build checks, run here against the installed folder alone (no other packages)
    "portal": "import portal, portal.worker, fpdf, serving.client",
    "train": "import tfx, tensorflow_data_validation, ml_metadata, serving.server, pipelines.cli",
}
TRAINING_STACK = ("tensorflow", "tfx", "apache_beam", "mlflow", "tensorflow_data_validation", "tensorflow_transform",
                  "tensorflow_model_analysis", "keras", "tf_keras", "kfp")


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(base, name)) for base, _, names in os.walk(folder) for name in names
               if not os.path.islink(os.path.join(base, name)))


def install(groups: str, target: str) -> float:
    """``pip install --target`` of the package with ``groups`` (this interpreter: glibc 2.39+ wheels install)."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", target,
                    f"{ROOT}[{groups}]"], check=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - began


def distributions(target: str) -> dict[str, int]:
    """Installed bytes per distribution (its RECORD's files)."""
    sizes = {}
    for record in glob.glob(os.path.join(target, "*.dist-info", "RECORD")):
        name = re.sub(r"-[^-]+\.dist-info$", "", os.path.basename(os.path.dirname(record)))
        total = 0
        with open(record, encoding="utf-8") as handle:
            for line in handle:
                path = os.path.join(target, line.split(",", 1)[0])
                if os.path.isfile(path) and not os.path.islink(path):
                    total += os.path.getsize(path)
        sizes[name] = total
    return sizes


def smoke(image: str, target: str) -> bool:
    """The image's import check with nothing but the folder and the standard library on the path (``-S``: no site
    packages), so a dependency the group forgets fails here as it would in the image."""
    code = f"import sys; sys.path.insert(0, {target!r}); {SMOKE[image]}"
    environment = {"PATH": os.environ.get("PATH", ""), "TF_USE_LEGACY_KERAS": "1"}
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=tempfile.gettempdir(), env=environment)
    if done.returncode != 0:
        print(f"{image}: import check failed:\n{done.stderr[-2000:]}", file=sys.stderr)
    return done.returncode == 0


def measure(image: str, work: str) -> dict:
    dockerfile, groups, extra = IMAGES[image]
    target = os.path.join(work, image)
    seconds = install(groups, target)
    sizes = distributions(target)
    present = sorted(module for module in TRAINING_STACK if os.path.isdir(os.path.join(target, module)))
    result = {"dockerfile": dockerfile, "groups": groups, "installed_mb": round(folder_bytes(target) / 2 ** 20, 1),
              "distributions": len(sizes), "install_seconds": round(seconds, 1),
              "largest_mb": {name: round(size / 2 ** 20, 1) for name, size in
                             sorted(sizes.items(), key=lambda item: -item[1])[:10]},
              "training_stack_present": present, "imports_ok": smoke(image, target)}
    for name, group in extra.items():
        folder = os.path.join(work, f"{image}-{name}")
        install(group, folder)
        result[f"{name}_environment_mb"] = round(folder_bytes(folder) / 2 ** 20, 1)
    result["total_mb"] = round(result["installed_mb"] + sum(v for k, v in result.items()
                                                               if k.endswith("_environment_mb")), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "images.json"))
    parser.add_argument("--keep", action="store_true", help="keep the installed folders")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="radassist-images-")
    try:
        images = {image: measure(image, work) for image in IMAGES}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'image':8s} {'Python env (MB)':>16s} {'+ tools (MB)':>13s} {'distributions':>14s}  training stack")
    for image, found in images.items():
        print(f"{image:8s} {found['installed_mb']:16.1f} {found['total_mb'] - found['installed_mb']:13.1f} "
              f"{found['distributions']:14d}  {', '.join(found['training_stack_present']) or 'none'}")
    result = {"images": images, "portal_over_train": round(images["portal"]["installed_mb"]
                                                           / images["train"]["installed_mb"], 3),
              "python": platform.python_version(), "machine": platform.platform()}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
