"""Monitoring benchmark (issue 14): does `radassist monitor` raise its alert on windows of shifted traffic, stay quiet
on in-distribution windows, and how long does a window of 200 scans take?

1. Traffic: the real model server (`radassist serve`, the model's `logging_config` on) answers every image of each
   pool one call at a time over gRPC, as the report workers call it: the official test split (in-distribution),
   the test split re-exported with acquisition shifts (darker window, black padding, lower contrast:
   benchmarks/robustness.py's shift functions) and LIDC-IDRI slices from another export protocol. The server's
   PredictionLog records are kept per pool.
2. The reference (the monitor's baseline): one half of the official test split (by image hash), what the model
   was validated on; in-distribution and shifted windows use only the other half's images.
   Windows: each window is a bootstrap draw of ``--window-calls`` of a pool's logged records, written as one log file
   dated in its own hour; the portal is not in the loop (it adds only the prediction context, not in the verdict).
3. The verdict: `radassist monitor --window START/END` (the TFX pipeline, a fresh process each time, as cron runs
   it) per window; its published summary says whether it alerted. The first run also computes the model version's
   baseline (cached for the others); ``monitor_seconds`` is the median over the other runs.

Writes benchmarks/results/monitoring.json (the issue's keys) and monitoring_windows.json (every window).
Usage: python -m benchmarks.monitoring --model-dir /tmp/outputs/models/radassist --data ../shared/data/chest-ct
"""

import argparse
import concurrent.futures
import datetime as dt
import glob
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import write_result
from benchmarks.accuracy import RESULTS_DIR
from benchmarks.robustness import SHIFTS, lidc_slices, shifted
from radassist.stack import ModelServerProcess

SHIFTS_WATCHED = ("gamma_1.6", "pad_0.15", "contrast_0.7", "gamma_1.3", "pad_0.08", "contrast_0.85")
MODEL = "radassist"


def split_paths(data_root: str, split: str) -> list[str]:
    return sorted(os.path.abspath(p) for p in glob.glob(os.path.join(data_root, split, "*", "*")) if os.path.isfile(p))


def log_traffic(model_dir: str, pools: dict[str, list[bytes]], work: str, clients: int = 2) -> dict[str, list[bytes]]:
    """Each pool's images through the real server, one image per call; returns each pool's logged records."""
    import tensorflow as tf

    from serving.client import ServingClient
    from serving.model_config import ServedModel, format_model_config
    from serving.prediction_log import LoggingConfig

    logs = os.path.join(work, "server-logs")
    config = os.path.join(work, "models.config")
    with open(config, "w") as handle:
        handle.write(format_model_config([ServedModel(MODEL, os.path.abspath(model_dir),
                                                      logging=LoggingConfig(logs, 1.0))]))
    os.makedirs(os.path.join(work, "empty"), exist_ok=True)
    server = ModelServerProcess(os.path.join(work, "empty"), "--model-config-file", config,
                                "--prediction-log-file-seconds", "2", log_path=os.path.join(work, "serve.log"))
    server.start()
    records = {}
    try:
        with ServingClient(server.address, MODEL, timeout=120) as client:
            for name, images in pools.items():
                started = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    list(pool.map(lambda image: client.predict([image]), images))
                deadline = time.monotonic() + 60
                while glob.glob(os.path.join(logs, MODEL, "*", "*.partial")) and time.monotonic() < deadline:
                    time.sleep(0.5)
                kept = os.path.join(work, "pools", name)
                os.makedirs(kept)
                for path in glob.glob(os.path.join(logs, MODEL, "*", "*.tfrecord.gz")):
                    shutil.move(path, os.path.join(kept, f"{os.path.basename(os.path.dirname(path))}-"
                                                         f"{os.path.basename(path)}"))
                records[name] = [raw.numpy() for raw in tf.data.TFRecordDataset(
                    sorted(glob.glob(os.path.join(kept, "*"))), compression_type="GZIP")]
                print(f"{name:22s} {len(images)} images served and logged in {time.perf_counter() - started:.0f} s "
                      f"({len(records[name])} records)", flush=True)
    finally:
        server.stop()
    return records


def reused_traffic(work: str, pools: dict) -> dict[str, list[bytes]]:
    """The records an earlier run of this benchmark logged (``--reuse-traffic``: the server's answers do not change)."""
    import tensorflow as tf

    return {name: [raw.numpy() for raw in tf.data.TFRecordDataset(
        sorted(glob.glob(os.path.join(work, "pools", name, "*"))), compression_type="GZIP")] for name in pools}


def held_out_half(image: bytes) -> bool:
    """Half of the test split (by image hash) is the monitor's reference; windows are drawn from the other half
    only, so no window image is a reference image."""
    return int(hashlib.sha256(image).hexdigest()[:8], 16) % 2 == 1


def reference_root(data_root: str, test_images: dict[str, bytes], work: str) -> str:
    """A data root holding the reference half of the test split (symbolic links)."""
    root = os.path.join(work, "reference-data")
    if os.path.isdir(root):
        return root
    os.makedirs(os.path.join(root, "test"))
    for path, image in test_images.items():
        if not held_out_half(image):
            target = os.path.join(root, "test", os.path.basename(os.path.dirname(path)))
            os.makedirs(target, exist_ok=True)
            os.symlink(path, os.path.join(target, os.path.basename(path)))
    return root


def window_records(records: list[bytes], sent: list[bytes], originals: list[bytes]) -> list[bytes]:
    """The records whose image is (an export of) a test image of the windows' half."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    half = {hashlib.sha256(image).digest() for image, original in zip(sent, originals, strict=True)
            if held_out_half(original)}
    kept = []
    for raw in records:
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        image = bytes(tf.make_ndarray(request.inputs["images"]).reshape(-1)[0])
        if hashlib.sha256(image).digest() in half:
            kept.append(raw)
    return kept


def classifier_records(raw: list[bytes]) -> list[bytes]:
    from tensorflow_serving.apis import prediction_log_pb2

    return [r for r in raw if prediction_log_pb2.PredictionLog.FromString(r).predict_log.request.model_spec
            .signature_name == "predict_image"]


def write_window(records: list[bytes], folder: str, start: dt.datetime) -> None:
    """One log file of the window's records, closed (dated) 30 minutes into the window's hour."""
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"bench-{start:%Y%m%dT%H%M%S}.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in records:
            writer.write(record)
    moment = (start + dt.timedelta(minutes=30)).timestamp()
    os.utime(path, (moment, moment))


def run_monitor(args, work: str, start: dt.datetime) -> tuple[dict, float]:
    end = start + dt.timedelta(hours=1)
    command = [sys.executable, "-m", "radassist.cli", "monitor", "--window", f"{start.isoformat()}/{end.isoformat()}",
               "--logs", os.path.join(work, "logs"), "--model", MODEL,
               "--model-base", os.path.dirname(os.path.abspath(args.model_dir)), "--data", args.data,
               "--reference-splits", "test",
               "--output", os.path.join(work, "outputs"), "--publish-dir", os.path.join(work, "monitoring")]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"radassist monitor failed ({done.returncode}):\n{done.stderr[-3000:]}")
    from components.monitoring import logs, publish

    label = logs.Window(start, end).label
    with open(os.path.join(work, "monitoring", MODEL, label, publish.SUMMARY_FILE)) as handle:
        return json.load(handle), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="<model_base>/radassist: the latest version is served")
    parser.add_argument("--data", default="../shared/data/chest-ct")
    parser.add_argument("--lung-seg", default="../shared/data/lung-seg")
    parser.add_argument("--windows", type=int, default=20, help="in-distribution windows")
    parser.add_argument("--shifted-windows", type=int, default=2, help="windows per shift and for LIDC")
    parser.add_argument("--window-calls", type=int, default=200)
    parser.add_argument("--work", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--reuse-traffic", action="store_true", help="use the records an earlier run left in --work")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "monitoring.json"))
    args = parser.parse_args()
    args.data = os.path.abspath(args.data)
    work = args.work or tempfile.mkdtemp(prefix="radassist-monitoring-bench-")
    os.makedirs(work, exist_ok=True)
    test_files = {path: pathlib.Path(path).read_bytes() for path in split_paths(args.data, "test")}
    test_images = list(test_files.values())
    pools = {"in_distribution": test_images}
    pools.update({name: shifted(test_images, SHIFTS[name][2]) for name in SHIFTS_WATCHED})
    lidc = list(lidc_slices(args.lung_seg).values())
    pools["lidc_other_protocol"] = lidc
    started = time.perf_counter()
    logged = reused_traffic(work, pools) if args.reuse_traffic else log_traffic(args.model_dir, pools, work)
    traffic_seconds = time.perf_counter() - started
    records = {}
    for name, raw in logged.items():
        calls = classifier_records(raw)
        # Test-split pools: only the half the reference lacks; LIDC has no part in the reference.
        records[name] = calls if name == "lidc_other_protocol" else window_records(calls, pools[name], test_images)
    args.data = reference_root(args.data, test_files, work)
    version = os.path.basename(sorted(glob.glob(os.path.join(work, "pools", "in_distribution", "*")))[0]).split("-")[0]

    plan = [("in_distribution", i) for i in range(args.windows)]
    plan += [(name, i) for name in pools if name != "in_distribution" for i in range(args.shifted_windows)]
    rng = np.random.default_rng(0)
    base = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=len(plan) + 2)).replace(minute=0, second=0, microsecond=0)
    windows = []
    for index, (pool, draw) in enumerate(plan):
        start = base + dt.timedelta(hours=index)
        chosen = rng.integers(0, len(records[pool]), args.window_calls)
        write_window([records[pool][i] for i in chosen], os.path.join(work, "logs", MODEL, version), start)
        summary, seconds = run_monitor(args, work, start)
        windows.append({"pool": pool, "draw": draw, "alert": summary["alert"], "verdict": summary["verdict"],
                        "images": summary["images"], "monitor_seconds": round(seconds, 1),
                        "groups": {g: {"score": r["score"], "p_value": r.get("p_value")}
                                   for g, r in summary["groups"].items()},
                        "embedding": summary["embedding"], "ood_share": summary["ood_share"]})
        print(f"{pool:22s} {draw:2d} {seconds:5.0f}s alert={summary['alert']!s:5s} {summary['verdict']:45s} "
              + " ".join(f"{g}={r['score']:.2f}" for g, r in summary["groups"].items())
              + (f" mmd2={summary['embedding']['mmd2']:.4f} p={summary['embedding']['p_value']:.3f}"
                 if summary["embedding"] else ""), flush=True)
    quiet = [w for w in windows if w["pool"] == "in_distribution"]
    moved = [w for w in windows if w["pool"] != "in_distribution"]
    result = {
        "shifted_windows_detected": round(float(np.mean([w["alert"] for w in moved])), 4),
        "false_alarm_rate": round(float(np.mean([w["alert"] for w in quiet])), 4),
        "monitor_seconds": float(np.median([w["monitor_seconds"] for w in windows[1:]])),
    }
    details = {**result, "reference": "half of the official test split (by image hash); windows are drawn from the "
               "other half", "reference_images": len(split_paths(args.data, "test")),
               "window_pool_images": {name: len(r) for name, r in records.items()},
               "windows_in_distribution": len(quiet), "windows_shifted": len(moved),
               "window_calls": args.window_calls, "first_run_seconds_with_baseline": windows[0]["monitor_seconds"],
               "monitor_seconds_max": max(w["monitor_seconds"] for w in windows[1:]),
               "traffic_seconds": round(traffic_seconds, 1), "cpu_count": os.cpu_count(),
               "detected_by_pool": {pool: float(np.mean([w["alert"] for w in windows if w["pool"] == pool]))
                                    for pool in pools},
               "windows": windows}
    print(json.dumps(result))
    write_result(result, args.output)
    write_result(details, os.path.join(os.path.dirname(args.output), "monitoring_windows.json"))


if __name__ == "__main__":
    main()
