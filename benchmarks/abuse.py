"""Abuse benchmark: a real stack attacked the way an outsider, a patient, a second doctor and a compromised network
neighbour would, every attack of issue 11 plus those that already held.

The stack is the deployment's shape on one machine: the model server with mutual TLS and a bearer token, the portal
(gunicorn, 2 workers) with one report worker under its supervisor, SQLite, the local blob store, rate limits in
Redis. First a normal 100-scan bulk analysis sets each process's memory baseline; then every attack runs, each
checked for its expected answer and, for upload and inference attacks, for the peak memory of every process (target:
under 1.5x its baseline peak). Reliability attacks (kill -9 of the report worker, the model server, a web worker)
come last.

Usage: python -m benchmarks.abuse --model-base outputs/models --data ../shared/data/chest-ct
Writes benchmarks/results/abuse.json: ``attacks``, ``held``, ``failed`` and one entry per attack (keyed by its name).
"""

import argparse
import base64
import concurrent.futures
import dataclasses
import glob
import io
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np
import psutil
import requests
from PIL import Image

from benchmarks import write_result
from benchmarks.portal import PASSWORD, Stack, csrf_token, login, real_slices

RESULTS = os.path.join(os.path.dirname(__file__), "results", "abuse.json")
MEMORY_FACTOR = 1.5
TOKEN = "abuse-benchmark-token-" + "0123456789abcdef"


# --- memory ----------------------------------------------------------------------------------------------------
class Memory:
    """Samples the RSS of the stack's processes by role every 50 ms; ``window()`` gives the peak per role."""

    ROLES = ("model_server", "web_worker", "gunicorn_master", "report_worker", "supervisor")

    def __init__(self, stack: Stack):
        self.stack = stack
        self._peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def processes(self) -> dict[str, list[psutil.Process]]:
        roles = {role: [] for role in self.ROLES}
        try:
            roles["model_server"].append(psutil.Process(self.stack.names["serve"].pid))
            supervisor = psutil.Process(self.stack.names["portal"].pid)
            roles["supervisor"].append(supervisor)
            for child in supervisor.children():
                line = " ".join(child.cmdline())
                if "gunicorn" in line:
                    roles["gunicorn_master"].append(child)
                    roles["web_worker"] += child.children()
                elif " worker" in line:
                    roles["report_worker"].append(child)
        except psutil.Error:
            pass
        return roles

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for role, processes in self.processes().items():
                for process in processes:
                    try:
                        rss = process.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    with self._lock:
                        self._peaks[role] = max(self._peaks.get(role, 0.0), rss)

    def reset(self) -> None:
        with self._lock:
            self._peaks = {}

    def peaks(self) -> dict[str, float]:
        time.sleep(0.15)  # one more sample after the action
        with self._lock:
            return {role: round(value, 1) for role, value in self._peaks.items()}

    def close(self) -> None:
        self._stop.set()


# --- the attacks -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    held: bool
    got: str


ATTACKS: list[tuple[str, str, str, object]] = []  # (name, category, what is sent, function)


def attack(category: str, sent: str):
    def register(function):
        ATTACKS.append((function.__name__, category, sent, function))
        return function

    return register


_ADDRESSES = iter(f"198.18.{i // 250}.{i % 250 + 1}" for i in range(60000))


def client(address: str | None = None) -> requests.Session:
    """A browser of its own: the stack trusts one proxy (an ingress), so each client comes from its own address and
    one attack's login attempts do not use up another's rate limit."""
    session = requests.Session()
    session.headers["X-Forwarded-For"] = address or next(_ADDRESSES)
    return session


def _login(url: str, email: str) -> requests.Session:
    return login(url, email, session=client())


def _png(width: int, height: int, value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header declares ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 90).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"\xff\xc0") + 5  # SOF0: length(2) precision(1) height(2) width(2)
    data[start:start + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _dicom_declaring(frames: int, side: int) -> bytes:
    import pydicom
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns = frames, side, side
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


class Target:
    """The stack, its users' sessions and the objects the attacks aim at."""

    def __init__(self, stack: Stack, pki: dict, slices: list[tuple[str, bytes]]):
        self.stack, self.url, self.pki, self.slices = stack, stack.url, pki, slices
        self.doctor = _login(self.url, "doctor@abuse.local")
        self.patient = _login(self.url, "patient@abuse.local")
        self.intruder_doctor = _login(self.url, "doctor2@abuse.local")
        self.intruder_patient = _login(self.url, "patient2@abuse.local")
        self.admin = _login(self.url, "admin@abuse.local")
        patients = self.doctor.get(f"{self.url}/doctor/patients", timeout=30).text
        self.patient_page = self.url + re.search(r'href="(/doctor/patients/\d+)"', patients).group(1)

    def upload(self, session: requests.Session, files: list[tuple[str, bytes]], as_patient: bool = False):
        page = f"{self.url}/me/" if as_patient else self.patient_page
        action = f"{self.url}/me/scans" if as_patient else f"{self.patient_page}/scans"
        return session.post(action, data={"csrf_token": csrf_token(session, page)},
                            files=[("scans", (name, data)) for name, data in files], timeout=300)

    def wait_for(self, session: requests.Session, batch_path: str, timeout: float = 900) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            progress = session.get(self.url + batch_path, timeout=30).json()
            if progress.get("complete"):
                return progress
            time.sleep(0.25)
        raise TimeoutError(batch_path)

    def grpc_stub(self, token: str | None = TOKEN, client_certificate: bool = True):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        pki = self.pki
        with open(pki["ca"].certificate, "rb") as ca:
            root = ca.read()
        key = chain = None
        if client_certificate:
            with open(pki["report-worker"].key, "rb") as k, open(pki["report-worker"].certificate, "rb") as c:
                key, chain = k.read(), c.read()
        channel = grpc.secure_channel(f"127.0.0.1:{self.stack.grpc}", grpc.ssl_channel_credentials(root, key, chain))
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel), metadata

    def rest(self, path: str, **kwargs):
        kwargs.setdefault("timeout", 120)
        kwargs.setdefault("verify", self.pki["ca"].certificate)
        method = kwargs.pop("method", "post")
        return getattr(requests, method)(f"https://127.0.0.1:{self.stack.rest}{path}", **kwargs)


def _rejected(response: requests.Response, *phrases: str) -> Outcome:
    text = response.text
    held = response.status_code in (200, 400) and all(p in text for p in phrases) and "Traceback" not in text
    return Outcome(held, f"HTTP {response.status_code}; {', '.join(p for p in phrases if p in text) or text[:160]}")


# Uploads and intake -------------------------------------------------------------------------------------------
@attack("upload", "a blank 100x40000 PNG (14 KB) uploaded by a patient")
def tall_strip_png(t: Target) -> Outcome:
    return _rejected(t.upload(t.patient, [("strip.png", _png(100, 40000))], as_patient=True), "longer side")


@attack("upload", "a 2000x450 PNG (aspect 4.4)")
def odd_aspect_png(t: Target) -> Outcome:
    return _rejected(t.upload(t.patient, [("wide.png", _png(2000, 450))], as_patient=True), "times the other")


@attack("upload", "a 9000x9000 PNG of zeros (81 MP in a few hundred KB)")
def png_pixel_bomb(t: Target) -> Outcome:
    return _rejected(t.upload(t.patient, [("bomb.png", _png(9000, 9000))], as_patient=True), "pixels")


@attack("upload", "the largest image the policy allows: 2048x2048 RGB noise, by a patient, and to the model server")
def largest_allowed_image(t: Target) -> Outcome:
    import tensorflow as tf

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    response = t.upload(t.patient, [("large.png", buffer.getvalue())], as_patient=True)
    code, _, seconds = _grpc_predict(t, tf.make_tensor_proto([buffer.getvalue()], dtype=tf.string), "explain")
    return Outcome(response.status_code == 200 and code == "OK",
                   f"upload HTTP {response.status_code}; explain {code} in {seconds:.1f} s")


@attack("upload", "a 1 KB JPEG whose header declares 30000x30000")
def jpeg_header_bomb(t: Target) -> Outcome:
    return _rejected(t.upload(t.patient, [("bomb.jpg", _jpeg_declaring(30000, 30000))], as_patient=True), "pixels")


@attack("upload", "a 25 KB DICOM declaring 150 frames of 2048x2048")
def dicom_frame_bomb(t: Target) -> Outcome:
    return _rejected(t.upload(t.doctor, [("frames.dcm", _dicom_declaring(150, 2048))]), "cannot be decoded")


@attack("upload", "a DICOM declaring 5000 frames")
def dicom_many_frames(t: Target) -> Outcome:
    return _rejected(t.upload(t.doctor, [("many.dcm", _dicom_declaring(5000, 512))]), "5000 frames")


@attack("upload", "a ZIP of 3 x 400 MB of zeros (a few MB packed)")
def zip_bomb(t: Target) -> Outcome:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for index in range(3):
            with archive.open(f"z{index}.png", "w", force_zip64=True) as entry:
                block = b"\0" * (4 << 20)
                for _ in range(100):
                    entry.write(block)
    return _rejected(t.upload(t.patient, [("bomb.zip", buffer.getvalue())], as_patient=True), "unpacks to")


@attack("upload", "a ZIP of 600 tiny files")
def zip_many_entries(t: Target) -> Outcome:
    archive = _zip({f"f{i}.png": b"x" for i in range(600)})
    return _rejected(t.upload(t.patient, [("many.zip", archive)], as_patient=True), "at most 500")


@attack("upload", "a ZIP inside a ZIP")
def nested_zip(t: Target) -> Outcome:
    archive = _zip({"inner.zip": _zip({"a.png": _png(64, 64)})})
    return _rejected(t.upload(t.patient, [("outer.zip", archive)], as_patient=True), "inside a ZIP")


@attack("upload", "ZIP entries named ../../../tmp/radassist-escape.png and /etc/cron.d/x.png")
def zip_traversal(t: Target) -> Outcome:
    _, data = t.slices[0]
    archive = _zip({"../../../tmp/radassist-escape.png": data, "/etc/cron.d/x.png": data})
    response = t.upload(t.doctor, [("names.zip", archive)])
    escaped = os.path.exists("/tmp/radassist-escape.png") or os.path.exists("/etc/cron.d/x.png")
    return Outcome(response.status_code in (200, 400) and not escaped,
                   f"HTTP {response.status_code}; files outside the store: {escaped}")


@attack("upload", "a truncated PNG, an empty file and a PDF named scan.png")
def corrupt_and_non_images(t: Target) -> Outcome:
    _, data = t.slices[1]
    response = t.upload(t.patient, [("cut.png", data[: len(data) // 3]), ("empty.png", b""),
                                    ("scan.png", b"%PDF-1.7 not an image")], as_patient=True)
    return _rejected(response, "not a readable PNG", "empty file", "not a PNG, JPEG, DICOM or ZIP")


@attack("upload", "a 60 MB file (over the 50 MB limit)")
def oversized_file(t: Target) -> Outcome:
    return _rejected(t.upload(t.patient, [("huge.png", b"\x89PNG\r\n\x1a\n" + os.urandom(60 << 20))],
                              as_patient=True), "larger than")


@attack("upload", "a file named <script>alert(document.cookie)</script>.png")
def xss_file_name(t: Target) -> Outcome:
    name = "<script>alert(document.cookie)</script>.png"
    response = t.upload(t.patient, [(name, b"not an image")], as_patient=True)
    home = t.patient.get(f"{t.url}/me/", timeout=30).text
    raw = "<script>alert(document.cookie)" in response.text or "<script>alert(document.cookie)" in home
    return Outcome(not raw, f"HTTP {response.status_code}; unescaped in a page: {raw}")


@attack("xss", "findings containing <script> and an <img onerror>, written by a doctor and shown on the report page")
def xss_in_findings(t: Target) -> Outcome:
    payload = '<script>alert("findings")</script><img src=x onerror=alert(1)>'
    page = f"{t.url}/reports/{t.draft_id}"
    t.doctor.post(f"{page}/findings", data={"findings": payload, "csrf_token": csrf_token(t.doctor, page)}, timeout=60)
    html = t.doctor.get(page, timeout=30).text
    raw = payload in html or "<img src=x onerror" in html
    escaped = "&lt;script&gt;alert(" in html
    return Outcome(escaped and not raw, f"escaped on the page: {escaped}; raw markup: {raw}")


@attack("xss", "a patient named <img src=x onerror=alert(document.domain)> created by a doctor")
def xss_in_patient_name(t: Target) -> Outcome:
    name = "<img src=x onerror=alert(document.domain)>"
    t.doctor.post(f"{t.url}/doctor/patients", data={"email": "xss@abuse.local", "name": name, "password": PASSWORD,
                                                     "csrf_token": csrf_token(t.doctor, f"{t.url}/doctor/patients")},
                  timeout=60)
    html = t.doctor.get(f"{t.url}/doctor/patients", timeout=30).text
    return Outcome(name not in html and "&lt;img src=x" in html, f"raw markup in the list: {name in html}")


@attack("upload", "a CT DICOM carrying the patient's name, ID, birth date and institution")
def dicom_phi_is_removed(t: Target) -> Outcome:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    original = pydicom.dcmread(path)
    with open(path, "rb") as handle:
        response = t.upload(t.doctor, [("phi.dcm", handle.read())])
    found = []
    for stored in glob.glob(os.path.join(t.stack.workdir, "scans", "*", "*")):
        with open(stored, "rb") as handle:
            data = handle.read()
        if data[128:132] == b"DICM":
            for value in (str(original.PatientName), str(original.PatientID), str(original.InstitutionName)):
                if value.encode() in data:
                    found.append(value)
    return Outcome(response.status_code == 200 and not found, f"HTTP {response.status_code}; PHI in stored "
                                                                f"DICOM: {found or 'none'}")


@attack("upload", "9 files while storage fails on the last: is the answer truthful, are orphans left?")
def upload_interrupted_part_way(t: Target) -> Outcome:
    import hashlib

    files = t.slices[200:209]
    blocked = hashlib.sha256(files[-1][1]).hexdigest()[:2]
    earlier = {hashlib.sha256(data).hexdigest()[:2] for _, data in files[:-1]}
    if blocked in earlier:
        return Outcome(False, "pick other files: two share a blob folder")
    folder = os.path.join(t.stack.workdir, "scans", blocked)
    moved = folder + ".away"
    if os.path.isdir(folder):
        os.rename(folder, moved)
    with open(folder, "wb"):
        pass  # a file where the folder should be: the blob write fails
    try:
        response = t.upload(t.doctor, files)
    finally:
        os.unlink(folder)
        if os.path.isdir(moved):
            os.rename(moved, folder)
    truthful = response.status_code == 207 and "stopped answering after 8 of the accepted files" in response.text
    retry = t.upload(t.doctor, files)
    only_missing = "1 accepted, 8 rejected" in retry.text
    return Outcome(truthful and only_missing, f"HTTP {response.status_code} then retry HTTP {retry.status_code}; "
                                              f"truthful: {truthful}; retry added only the missing one: {only_missing}")


# Ownership over every URL and role ----------------------------------------------------------------------------
def _status(session: requests.Session, url: str, method: str = "get", **kwargs) -> int:
    return getattr(session, method)(url, allow_redirects=False, timeout=60, **kwargs).status_code


def _idor(t: Target, session: requests.Session, paths: list[str], allowed: tuple[int, ...] = (403, 404)) -> Outcome:
    codes = {path: _status(session, t.url + path) for path in paths}
    return Outcome(all(code in allowed for code in codes.values()), json.dumps(codes))


@attack("ownership", "a second doctor opens the first doctor's patient, scans, reports, PDFs, FHIR, overlays, batch")
def other_doctor_reads(t: Target) -> Outcome:
    return _idor(t, t.intruder_doctor, t.private_paths)


@attack("ownership", "another patient opens the same URLs")
def other_patient_reads(t: Target) -> Outcome:
    return _idor(t, t.intruder_patient, t.private_paths)


@attack("ownership", "an admin opens clinical content (patient page, scan, report, PDF, FHIR, overlay, batch)")
def admin_reads_clinical_content(t: Target) -> Outcome:
    return _idor(t, t.admin, t.private_paths)


@attack("ownership", "the patient opens their doctor's unsigned draft (report, PDF, FHIR, overlay)")
def patient_reads_doctors_draft(t: Target) -> Outcome:
    return _idor(t, t.patient, [p for p in t.private_paths if p.startswith("/reports/") or "/api/reports" in p])


@attack("ownership", "the patient polls the batch API of their doctor's analysis")
def patient_reads_doctors_batch(t: Target) -> Outcome:
    return _idor(t, t.patient, [t.doctor_batch, t.doctor_batch.replace("/api", "")])


@attack("ownership", "the patient and another doctor post a sign-off and an amendment")
def foreign_sign_off(t: Target) -> Outcome:
    codes = {}
    for who, session, page in (("patient", t.patient, f"{t.url}/me/"),
                               ("other doctor", t.intruder_doctor, f"{t.url}/doctor/patients")):
        token = csrf_token(session, page)
        for action in ("sign", "amend"):
            codes[f"{who} {action}"] = _status(session, f"{t.url}/reports/{t.draft_id}/{action}", "post",
                                               data={"csrf_token": token, "reason": "x"})
    return Outcome(all(code in (403, 404) for code in codes.values()), json.dumps(codes))


@attack("ownership", "patients and doctors open every admin page")
def non_admins_on_admin_pages(t: Target) -> Outcome:
    codes = {f"{who} {path}": _status(session, t.url + path) for who, session in
             (("patient", t.patient), ("doctor", t.doctor)) for path in ("/admin/doctors", "/admin/audit",
                                                                          "/admin/models")}
    return Outcome(all(code == 403 for code in codes.values()), json.dumps(codes))


@attack("ownership", "no session: pages redirect to the login, the API answers 401")
def anonymous(t: Target) -> Outcome:
    session = client()
    page = _status(session, f"{t.url}/reports/{t.draft_id}")
    api = _status(session, f"{t.url}/api/reports/{t.draft_id}/fhir")
    return Outcome(page == 302 and api == 401, f"page {page}, API {api}")


@attack("ownership", "a second doctor uploads for the first doctor's patient")
def foreign_upload(t: Target) -> Outcome:
    action = f"{t.patient_page}/scans"
    code = _status(t.intruder_doctor, action, "post", data={"csrf_token": csrf_token(t.intruder_doctor,
                                                                                 f"{t.url}/doctor/patients")},
                   files=[("scans", ("a.png", t.slices[0][1]))])
    return Outcome(code in (403, 404), f"HTTP {code}")


# CSRF -------------------------------------------------------------------------------------------------------
@attack("csrf", "an upload, a sign-off, a logout and a login without a CSRF token")
def missing_csrfcsrf_token(t: Target) -> Outcome:
    codes = {"upload": _status(t.doctor, f"{t.patient_page}/scans", "post", files=[("scans", ("a.png", b"x"))]),
             "sign": _status(t.doctor, f"{t.url}/reports/{t.draft_id}/sign", "post", data={}),
             "logout": _status(t.doctor, f"{t.url}/logout", "post", data={}),
             "login": _status(client(), f"{t.url}/login", "post",
                              data={"email": "doctor@abuse.local", "password": PASSWORD})}
    return Outcome(all(code == 400 for code in codes.values()), json.dumps(codes))


@attack("csrf", "a sign-off carrying another user's valid CSRF token")
def foreign_csrfcsrf_token(t: Target) -> Outcome:
    stolen = csrf_token(t.intruder_doctor, f"{t.url}/doctor/patients")
    code = _status(t.doctor, f"{t.url}/reports/{t.draft_id}/sign", "post", data={"csrf_token": stolen})
    return Outcome(code == 400, f"HTTP {code}")


@attack("csrf", "a cross-site form post (Origin: https://evil.example) with no token")
def cross_site_post(t: Target) -> Outcome:
    code = _status(t.doctor, f"{t.url}/reports/{t.draft_id}/sign", "post", data={},
                   headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x"})
    return Outcome(code == 400, f"HTTP {code}")


# Sessions and login ---------------------------------------------------------------------------------------------
@attack("session", "the cookie of a logged-out session replayed")
def logged_out_cookie_replay(t: Target) -> Outcome:
    session = _login(t.url, "doctor@abuse.local")
    cookie = session.cookies.get("session")
    session.post(f"{t.url}/logout", data={"csrf_token": csrf_token(session, f"{t.url}/doctor/patients")}, timeout=30)
    replay = client()
    replay.cookies.set("session", cookie)
    code = _status(replay, f"{t.url}/doctor/patients")
    return Outcome(code == 302, f"HTTP {code} (302: sent to the login)")


@attack("session", "an old session after the user changed their password elsewhere")
def session_after_password_change(t: Target) -> Outcome:
    old = _login(t.url, "patient2@abuse.local")
    current = _login(t.url, "patient2@abuse.local")
    new = PASSWORD + " changed"
    current.post(f"{t.url}/password", data={"current": PASSWORD, "new": new, "confirm": new,
                                            "csrf_token": csrf_token(current, f"{t.url}/password")}, timeout=30)
    code = _status(old, f"{t.url}/me/")
    current.post(f"{t.url}/password", data={"current": new, "new": PASSWORD, "confirm": PASSWORD,
                                            "csrf_token": csrf_token(current, f"{t.url}/password")}, timeout=30)
    t.intruder_patient = _login(t.url, "patient2@abuse.local")
    return Outcome(code == 302, f"HTTP {code}")


@attack("session", "open redirects: /login?next=/%09/evil.example/, //evil.example, /\\evil.example, https://...")
def open_redirect(t: Target) -> Outcome:
    locations = {}
    for target in ("/%09/evil.example/", "//evil.example/", "/%5Cevil.example", "https://evil.example/",
                   "/%0d%0a/evil.example"):
        session = client()
        token = csrf_token(session, f"{t.url}/login")
        response = session.post(f"{t.url}/login?next={target}", data={"email": "doctor2@abuse.local",
                                                                        "password": PASSWORD, "csrf_token": token},
                                allow_redirects=False, timeout=30)
        locations[target] = response.headers.get("Location", "")
    held = all(not re.match(r"^(https?:)?[/\\\s]*[/\\]", loc) or loc.startswith("/doctor") for loc in
               locations.values()) and all("evil" not in loc for loc in locations.values())
    return Outcome(held, json.dumps(locations))


@attack("login", "8 wrong passwords in parallel against one account")
def parallel_lockout(t: Target) -> Outcome:
    email = "lockme@abuse.local"
    sessions = [client() for _ in range(8)]
    tokens = [csrf_token(s, f"{t.url}/login") for s in sessions]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: sessions[i].post(f"{t.url}/login", data={"email": email, "password": f"wrong {i}",
                                                                          "csrf_token": tokens[i]}, timeout=60),
                      range(8)))
    locked = "lockme@abuse.local" in t.admin.get(f"{t.url}/admin/doctors", timeout=30).text.split('id="locked"')[-1]
    return Outcome(locked, f"account listed as locked on the admin page: {locked}")


@attack("login", "30 parallel login attempts from one address across both web workers")
def shared_rate_limit(t: Target) -> Outcome:
    sessions = [client("203.0.113.30") for _ in range(30)]  # one address
    tokens = [csrf_token(s, f"{t.url}/login") for s in sessions]
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(lambda i: sessions[i].post(
            f"{t.url}/login", data={"email": f"nobody{i}@abuse.local", "password": "x" * 12,
                                    "csrf_token": tokens[i]}, timeout=120).status_code, range(30)))
    evaluated = sum(code == 401 for code in codes)
    return Outcome(evaluated <= 10 and codes.count(429) >= 20, f"{evaluated} evaluated, {codes.count(429)} got 429")


@attack("login", "timing and wording of an unknown email vs a known one (user enumeration)")
def user_enumeration(t: Target) -> Outcome:
    timings, messages = {"unknown": [], "known": []}, set()
    for index in range(5):
        for kind, email in (("unknown", f"ghost{index}@abuse.local"), ("known", "known@abuse.local")):
            session = client()
            token = csrf_token(session, f"{t.url}/login")
            started = time.perf_counter()
            response = session.post(f"{t.url}/login", data={"email": email, "password": "wrong password!",
                                                             "csrf_token": token}, timeout=60)
            timings[kind].append(time.perf_counter() - started)
            messages.add(re.sub(r"\s+", " ", re.search(r'role="alert"[^>]*>([^<]*)<', response.text).group(1)))
    ratio = statistics.median(timings["unknown"]) / statistics.median(timings["known"])
    return Outcome(0.6 < ratio < 1.6 and len(messages) == 1, f"median time ratio {ratio:.2f}; messages {messages}")


@attack("login", "the lock message for a locked account vs a wrong password")
def lock_message_enumeration(t: Target) -> Outcome:
    session = client()
    response = session.post(f"{t.url}/login", data={"email": "lockme@abuse.local", "password": PASSWORD,
                                                     "csrf_token": csrf_token(session, f"{t.url}/login")}, timeout=60)
    other = client()
    wrong = other.post(f"{t.url}/login", data={"email": "known@abuse.local", "password": "wrong password!",
                                               "csrf_token": csrf_token(other, f"{t.url}/login")}, timeout=60)

    def message(r):
        return re.search(r'role="alert"[^>]*>([^<]*)<', r.text).group(1)

    return Outcome(message(response) == message(wrong), f"locked: {message(response)!r}")


@attack("login", "7 guesses of the current password on /password")
def password_change_guessing(t: Target) -> Outcome:
    session = _login(t.url, "doctor2@abuse.local")
    codes = []
    for _ in range(7):
        codes.append(session.post(f"{t.url}/password", data={
            "current": "a wrong guess!", "new": "x" * 14, "confirm": "x" * 14,
            "csrf_token": csrf_token(session, f"{t.url}/password")}, timeout=60).status_code)
    t.intruder_doctor = session
    return Outcome(codes[-1] == 429, f"codes {codes}")


@attack("headers", "the sign-off page framed by another site (clickjacking), sniffing, caching of PHI")
def security_headers(t: Target) -> Outcome:
    response = t.doctor.get(f"{t.url}/reports/{t.draft_id}", timeout=30)
    headers = response.headers
    checks = {"frame-ancestors": "frame-ancestors 'none'" in headers.get("Content-Security-Policy", ""),
              "X-Frame-Options": headers.get("X-Frame-Options") == "DENY",
              "nosniff": headers.get("X-Content-Type-Options") == "nosniff",
              "no-store": headers.get("Cache-Control") == "no-store",
              "script nonce": "'nonce-" in headers.get("Content-Security-Policy", "")}
    image = t.doctor.get(f"{t.url}/scans/{t.scan_id}/image.png", timeout=30).headers.get("Cache-Control")
    checks["image no-store"] = image == "no-store"
    return Outcome(all(checks.values()), json.dumps(checks))


@attack("audit", "probing 20 object ids, then reading the audit log as admin")
def probes_are_audited(t: Target) -> Outcome:
    for report_id in range(100000, 100020):
        t.intruder_patient.get(f"{t.url}/reports/{report_id}", timeout=30)
    page = t.admin.get(f"{t.url}/admin/audit?action=not_found", timeout=30).text
    count = page.count("GET /reports/1000")
    return Outcome(count >= 20, f"{count} probes in the audit log")


# The model server ---------------------------------------------------------------------------------------------
def _grpc_predict(t: Target, proto, signature: str = "predict_image", **stub_options):
    import grpc
    from tensorflow_serving.apis import predict_pb2

    channel, stub, metadata = t.grpc_stub(**stub_options)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "radassist"
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(proto)
    started = time.perf_counter()
    try:
        response = stub.Predict(request, timeout=300, metadata=metadata)
        return "OK", response, time.perf_counter() - started
    except grpc.RpcError as error:
        return error.code().name, error.details(), time.perf_counter() - started
    finally:
        channel.close()


def _declared(values: list[bytes], shape: list[int]):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values,
                                  tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))


@attack("inference", "gRPC: a 9.9 KB request declaring shape [96] with one image")
def grpc_declared_repeat(t: Target) -> Outcome:
    code, details, seconds = _grpc_predict(t, _declared([t.slices[0][1]], [96]))
    return Outcome(code == "INVALID_ARGUMENT", f"{code} in {seconds:.2f} s: {str(details)[:120]}")


@attack("inference", "gRPC: a 59-byte request declaring shape [10^12]")
def grpc_declared_huge(t: Target) -> Outcome:
    code, details, seconds = _grpc_predict(t, _declared([b"x"], [10**12]))
    return Outcome(code == "INVALID_ARGUMENT" and seconds < 5, f"{code} in {seconds:.2f} s: {str(details)[:120]}")


@attack("inference", "gRPC: 64 real images in one explain request (8x the batch size)")
def grpc_oversized_batch(t: Target) -> Outcome:
    import tensorflow as tf

    images = [data for _, data in t.slices[:64]]
    code, response, seconds = _grpc_predict(t, tf.make_tensor_proto(images, dtype=tf.string), "explain")
    rows = len(tf.make_ndarray(response.outputs["probabilities"])) if code == "OK" else 0
    return Outcome(code == "OK" and rows == 64, f"{code}: {rows} rows in {seconds:.1f} s (run in pieces)")


@attack("inference", "gRPC: 300 images in one request (over the 64-element cap)")
def grpc_too_many_elements(t: Target) -> Outcome:
    import tensorflow as tf

    code, details, seconds = _grpc_predict(t, tf.make_tensor_proto([b"x"] * 300, dtype=tf.string))
    return Outcome(code == "INVALID_ARGUMENT" and "at most" in str(details), f"{code}: {str(details)[:120]}")


@attack("inference", "gRPC: a 100x40000 PNG, and bytes that are not an image")
def grpc_bad_images(t: Target) -> Outcome:
    import tensorflow as tf

    strip = _grpc_predict(t, tf.make_tensor_proto([_png(100, 40000)], dtype=tf.string))
    junk = _grpc_predict(t, tf.make_tensor_proto([b"GIF89a" + os.urandom(64)], dtype=tf.string))
    return Outcome(strip[0] == junk[0] == "INVALID_ARGUMENT", f"strip: {strip[0]} {strip[1]!s:.80}; junk: {junk[0]}")


@attack("auth", "gRPC without a token, with a wrong token, and without a client certificate")
def grpc_unauthenticated(t: Target) -> Outcome:
    import tensorflow as tf

    proto = tf.make_tensor_proto([t.slices[0][1]], dtype=tf.string)
    no_token = _grpc_predict(t, proto, token=None)[0]
    wrong = _grpc_predict(t, proto, token="guess")[0]
    no_certificate = _grpc_predict(t, proto, client_certificate=False)[0]
    return Outcome(no_token == wrong == "UNAUTHENTICATED" and no_certificate == "UNAVAILABLE",
                   f"no token {no_token}, wrong token {wrong}, no client certificate {no_certificate}")


@attack("auth", "gRPC and REST in clear text to the TLS ports")
def clear_text(t: Target) -> Outcome:
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{t.stack.grpc}") as channel:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "radassist"
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=5)
            grpc_code = "OK"
        except grpc.RpcError as error:
            grpc_code = error.code().name
    try:
        rest_code = str(requests.get(f"http://127.0.0.1:{t.stack.rest}/v1/models/radassist", timeout=5).status_code)
    except requests.RequestException as error:
        rest_code = type(error).__name__
    return Outcome(grpc_code == "UNAVAILABLE" and not rest_code.startswith("2"), f"gRPC {grpc_code}, REST {rest_code}")


@attack("auth", "REST /v1 without the bearer token")
def rest_unauthenticated(t: Target) -> Outcome:
    code = t.rest("/v1/models/radassist", method="get").status_code
    return Outcome(code == 401, f"HTTP {code}")


def _bearer() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


@attack("inference", "REST: a 70 MB body")
def rest_huge_body(t: Target) -> Outcome:
    response = t.rest("/v1/models/radassist:predict", data=b"[" * (70 << 20), headers=_bearer())
    return Outcome(response.status_code == 413, f"HTTP {response.status_code}")


@attack("inference", "REST: JSON nested 100,000 deep")
def rest_deep_json(t: Target) -> Outcome:
    response = t.rest("/v1/models/radassist:predict", data="[" * 100000 + "]" * 100000, headers=_bearer())
    return Outcome(response.status_code == 400, f"HTTP {response.status_code}: {response.text[:100]}")


@attack("inference", "REST: 24 explain instances in one request")
def rest_many_explains(t: Target) -> Outcome:
    body = {"signature_name": "explain", "instances": [{"b64": base64.b64encode(data).decode()}
                                                       for _, data in t.slices[:24]]}
    response = t.rest("/v1/models/radassist:predict", json=body, headers=_bearer())
    rows = len(response.json().get("predictions", [])) if response.status_code == 200 else 0
    return Outcome(response.status_code == 200 and rows == 24, f"HTTP {response.status_code}, {rows} rows")


@attack("inference", "REST: malformed base64, not JSON, a JSON array body")
def rest_malformed(t: Target) -> Outcome:
    codes = [t.rest("/v1/models/radassist:predict", data=body, headers={**_bearer(), "Content-Type":
                                                                         "application/json"}).status_code
             for body in ('{"instances": [{"b64": "%%%"}]}', "not json", "[1, 2]")]
    return Outcome(codes == [400, 400, 400], f"HTTP {codes}")


# Reliability ----------------------------------------------------------------------------------------------------
def _children(t: Target, marker: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(t.stack.names["portal"].pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and marker in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _batch_path(response: requests.Response) -> str:
    return re.search(r'data-url="(/api/batches/\d+)"', response.text).group(1)


@attack("reliability", "kill -9 of the report worker in the middle of a bulk analysis")
def kill_report_worker(t: Target) -> Outcome:
    response = t.upload(t.doctor, t.slices[120:140])
    batch = _batch_path(response)
    time.sleep(2)
    (worker,) = [p for p in _children(t, "radassist.cli worker")]
    worker.send_signal(signal.SIGKILL)
    started = time.time()
    progress = t.wait_for(t.doctor, batch, timeout=600)
    portal_up = requests.get(f"{t.url}/login", timeout=10).status_code == 200
    return Outcome(portal_up and progress["counts"]["done"] == progress["total"],
                   f"portal up: {portal_up}; {progress['counts']} {time.time() - started:.0f} s after the kill")


@attack("reliability", "kill -9 of the model server for 40 s during a bulk analysis")
def model_server_outage(t: Target) -> Outcome:
    response = t.upload(t.doctor, t.slices[140:160])
    batch = _batch_path(response)
    time.sleep(1)
    t.stack.names["serve"].send_signal(signal.SIGKILL)
    t.stack.names["serve"].wait()
    time.sleep(40)
    during = t.doctor.get(t.url + batch, timeout=30).json()["counts"]
    t.stack.start_server()
    progress = t.wait_for(t.doctor, batch, timeout=600)
    return Outcome(progress["counts"]["done"] == progress["total"] and progress["counts"]["failed"] == 0,
                   f"during the outage {during}; after {progress['counts']}")


@attack("reliability", "kill -9 of a gunicorn web worker")
def kill_web_worker(t: Target) -> Outcome:
    (master,) = [p for p in _children(t, "gunicorn") if p.parent().pid == t.stack.names["portal"].pid]
    victim = master.children()[0]
    victim.send_signal(signal.SIGKILL)
    time.sleep(3)
    codes = [requests.get(f"{t.url}/login", timeout=10).status_code for _ in range(10)]
    return Outcome(codes == [200] * 10 and len(master.children()) == 2,
                   f"{codes.count(200)}/10 answered; web workers now {len(master.children())}")


# --- running it --------------------------------------------------------------------------------------------------
def setup_objects(t: Target) -> None:
    """A draft report, its scan and batch for the ownership attacks."""
    response = t.upload(t.doctor, t.slices[100:102])
    t.doctor_batch = _batch_path(response)
    progress = t.wait_for(t.doctor, t.doctor_batch)
    report_path = next(job["report_url"] for job in progress["jobs"] if job["report_url"])
    t.draft_id = int(report_path.rsplit("/", 1)[-1])
    page = t.doctor.get(t.url + report_path, timeout=30).text
    t.scan_id = int(re.search(r"/scans/(\d+)/image.png", page).group(1))
    t.patient_id = int(t.patient_page.rsplit("/", 1)[-1])
    t.private_paths = [f"/doctor/patients/{t.patient_id}", f"/scans/{t.scan_id}/image.png",
                       f"/reports/{t.draft_id}", f"/reports/{t.draft_id}/report.pdf",
                       f"/api/reports/{t.draft_id}/fhir", f"/reports/{t.draft_id}/overlay.jpg", t.doctor_batch,
                       t.doctor_batch.replace("/api", "")]


def create_users(stack: Stack) -> None:
    import subprocess

    for role, email, doctor in (("admin", "admin@abuse.local", None), ("doctor", "doctor@abuse.local", None),
                                ("doctor", "doctor2@abuse.local", None),
                                ("patient", "patient@abuse.local", "doctor@abuse.local"),
                                ("patient", "patient2@abuse.local", "doctor2@abuse.local"),
                                ("patient", "lockme@abuse.local", "doctor2@abuse.local"),
                                ("patient", "known@abuse.local", "doctor2@abuse.local")):
        subprocess.run([sys.executable, "-m", "radassist.cli", "users", "create", "--role", role, "--email", email,
                        "--name", email.split("@")[0], "--password-stdin"] + (["--doctor", doctor] if doctor else []),
                       input=PASSWORD + "\n", text=True, env=stack.env, check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", default=os.environ.get("RADASSIST_MODEL_BASE", "outputs/models"))
    parser.add_argument("--data", default=os.environ.get("RADASSIST_FULL_DATA_DIR", "../shared/data/chest-ct"))
    parser.add_argument("--scans", type=int, default=100, help="scans of the normal bulk analysis (the baseline)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--only", nargs="*", help="run only these attacks (names)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not os.path.isdir(args.model_base):
        raise SystemExit(f"no models at {args.model_base}: run `make train` first (or pass --model-base)")
    from serving.certificates import write_development_pki

    slices = real_slices(args.data, 240)
    workdir = tempfile.mkdtemp(prefix="radassist-abuse-")
    pki = write_development_pki(os.path.join(workdir, "pki"))
    token_file = os.path.join(workdir, "token")
    with open(token_file, "w") as handle:
        handle.write(TOKEN)
    import redis

    redis.Redis.from_url("redis://127.0.0.1:6379/15").flushdb()
    env = {"RADASSIST_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/15",
           "RADASSIST_MODEL_SERVER_TLS_CA": pki["ca"].certificate,
           "RADASSIST_MODEL_SERVER_TLS_CERT": pki["report-worker"].certificate,
           "RADASSIST_MODEL_SERVER_TLS_KEY": pki["report-worker"].key,
           "RADASSIST_MODEL_SERVER_TOKEN_FILE": token_file, "RADASSIST_MODEL_OUTAGE_MAX_WAIT": "5",
           "RADASSIST_TRUSTED_PROXIES": "1"}  # the benchmark plays the ingress
    server_args = ("--tls-cert", pki["server"].certificate, "--tls-key", pki["server"].key, "--tls-client-ca",
                   pki["ca"].certificate, "--token-file", token_file, "--max-batch-size", "8",
                   "--max-request-elements", "64")
    stack = Stack(os.path.abspath(args.model_base), workdir, 1, server_args=server_args,
                  portal_args=("--workers", "2"), env=env, scheme="https")
    create_users(stack)
    stack.start()
    memory = Memory(stack)
    entries: dict[str, dict] = {}  # attack name -> what was sent, what came back, peak memory
    try:
        target = Target(stack, pki, slices)
        print(f"baseline: a normal bulk analysis of {args.scans} scans ...", flush=True)
        memory.reset()
        started = time.perf_counter()
        response = target.upload(target.doctor, slices[: args.scans])
        baseline_progress = target.wait_for(target.doctor, _batch_path(response))
        baseline = memory.peaks()
        baseline_seconds = time.perf_counter() - started
        print(f"  {baseline_seconds:.0f} s, {baseline_progress['counts']}; peak MB {baseline}", flush=True)
        bulk = {"scans": args.scans, "seconds": round(baseline_seconds, 1), "counts": baseline_progress["counts"],
                "peak_memory_mb": baseline, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
        setup_objects(target)
        for name, category, sent, function in ATTACKS:
            if args.only and name not in args.only:
                continue
            memory.reset()
            started = time.perf_counter()
            try:
                outcome = function(target)
            except Exception as error:  # noqa: BLE001 - an attack that crashes the harness is a failed attack
                outcome = Outcome(False, f"{type(error).__name__}: {error}")
            peaks = memory.peaks()
            entry = {"category": category, "sent": sent, "got": outcome.got,
                     "seconds": round(time.perf_counter() - started, 2), "peak_memory_mb": peaks}
            if category in ("upload", "inference"):
                over = {role: round(peaks[role] / baseline[role], 2) for role in peaks
                        if role in baseline and peaks[role] > MEMORY_FACTOR * baseline[role]}
                entry.update(memory_over_baseline=over, memory_factor_max=MEMORY_FACTOR, baseline_bulk=bulk)
                outcome.held = outcome.held and not over
            entry["held"] = outcome.held
            entries[name] = entry
            print(f"{'held' if outcome.held else 'FAILED':<7}{name:<38}{outcome.got[:110]}", flush=True)
    finally:
        memory.close()
        stack.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    held = sum(entry["held"] for entry in entries.values())
    # The top-level keys: the three counts, then one entry per attack (the baseline bulk analysis rides in
    # every entry whose memory is checked against it).
    result = {"attacks": len(entries), "held": held, "failed": len(entries) - held, **entries}
    print(f"\n{'attacks':<12}{len(entries):>6}\n{'held':<12}{held:>6}\n{'failed':<12}{len(entries) - held:>6}")
    if not args.only:
        write_result(result, args.out)
    return 0 if held == len(entries) else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
