"""Portal benchmark: the whole stack as deployed (model server, gunicorn, one report worker) on this machine.

1. Bulk: a doctor uploads N real slices in one request; time until every report (with its PDF) is ready,
   against the pure model time for the same N images (the SavedModel's ``explain`` signature called in-process,
   at the worker's batch size, after warm-up). Target: within 1.3x.
2. Report page: U concurrent users (one session each, think time 0.5-1.5 s between page views) open report
   pages for a fixed time; p50/p99 latency of the HTML page. Target: p99 < 150 ms at 50 users.

Usage: python -m benchmarks.portal --model-base outputs/models --data ../shared/data/chest-ct
"""

import argparse
import glob
import os
import pathlib
import platform
import random
import re
import shutil
import sys
import tempfile
import threading
import time

import requests

from benchmarks import write_result
from benchmarks.serving import percentiles
from radassist.stack import PASSWORD, Stack

RESULTS = os.path.join(os.path.dirname(__file__), "results", "portal.json")


def real_slices(data: str, count: int) -> list[tuple[str, bytes]]:
    paths = sorted(glob.glob(os.path.join(data, "test", "*", "*.png")) + glob.glob(os.path.join(data, "test", "*",
                                                                                                 "*.jpg")))
    random.Random(0).shuffle(paths)
    if len(paths) < count:
        raise SystemExit(f"{data} has only {len(paths)} test slices; need {count}")
    return [(os.path.basename(p), pathlib.Path(p).read_bytes()) for p in paths[:count]]


def model_seconds(model_base: str, images: list[bytes], batch_size: int) -> dict:
    """Pure model time: ``explain`` in-process on the same images, at the worker's batch size, after warm-up."""
    import tensorflow as tf

    from radassist.contract import Signature

    name = os.listdir(model_base)[0]
    version = max(os.listdir(os.path.join(model_base, name)), key=int)
    explain = tf.saved_model.load(os.path.join(model_base, name, version)).signatures[Signature.EXPLAIN]
    explain(images=tf.constant(images[:batch_size]))
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        explain(images=tf.constant(images[i : i + batch_size]))
    return {"seconds": time.perf_counter() - started, "batch_size": batch_size, "model": f"{name}/{version}"}


def csrf_token(session: requests.Session, url: str) -> str:
    """The CSRF token of the form on the page at ``url``."""
    return re.search(r'name="csrf_token" value="([^"]+)"', session.get(url, timeout=30).text).group(1)


def login(url: str, email: str = "doctor@bench.local", password: str = PASSWORD,
          session: requests.Session | None = None) -> requests.Session:
    """``session`` (a new one by default) logged in as ``email``; raises when the portal refuses."""
    session = session or requests.Session()
    response = session.post(f"{url}/login", data={"email": email, "password": password,
                                                  "csrf_token": csrf_token(session, f"{url}/login")}, timeout=30)
    response.raise_for_status()
    return session


def bulk(stack: Stack, session: requests.Session, slices: list[tuple[str, bytes]]) -> dict:
    patients = session.get(f"{stack.url}/doctor/patients").text
    patient_url = re.search(r'href="(/doctor/patients/\d+)"', patients).group(1)
    token = csrf_token(session, stack.url + patient_url)
    started = time.perf_counter()
    response = session.post(f"{stack.url}{patient_url}/scans", data={"csrf_token": token},
                            files=[("scans", (name, data)) for name, data in slices])
    response.raise_for_status()
    uploaded = time.perf_counter() - started
    batch = re.search(r'data-url="(/api/batches/\d+)"', response.text).group(1)
    progress = {}
    while not progress.get("complete"):
        time.sleep(0.25)
        progress = session.get(stack.url + batch).json()
    elapsed = time.perf_counter() - started
    report_urls = [job["report_url"] for job in progress["jobs"] if job["report_url"]]
    pdfs = sum(session.get(f"{stack.url}{u}/report.pdf").content.startswith(b"%PDF") for u in report_urls)
    return {"scans": len(slices), "upload_seconds": uploaded, "seconds": elapsed, "done": progress["counts"]["done"],
            "failed": progress["counts"]["failed"], "pdfs": pdfs, "report_urls": report_urls}


def load(stack: Stack, cookies, report_urls: list[str], users: int, seconds: float) -> dict:
    """``users`` threads, each a session opening report pages with 0.5-1.5 s of think time."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.time() + seconds

    def user(index: int) -> None:
        rng, session = random.Random(index), requests.Session()
        session.cookies.update(cookies)
        time.sleep(rng.uniform(0, 1.0))  # users do not arrive in lockstep
        while time.time() < deadline:
            started = time.perf_counter()
            try:
                response = session.get(stack.url + rng.choice(report_urls), timeout=10)
                ok = response.status_code == 200 and "Decision support" in response.text
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if ok else errors).append(elapsed)
            time.sleep(rng.uniform(0.5, 1.5))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"users": users, "seconds": seconds, **percentiles(latencies), "errors": len(errors),
            "requests_per_second": len(latencies) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", default=os.environ.get("RADASSIST_MODEL_BASE", "outputs/models"))
    parser.add_argument("--data", default=os.environ.get("RADASSIST_FULL_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--batch-size", type=int, default=8, help="the report worker's batch size")
    parser.add_argument("--report-workers", type=int, default=int(os.environ.get("RADASSIST_REPORT_WORKERS", 1)))
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, database)")
    args = parser.parse_args()
    if not os.path.isdir(args.model_base):
        raise SystemExit(f"no models at {args.model_base}: run `make train` first (or pass --model-base)")

    slices = real_slices(args.data, args.scans)
    print(f"model time for {args.scans} images (in-process explain, batch {args.batch_size}) ...", flush=True)
    model = model_seconds(args.model_base, [data for _, data in slices], args.batch_size)
    print(f"  {model['seconds']:.1f} s", flush=True)
    workdir = tempfile.mkdtemp(prefix="radassist-portal-bench-")
    stack = Stack(os.path.abspath(args.model_base), workdir, args.report_workers).start()
    try:
        session = login(stack.url)
        print(f"bulk: {args.scans} scans, upload to all reports and PDFs ready ...", flush=True)
        bulk_result = bulk(stack, session, slices)
        print(f"  {bulk_result['seconds']:.1f} s", flush=True)
        report_pages = bulk_result.pop("report_urls")
        print(f"report page: {args.users} users for {args.seconds:.0f} s ...", flush=True)
        page = load(stack, session.cookies, report_pages, args.users, args.seconds)
    finally:
        stack.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "portal", "model_time": model, "report_workers": args.report_workers, "bulk": bulk_result,
        "bulk_over_model_time": bulk_result["seconds"] / model["seconds"], "report_page": page,
        "targets": {"bulk_over_model_time_max": 1.3, "report_page_p99_ms_max": 150},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(f"\n{'measure':<44}{'value':>12}{'target':>12}")
    print(f"{'pure model time, ' + str(args.scans) + ' images (s)':<44}{model['seconds']:>12.1f}")
    print(f"{'bulk: upload to all PDFs ready (s)':<44}{bulk_result['seconds']:>12.1f}")
    print(f"{'bulk / model time':<44}{result['bulk_over_model_time']:>12.2f}{'<= 1.3':>12}")
    print(f"{'report page p50 (ms), ' + str(args.users) + ' users':<44}{page['p50_ms']:>12.1f}")
    print(f"{'report page p99 (ms), ' + str(args.users) + ' users':<44}{page['p99_ms']:>12.1f}{'< 150':>12}")
    print(f"{'report page errors':<44}{page['errors']:>12}")
    write_result(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
