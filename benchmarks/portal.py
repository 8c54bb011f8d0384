"""Portal benchmark: the whole stack as deployed (model server, gunicorn, one report worker) on this machine.

1. Bulk: a doctor uploads N real slices in one request; time until every report (with its PDF) is ready,
   against the pure model time for the same N images (the SavedModel's ``explain`` signature called in-process,
   at the worker's batch size, after warm-up). Target: within 1.3x.
2. Report page: U concurrent users (one session each, think time 0.5-1.5 s between page views) open report
   pages for a fixed time; p50/p99 latency of the HTML page. Target: p99 < 150 ms at 50 users.
3. Worklist: 10,000 scans of 20 doctors' patients in the database (reports in every state and flag, failed and
   pending analyses), the 20 doctors reading their worklists at once (default order, filters, sorts, later pages;
   think time 0.5-1.5 s); p50/p99 of the HTML page (``worklist_p99_ms``). Target: p99 < 200 ms. PostgreSQL when
   ``--database-url`` names it (production's database), else the stack's SQLite.

``--only worklist`` runs section 3 alone (no model needed) and updates only its keys in the result file.

Usage: python -m benchmarks.portal --model-base outputs/models --data ../shared/data/chest-ct
"""

import argparse
import datetime as dt
import glob
import io
import json
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


def closed_loop(sessions: list[requests.Session], next_url, expected: str, seconds: float) -> dict:
    """One thread per session for ``seconds``: GET ``next_url(rng)``, count it good when it answers 200 with
    ``expected`` in the page, think 0.5-1.5 s, again; latency percentiles of the good ones."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.time() + seconds

    def user(index: int) -> None:
        rng, session = random.Random(index), sessions[index]
        time.sleep(rng.uniform(0, 1.0))  # users do not arrive in lockstep
        while time.time() < deadline:
            started = time.perf_counter()
            try:
                response = session.get(next_url(rng), timeout=10)
                ok = response.status_code == 200 and expected in response.text
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if ok else errors).append(elapsed)
            time.sleep(rng.uniform(0.5, 1.5))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"seconds": seconds, **percentiles(latencies), "errors": len(errors),
            "requests_per_second": len(latencies) / seconds}


def load(stack: Stack, cookies, report_urls: list[str], users: int, seconds: float) -> dict:
    """``users`` sessions (one login's cookies) opening report pages."""
    sessions = []
    for _ in range(users):
        session = requests.Session()
        session.cookies.update(cookies)
        sessions.append(session)
    return {"users": users, **closed_loop(sessions, lambda rng: stack.url + rng.choice(report_urls),
                                          "Decision support", seconds)}


WORKLIST_QUERIES = ("", "state=unsigned", "flag=lesion", "flag=ood", "sort=probability", "sort=date&order=asc",
                    "page=2", "page=7", "state=final&per_page=50", "class=adenocarcinoma", "from=2026-06-01",
                    "sort=patient")


def seed_worklists(database_url: str, scan_store: str, doctors: int, scans: int, seed: int = 0) -> list[str]:
    """``scans`` scans spread over ``doctors`` doctors' patients (5 each), written as the worker and sign-off write
    them: 70 % drafts (10 % out of domain, 15 % uncertain, 30 % with a lesion), 20 % final, 5 % failed, 5 % being
    analysed. Returns the doctors' emails (password PASSWORD)."""
    import sqlalchemy as sa
    from PIL import Image

    from portal import create_app
    from portal.accounts import create_user
    from portal.models import Batch, Job, Report, Role, Scan, db
    from portal.segmentation import LesionMeasurement, SegmentationResult

    rng = random.Random(seed)
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SCAN_STORE": scan_store}, environment="testing")
    classes = ("adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma", "normal")
    titles = json.dumps(dict(zip(classes, ("Adenocarcinoma", "Large cell carcinoma", "Squamous cell carcinoma",
                                           "Normal"), strict=True)))
    with app.app_context():
        from portal.extensions import blobs

        images = []
        for value in range(8):
            buffer = io.BytesIO()
            Image.new("L", (512, 512), 30 + 25 * value).save(buffer, format="PNG")
            images.append(blobs.store.put(buffer.getvalue()))
        emails, patient_ids = [], []
        for index in range(doctors):
            doctor = create_user(f"worklist{index}@bench.local", f"Dr. Worklist {index}", Role.DOCTOR, PASSWORD)
            emails.append(doctor.email)
            for number in range(5):
                patient = create_user(f"worklist{index}-patient{number}@bench.local", f"Patient {index}-{number}",
                                      Role.PATIENT, PASSWORD, doctor=doctor)
                patient_ids.append((patient.id, doctor.id))
        db.session.commit()
        start = dt.datetime(2026, 1, 1)
        for chunk in range(0, scans, 1000):
            rows = []
            for number in range(chunk, min(scans, chunk + 1000)):
                patient_id, doctor_id = patient_ids[number % len(patient_ids)]
                image = rng.choice(images)
                rows.append({"patient_id": patient_id, "uploaded_by_id": doctor_id, "name": f"slice-{number}.png",
                             "kind": "png", "original_sha256": image, "image_sha256": image, "width": 512,
                             "height": 512, "created_at": start + dt.timedelta(minutes=47 * number)})
            scan_ids = db.session.scalars(sa.insert(Scan).returning(Scan.id), rows).all()
            batches = db.session.scalars(sa.insert(Batch).returning(Batch.id),
                                         [{"created_by_id": row["uploaded_by_id"], "patient_id": row["patient_id"]}
                                          for row in rows[::50]]).all()
            jobs, reports = [], []
            for offset, (scan_id, row) in enumerate(zip(scan_ids, rows, strict=True)):
                kind = rng.random()
                status = "failed" if 0.90 <= kind < 0.95 else "queued" if kind >= 0.95 else "done"
                jobs.append({"batch_id": batches[offset // 50], "scan_id": scan_id, "status": status,
                             "last_error": "model server unavailable" if status == "failed" else None})
                if status != "done":
                    continue
                cancer = rng.random()
                probabilities = dict(zip(classes, (cancer * 0.5, cancer * 0.3, cancer * 0.2, 1 - cancer),
                                         strict=True))
                lesion = rng.random() < 0.3
                segmentation = SegmentationResult(
                    model_name="radassist-seg", model_version=1, threshold=0.5, lesion_count=int(lesion),
                    lesions=(LesionMeasurement(number=1, area_px=80, long_axis_px=12, short_axis_px=8,
                                               long_axis_angle=0, centroid=(200, 200), box=(194, 194, 206, 206),
                                               mean_probability=0.8, max_probability=0.95),) if lesion else ())
                final = kind >= 0.70
                reports.append({
                    "scan_id": scan_id, "version": 1, "status": "final" if final else "draft",
                    "predicted_class": max(probabilities, key=probabilities.get),
                    "probabilities_json": json.dumps(probabilities), "class_titles_json": titles,
                    "uncertain": 0.10 <= kind < 0.25, "in_domain": kind >= 0.10, "overlay_sha256": row["image_sha256"],
                    "model_name": "radassist", "model_version": 1, "cancer_probability": cancer,
                    "lesion_count": int(lesion), "segmentation_json": segmentation.to_json(), "findings": "",
                    "signed_by_id": row["uploaded_by_id"] if final else None,
                    "signed_at": row["created_at"] + dt.timedelta(hours=3) if final else None,
                    "created_at": row["created_at"]})
            db.session.execute(sa.insert(Job), jobs)
            db.session.execute(sa.insert(Report), reports)
            db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return emails


def login_patiently(url: str, email: str) -> requests.Session:
    """``login`` that waits out the login rate limit (many doctors sign in from one address here)."""
    for _ in range(60):
        try:
            return login(url, email)
        except requests.HTTPError as error:
            if error.response.status_code != 429:
                raise
            time.sleep(2)
    raise RuntimeError(f"{email} could not log in: rate limited for two minutes")


def worklist_load(url: str, emails: list[str], seconds: float) -> dict:
    """Every doctor at once, each paging and filtering their own worklist."""
    sessions = [login_patiently(url, email) for email in emails]

    def worklist_url(rng: random.Random) -> str:
        query = rng.choice(WORKLIST_QUERIES)
        return f"{url}/doctor/worklist" + (f"?{query}" if query else "")

    return {"doctors": len(emails), **closed_loop(sessions, worklist_url, 'id="worklist"', seconds)}


def worklist_section(args) -> dict:
    import sqlalchemy as sa

    workdir = tempfile.mkdtemp(prefix="radassist-worklist-bench-")
    database_url = args.database_url or f"sqlite:///{workdir}/portal.db"
    if database_url.startswith("postgresql"):  # a fresh database of its own, whatever an earlier run left
        url = sa.engine.make_url(database_url)
        server = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}"'))
            connection.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
        server.dispose()
    stack = Stack(os.path.abspath(args.model_base), workdir, report_workers=0, users=(),
                  env={"RADASSIST_DATABASE_URL": database_url}).start(model_server=False)
    try:
        print(f"worklist: seeding {args.worklist_scans} scans for {args.doctors} doctors ...", flush=True)
        started = time.perf_counter()
        emails = seed_worklists(database_url, os.path.join(workdir, "scans"), args.doctors, args.worklist_scans)
        print(f"  {time.perf_counter() - started:.0f} s; {args.doctors} doctors reading for {args.seconds:.0f} s ...",
              flush=True)
        result = worklist_load(stack.url, emails, args.seconds)
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {**result, "scans": args.worklist_scans,
            "database": database_url.split(":", 1)[0].split("+", 1)[0]}


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
    parser.add_argument("--only", choices=("worklist",), help="run this section alone, updating its keys only")
    parser.add_argument("--doctors", type=int, default=20)
    parser.add_argument("--worklist-scans", type=int, default=10_000)
    parser.add_argument("--database-url", default=os.environ.get("RADASSIST_BENCH_DATABASE_URL"),
                        help="the worklist section's database, made afresh (e.g. "
                             "postgresql+psycopg://postgres@127.0.0.1/radassist_bench); default SQLite")
    args = parser.parse_args()
    if args.only == "worklist":
        with open(args.out) as handle:
            result = json.load(handle)
        result["worklist"] = worklist_section(args)
        result["worklist_p99_ms"] = result["worklist"]["p99_ms"]
        result["targets"]["worklist_p99_ms_max"] = 200
        print(f"{'worklist page p99 (ms), ' + str(args.doctors) + ' doctors':<44}{result['worklist_p99_ms']:>12.1f}"
              f"{'< 200':>12}")
        write_result(result, args.out)
        return
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
    worklist = worklist_section(args)
    result = {
        "benchmark": "portal", "model_time": model, "report_workers": args.report_workers, "bulk": bulk_result,
        "bulk_over_model_time": bulk_result["seconds"] / model["seconds"], "report_page": page,
        "worklist": worklist, "worklist_p99_ms": worklist["p99_ms"],
        "targets": {"bulk_over_model_time_max": 1.3, "report_page_p99_ms_max": 150, "worklist_p99_ms_max": 200},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(f"\n{'measure':<44}{'value':>12}{'target':>12}")
    print(f"{'pure model time, ' + str(args.scans) + ' images (s)':<44}{model['seconds']:>12.1f}")
    print(f"{'bulk: upload to all PDFs ready (s)':<44}{bulk_result['seconds']:>12.1f}")
    print(f"{'bulk / model time':<44}{result['bulk_over_model_time']:>12.2f}{'<= 1.3':>12}")
    print(f"{'report page p50 (ms), ' + str(args.users) + ' users':<44}{page['p50_ms']:>12.1f}")
    print(f"{'report page p99 (ms), ' + str(args.users) + ' users':<44}{page['p99_ms']:>12.1f}{'< 150':>12}")
    print(f"{'report page errors':<44}{page['errors']:>12}")
    print(f"{'worklist page p99 (ms), ' + str(args.doctors) + ' doctors':<44}{worklist['p99_ms']:>12.1f}{'< 200':>12}")
    write_result(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
