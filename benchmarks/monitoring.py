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
4. One retraining round, through the portal: the whole stack (the model server logging its calls, gunicorn, a
   report worker) takes the six shifted exports of half of the windows' test images as a doctor's uploads; the
   doctor signs off every report with the true class; `radassist feedback export` writes the readings;
   `radassist monitor --feedback` scores the logged calls with TFMA; `radassist retrain` (per seed, on a fresh copy
   of the outputs that trained the served model, the data version tracked in a DVC registry) trains, evaluates and
   promotes by rule. Accuracy before (the served model) and after (the candidate) on the other half's shifted
   exports (never trained on), the official test split, its leak-free part, and the test images none of whose
   exports were confirmed.

Writes benchmarks/results/monitoring.json (the issue's keys: ``shifted_windows_detected``, ``false_alarm_rate``,
``monitor_seconds``, ``accuracy_before_retraining``, ``accuracy_after_retraining``), monitoring_windows.json
(every window) and monitoring_retraining.json (the round). ``--only windows|retraining`` runs one section.
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
    from components.ct_example_gen import split_files

    return split_files(os.path.abspath(data_root), [split])


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


def odd_hash(image: bytes, salt: str = "") -> bool:
    """Whether the image falls in the odd half of a split by hash (a salt draws another, independent halving)."""
    return int(hashlib.sha256(salt.encode() + image).hexdigest()[:8], 16) % 2 == 1


def held_out_half(image: bytes) -> bool:
    """Half of the test split (by image hash) is the monitor's reference; windows are drawn from the other half
    only, so no window image is a reference image."""
    return odd_hash(image)


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


# --- one retraining round through the portal (issue 14, part 5) ---------------------------------------------------
def leaked_test_files(data_root: str) -> set[str]:
    """The test files the pipeline's LeakageAudit calls leaked (copies or near copies of training images)."""
    from components.ct_example_gen import SkippedFile, read_scan_image
    from components.leakage_audit import ImageRecord, audit, perceptual_hash

    records = []
    for split in ("train", "valid", "test"):
        for path in split_paths(data_root, split):
            try:
                scan = read_scan_image(path, data_root)
            except SkippedFile:
                continue
            records.append(ImageRecord(split, scan.filename, scan.sha256, scan.label, perceptual_hash(scan.encoded)))
    result = audit(records)
    return {filename for split, filename in result.leaked if split == "test"}


def accuracy_report(model_dir: str, sets: dict[str, tuple[list[bytes], list[str]]]) -> dict[str, float]:
    """Accuracy of a model version (its predict_image, in process: what the server runs) on each named set."""
    from components.monitoring.baseline import Predictor

    predictor = Predictor(model_dir)
    found = {}
    for name, (images, labels) in sets.items():
        names = [n.decode() for n in predictor.outputs(images)["class_name"]]
        found[name] = round(sum(p == t for p, t in zip(names, labels, strict=True)) / len(labels), 4)
    return found


def sign_off_all(stack, session, jobs: list[dict], truth: dict[str, str]) -> dict:
    """The doctor signs off every report with the class the file name says (agree when the model said it)."""
    import requests

    from benchmarks.portal import csrf_token

    counts = {"agree": 0, "disagree": 0}
    for job in jobs:
        url = f"{stack.url}{job['report_url']}"
        token = csrf_token(session, url)
        label = truth[job["name"]]
        response = session.post(f"{url}/sign", data={"csrf_token": token, "assessment": "disagree",
                                                     "confirmed_class": label}, timeout=60)
        if "choose &#39;I agree&#39; instead" in response.text or "choose 'I agree' instead" in response.text:
            response = session.post(f"{url}/sign", data={"csrf_token": csrf_token(session, url),
                                                         "assessment": "agree"}, timeout=60)
            counts["agree"] += 1
        else:
            counts["disagree"] += 1
        if response.status_code != 200 or "signed off" not in response.text:
            raise requests.HTTPError(f"sign-off of {job['report_url']} failed ({response.status_code})")
    return counts


def portal_round(model_base: str, work: str, uploads: list[tuple[str, bytes]], truth: dict[str, str]) -> dict:
    """The real stack (model server logging its calls, gunicorn, a report worker): the doctor uploads the shifted
    exports, reads every report and signs it off with the true class; the admin exports the readings."""
    import re

    from benchmarks.portal import csrf_token, login
    from radassist.stack import Stack
    from serving.model_config import ServedModel, format_model_config
    from serving.prediction_log import LoggingConfig

    logs = os.path.join(work, "portal-logs")
    config = os.path.join(work, "portal-models.config")
    with open(config, "w") as handle:
        handle.write(format_model_config([ServedModel(MODEL, os.path.join(model_base, MODEL),
                                                      logging=LoggingConfig(logs, 1.0))]))
    users = (*Stack.BENCH_USERS, ("admin", "admin@bench.local", "Admin Bench", None))
    stack = Stack(model_base, os.path.join(work, "stack"), users=users,
                  server_args=("--model-config-file", config, "--prediction-log-file-seconds", "2"))
    os.makedirs(stack.workdir, exist_ok=True)
    started_at = dt.datetime.now(dt.UTC)
    stack.start()
    try:
        session = login(stack.url)
        patient_url = re.search(r'href="(/doctor/patients/\d+)"', session.get(f"{stack.url}/doctor/patients").text
                                ).group(1)
        jobs, began = [], time.perf_counter()
        for start in range(0, len(uploads), 60):
            response = session.post(f"{stack.url}{patient_url}/scans",
                                    data={"csrf_token": csrf_token(session, stack.url + patient_url)},
                                    files=[("scans", item) for item in uploads[start:start + 60]], timeout=300)
            response.raise_for_status()
            batch = re.search(r'data-url="(/api/batches/\d+)"', response.text).group(1)
            progress = {}
            while not progress.get("complete"):
                time.sleep(0.5)
                progress = session.get(stack.url + batch, timeout=30).json()
            jobs.extend(job for job in progress["jobs"] if job["report_url"])
            print(f"  portal: {len(jobs)}/{len(uploads)} reports ({time.perf_counter() - began:.0f} s)", flush=True)
        analysed = time.perf_counter() - began
        signed = sign_off_all(stack, session, jobs, truth)
        print(f"  portal: {len(jobs)} reports signed off ({signed})", flush=True)
        export = os.path.join(work, "feedback")
        done = subprocess.run([sys.executable, "-m", "radassist.cli", "feedback", "export", "--out",
                               os.path.join(export, "labels.csv"), "--images", os.path.join(export, "images")],
                              env=stack.env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"feedback export failed: {done.stderr[-2000:]}")
        deadline = time.monotonic() + 60
        while glob.glob(os.path.join(logs, MODEL, "*", "*.partial")) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stack.stop()
    return {"uploads": len(uploads), "reports": len(jobs), "signed": signed, "analyse_seconds": round(analysed, 1),
            "labels": os.path.join(export, "labels.csv"), "images": os.path.join(export, "images"), "logs": logs,
            "window": f"{started_at.isoformat()}/{dt.datetime.now(dt.UTC).isoformat()}"}


def retrain(args, work: str, seed: int, feedback: dict, registry: str) -> dict:
    """`radassist retrain` on a fresh copy of the outputs that trained the served model (its ML Metadata knows the
    last blessed model): the candidate, whether the rule promoted it, and its record (kept beside the outputs: a
    rerun of the benchmark reuses a finished round)."""
    outputs = os.path.join(work, f"retrain-seed{seed}")
    kept = os.path.join(outputs, "retrain-record.json")
    if os.path.exists(kept):
        with open(kept) as handle:
            return json.load(handle)
    shutil.rmtree(outputs, ignore_errors=True)
    shutil.copytree(args.trained_outputs, outputs, symlinks=True)
    command = [sys.executable, "-m", "radassist.cli", "retrain", "--feedback", feedback["labels"], "--images",
               feedback["images"], "--data", args.data_full, "--output", outputs, "--seed", str(seed),
               "--data-registry", registry]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    seconds = time.perf_counter() - began
    if done.returncode not in (0, 4):
        raise RuntimeError(f"retrain failed ({done.returncode}):\n{done.stderr[-3000:]}")
    record = {**json.loads(done.stdout[done.stdout.index("{"):]), "seconds": round(seconds, 1), "outputs": outputs}
    with open(kept, "w") as handle:
        json.dump(record, handle, indent=2, default=str)
    return record


def retraining_section(args) -> dict:
    """One retraining round with doctors' confirmed labels on the shifted windows' exports, through the portal."""
    work = os.path.join(args.work, "retraining")
    os.makedirs(work, exist_ok=True)
    data = args.data_full
    leaked = leaked_test_files(data)
    test = [(path, pathlib.Path(path).read_bytes()) for path in split_paths(data, "test")]
    label = {path: os.path.basename(os.path.dirname(path)) for path, _ in test}
    # The windows' half of the test split (the reference half stays untouched); of it, the doctors read the shifted
    # exports of one half ("confirmed") and the other half's exports measure the round (never trained on).
    windows = [(path, image) for path, image in test if held_out_half(image)]
    confirmed = [(path, image) for path, image in windows if not odd_hash(image, "confirmed")]
    measured = [(path, image) for path, image in windows if odd_hash(image, "confirmed")]
    exports, truth = {}, {}
    for shift in SHIFTS_WATCHED:
        for path, image in confirmed:
            name = f"{shift}-{hashlib.sha256(image).hexdigest()[:16]}.png"
            exports[name] = shifted([image], SHIFTS[shift][2])[0]
            truth[name] = label[path]
    uploads = sorted(exports.items())
    sets = {f"shifted_heldout/{shift}": (shifted([image for _, image in measured], SHIFTS[shift][2]),
                                         [label[path] for path, _ in measured]) for shift in SHIFTS_WATCHED}
    sets["official_test"] = ([image for _, image in test], [label[path] for path, _ in test])
    free = [(path, image) for path, image in test if os.path.relpath(path, data) not in leaked]
    sets["leak_free_test"] = ([image for _, image in free], [label[path] for path, _ in free])
    confirmed_paths = {path for path, _ in confirmed}
    untouched = [(path, image) for path, image in test if path not in confirmed_paths]
    sets["test_never_confirmed"] = ([image for _, image in untouched], [label[path] for path, _ in untouched])

    reference = reference_root(data, dict(test), args.work)
    model_base = os.path.join(args.trained_outputs, "models")
    served = os.path.join(model_base, MODEL, max(os.listdir(os.path.join(model_base, MODEL)), key=int))
    before = accuracy_report(served, sets)
    print(f"before: {before}", flush=True)
    portal_base = os.path.join(work, "portal-models")
    round_file = os.path.join(work, "portal-round.json")
    if os.path.exists(round_file):  # a rerun: the doctors have read these already
        with open(round_file) as handle:
            feedback, monitored, monitor_seconds = json.load(handle)
    else:
        shutil.rmtree(work)
        os.makedirs(work)
        shutil.copytree(model_base, portal_base)
        feedback = portal_round(portal_base, work, uploads, truth)
        monitored, monitor_seconds = run_monitor_labelled(reference, work, feedback)
        with open(round_file, "w") as handle:
            json.dump([feedback, monitored, monitor_seconds], handle)
    registry = os.path.join(work, "data-registry")
    if not os.path.isdir(registry):
        subprocess.run([sys.executable, "-m", "radassist.cli", "data", "init", "--data-registry", registry,
                        "--output", work], check=True, capture_output=True)
    rounds = []
    for seed in args.retrain_seeds:
        record = retrain(args, work, seed, feedback, registry)
        # The candidate the round trained, promoted or not; and what is served once the rule has spoken.
        after = accuracy_report(record["trained_model"], sets)
        rounds.append({"seed": seed, "promoted": record["promoted"], "reason": record["reason"],
                       "blessed": record["blessed"], "holdout_cases": record["holdout_cases"],
                       "holdout_accuracy": record["holdout_accuracy"], "data_version": record["data_version"],
                       "retrain_seconds": record["seconds"], "after": after,
                       "served_after": after if record["promoted"] else before})
        print(f"seed {seed}: promoted={record['promoted']} ({record['reason']}) after: {after}", flush=True)

    def stat(values):
        return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                "min": round(float(np.min(values)), 4), "max": round(float(np.max(values)), 4)}

    afters = [r["after"] for r in rounds]
    shifted_names = [f"shifted_heldout/{shift}" for shift in SHIFTS_WATCHED]

    def summary(result: dict) -> dict:
        return {"shifted_heldout": round(float(np.mean([result[n] for n in shifted_names])), 4),
                "official_test": result["official_test"], "leak_free_test": result["leak_free_test"],
                "test_never_confirmed": result["test_never_confirmed"]}

    return {
        "before": summary(before),
        "after": {key: stat([summary(a)[key] for a in afters]) for key in summary(before)},
        "promoted": sum(r["promoted"] for r in rounds), "seeds": len(rounds),
        "served_after": {key: stat([summary(r["served_after"])[key] for r in rounds]) for key in summary(before)},
        "before_by_set": before, "after_by_seed": rounds,
        "confirmed_cases": len(uploads), "confirmed_originals": len(confirmed), "heldout_originals": len(measured),
        "portal": {k: v for k, v in feedback.items() if k in ("uploads", "reports", "signed", "analyse_seconds")},
        "monitor_labelled": monitored.get("feedback"), "monitor_verdict": monitored.get("verdict"),
        "monitor_seconds": round(monitor_seconds, 1),
        "note": "after: the model each round trained (promoted or not); served_after: what is served once the "
                "promotion rule has spoken (the candidate if promoted, else the model before). shifted_heldout: the "
                "six shifted exports of test images whose exports no doctor read (never trained on); official_test "
                "and leak_free_test include originals whose shifted exports were confirmed and trained on; "
                "test_never_confirmed excludes them",
    }


def run_monitor_labelled(reference: str, work: str, feedback: dict) -> tuple[dict, float]:
    """`radassist monitor` over the portal round's logged calls with the doctors' readings: TFMA's accuracy."""
    window = feedback["window"]
    command = [sys.executable, "-m", "radassist.cli", "monitor", "--window", window, "--logs", feedback["logs"],
               "--model", MODEL, "--model-base", os.path.join(work, "portal-models"), "--data", reference,
               "--reference-splits", "test", "--output", os.path.join(work, "monitor-outputs"),
               "--publish-dir", os.path.join(work, "monitoring"), "--feedback", feedback["labels"]]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"radassist monitor failed ({done.returncode}):\n{done.stderr[-3000:]}")
    (path,) = glob.glob(os.path.join(work, "monitoring", MODEL, "*", "summary.json"))
    with open(path) as handle:
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
    parser.add_argument("--only", choices=("windows", "retraining"), help="run one section, updating its keys only")
    parser.add_argument("--trained-outputs", help="the output folder that trained --model-dir's model (its ML "
                                                  "Metadata; default: two folders above --model-dir)")
    parser.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    args.data = os.path.abspath(args.data)
    args.data_full = args.data
    args.trained_outputs = os.path.abspath(args.trained_outputs or os.path.dirname(os.path.dirname(
        os.path.abspath(args.model_dir))))
    work = args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="radassist-monitoring-bench-"))
    os.makedirs(work, exist_ok=True)
    if args.only != "windows":
        retraining = retraining_section(args)
        write_result(retraining, os.path.join(os.path.dirname(args.output), "monitoring_retraining.json"))
        result = {}
        if os.path.exists(args.output):
            with open(args.output) as handle:
                result = json.load(handle)
        result["accuracy_before_retraining"] = retraining["before"]
        result["accuracy_after_retraining"] = retraining["after"]
        print(json.dumps({key: result[key] for key in ("accuracy_before_retraining", "accuracy_after_retraining")},
                         indent=2))
        write_result(result, args.output)
        if args.only == "retraining":
            return
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
    if os.path.exists(args.output):
        with open(args.output) as handle:
            result = {**json.load(handle), **result}
    write_result(result, args.output)
    write_result(details, os.path.join(os.path.dirname(args.output), "monitoring_windows.json"))


if __name__ == "__main__":
    main()
