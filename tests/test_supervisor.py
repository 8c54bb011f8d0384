"""`radassist portal`'s supervisor: a child that dies is restarted; it never takes its siblings down."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests
from conftest import free_port

from portal.supervisor import Child, CrashLoop, Supervisor


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_dying_child_is_restarted_with_backoff_and_its_sibling_keeps_running():
    steady = Child("steady", _python("import time; time.sleep(60)"))
    flaky = Child("flaky", _python("import sys; sys.exit(3)"))
    supervisor = Supervisor([steady, flaky], min_backoff=0.05, max_backoff=0.2, crash_loop=100)
    supervisor.start()
    first_pid = steady.process.pid
    try:
        deadline = time.monotonic() + 10
        while flaky.restarts < 4 and time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.02)
        assert flaky.restarts >= 4 and flaky.backoff == 0.2  # doubled up to the cap
        assert steady.process.pid == first_pid and steady.process.poll() is None and steady.restarts == 0
    finally:
        supervisor.terminate()
    assert steady.process.poll() is not None


def test_a_crash_loop_is_reported_not_restarted_forever():
    supervisor = Supervisor([Child("broken", _python("import sys; sys.exit(2)"))], min_backoff=0.01, crash_loop=3,
                            crash_window=30)
    supervisor.start()
    with pytest.raises(CrashLoop, match="broken exited 3 times"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.02)
    supervisor.terminate()


def _worker_processes(portal: psutil.Process) -> list[psutil.Process]:
    """The supervisor's live report workers (a killed one is a zombie until the supervisor notices)."""
    workers = []
    for child in portal.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "worker" in child.cmdline():
                workers.append(child)
        except psutil.Error:
            pass
    return workers


@pytest.mark.slow
def test_killing_the_report_worker_leaves_the_portal_up_and_a_worker_of_the_same_name_comes_back(tmp_path):
    port = free_port()
    env = {**os.environ, "RADASSIST_DATABASE_URL": f"sqlite:///{tmp_path / 'portal.db'}",
           "RADASSIST_SCAN_STORE": str(tmp_path / "scans"), "RADASSIST_SECRET_KEY": os.urandom(24).hex(),
           "RADASSIST_MODEL_SERVER": f"127.0.0.1:{free_port()}"}
    with open(tmp_path / "portal.log", "wb") as log:
        portal = subprocess.Popen([sys.executable, "-m", "radassist.cli", "portal", "--host", "127.0.0.1", "--port",
                                   str(port), "--workers", "1", "--report-workers", "1"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/login"
    try:
        supervisor = psutil.Process(portal.pid)

        def wait_for(condition, what: str, timeout: float = 90):
            deadline = time.time() + timeout
            while time.time() < deadline:
                assert portal.poll() is None, (tmp_path / "portal.log").read_text()
                try:
                    if condition():
                        return
                except requests.ConnectionError:
                    pass
                time.sleep(0.3)
            raise AssertionError(f"{what}; log:\n{(tmp_path / 'portal.log').read_text()}")

        wait_for(lambda: requests.get(url, timeout=2).status_code == 200 and _worker_processes(supervisor),
                 "the portal did not start")
        (worker,) = _worker_processes(supervisor)
        name = worker.cmdline()[worker.cmdline().index("--name") + 1]
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: [p for p in _worker_processes(supervisor) if p.pid != worker.pid], "no new report worker")
        (restarted,) = [p for p in _worker_processes(supervisor) if p.pid != worker.pid]
        assert restarted.cmdline()[restarted.cmdline().index("--name") + 1] == name
        assert requests.get(url, timeout=5).status_code == 200  # gunicorn never went down
        assert "restarting" in (tmp_path / "portal.log").read_text()
    finally:
        portal.terminate()
        portal.wait(timeout=60)
    assert portal.returncode == 0
