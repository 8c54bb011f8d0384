"""RadAssist's processes on this machine, started the way an operator starts them and waited for until they answer:
the model server (``radassist serve``) and the portal (``radassist portal``: gunicorn and its report workers). The
tests and the benchmarks use these; nothing here is imported by the parts themselves.
"""

import os
import random
import socket
import subprocess
import sys
import time

import requests

from radassist import contract

PASSWORD = "correct horse battery"  # of the accounts Stack creates


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on, chosen below the ephemeral range: a port the kernel assigned to us could be handed
    to some process's outgoing connection before the server binds it ("Address already in use", seen in CI)."""
    rng = random.Random()
    high = _ephemeral_low()
    low = max(2048, high - 12000)
    for _ in range(50 if high > low else 0):
        port = rng.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, processes: dict[str, subprocess.Popen], timeout: float = 180,
                     verify: bool | str = True, logs: str = "") -> None:
    """Polls ``url`` until it answers 200; raises if one of ``processes`` exits first (``logs`` says where to look)
    or ``timeout`` passes. A server still starting may refuse the connection or be too busy to answer in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        exited = [name for name, process in processes.items() if process.poll() is not None]
        if exited:
            raise RuntimeError(f"{', '.join(exited)} exited before {url} answered; see {logs or 'its log'}")
        try:
            if requests.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s; see {logs or 'the logs'}")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "radassist.cli", *args]


def _terminate(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM to each running process, then waits; one that outlasts ``timeout`` (a report still being written on
    a loaded machine) is killed, so a test or benchmark never hangs on it."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ModelServerProcess:
    """``radassist serve`` on fresh ports over ``model_base``, logging to ``log_path`` (default: beside the base)."""

    def __init__(self, model_base: str, *extra: str, log_path: str | None = None, env: dict | None = None,
                 scheme: str = "http", verify: bool | str = True, grpc_port: int | None = None,
                 rest_port: int | None = None):
        self.base, self.extra, self.env = model_base, extra, env
        self.grpc_port, self.rest_port = grpc_port or free_port(), rest_port or free_port()
        self.scheme, self.verify = scheme, verify
        self.log_path = log_path or os.path.join(model_base, "..", f"server-{self.grpc_port}.log")
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.rest_port}"

    def start(self, wait: bool = True) -> "ModelServerProcess":
        """Starts the server (again, on the same ports, after ``stop`` or a crash) and by default waits for it."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                _command("serve", "--model-base-path", self.base, "--host", "127.0.0.1", "--grpc-port",
                         str(self.grpc_port), "--rest-port", str(self.rest_port),
                         "--file-system-poll-wait-seconds", "0.5", *self.extra),
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()  # a server that never came up must not outlive the caller
                raise
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        wait_until_ready(f"{self.rest}/readyz", {"the model server": self.process}, timeout, self.verify,
                         self.log_path)

    def stop(self) -> None:
        if self.process:
            _terminate([self.process], timeout=30)


class Stack:
    """The model server and the portal (gunicorn + ``report_workers`` report workers) on fresh ports, a fresh SQLite
    database and scan store under ``workdir``, with ``users`` created first: (role, email, name, doctor's email).

    ``server_args`` / ``portal_args`` are extra flags; ``env`` extra environment (both processes); ``scheme`` is the
    model server's REST scheme (https when it is given TLS files). ``names`` maps "serve" and "portal" to their
    processes (a benchmark may kill one and call ``start_server`` again)."""

    BENCH_USERS = (("doctor", "doctor@bench.local", "Dr. Bench", None),
                   ("patient", "patient@bench.local", "Pat Bench", "doctor@bench.local"))

    def __init__(self, model_base: str, workdir: str, report_workers: int = 1, server_args: tuple = (),
                 portal_args: tuple = (), env: dict | None = None, scheme: str = "http",
                 users: tuple = BENCH_USERS):
        self.grpc, self.rest, self.port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "RADASSIST_DATABASE_URL": f"sqlite:///{workdir}/portal.db",
                    "RADASSIST_SCAN_STORE": f"{workdir}/scans", "RADASSIST_SECRET_KEY": os.urandom(24).hex(),
                    "RADASSIST_MODEL_SERVER": f"127.0.0.1:{self.grpc}", "TF_CPP_MIN_LOG_LEVEL": "2",
                    **(env or {})}
        self.model_base, self.workdir, self.processes = model_base, workdir, []
        self.report_workers, self.users, self.portal_args = report_workers, users, tuple(portal_args)
        if not any(arg.startswith("--model-name") or arg.startswith("--model-config-file") for arg in server_args):
            # The classifier, and the segmenter where the base path holds one (reports then carry its lesions).
            server_args = ("--model-name", contract.MODEL_NAME, *server_args)
            if os.path.isdir(os.path.join(model_base, contract.SEGMENTATION_MODEL_NAME)):
                server_args = ("--model-name", contract.SEGMENTATION_MODEL_NAME, *server_args)
        self.server = ModelServerProcess(model_base, *server_args, log_path=os.path.join(workdir, "serve.log"),
                                         env=self.env, scheme=scheme, verify=self._verify, grpc_port=self.grpc,
                                         rest_port=self.rest)
        self.names: dict[str, subprocess.Popen] = {}

    @property
    def _verify(self) -> bool | str:
        return self.env.get("RADASSIST_MODEL_SERVER_TLS_CA", True)

    def _spawn(self, name: str, *args: str) -> None:
        with open(os.path.join(self.workdir, f"{name}.log"), "ab") as log:
            process = subprocess.Popen(_command(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        self.names[name] = process

    def create_user(self, role: str, email: str, name: str, doctor: str | None = None) -> None:
        subprocess.run(_command("users", "create", "--role", role, "--email", email, "--name", name,
                                "--password-stdin", *(["--doctor", doctor] if doctor else [])),
                       input=PASSWORD + "\n", text=True, env=self.env, check=True, capture_output=True)

    def start_server(self) -> None:
        """Starts (or restarts) the model server and waits until it is ready."""
        self.server.start(wait=False)
        self.processes.append(self.server.process)
        self.names["serve"] = self.server.process
        self._wait(f"{self.server.rest}/readyz")

    def start(self, model_server: bool = True) -> "Stack":
        """Creates the users, starts both processes (the portal alone without ``model_server``: pages that need no
        model) and waits for them; stops what it started if any step fails."""
        try:
            for role, email, name, doctor in self.users:
                self.create_user(role, email, name, doctor)
            if model_server:
                self.start_server()
            self._spawn("portal", "portal", "--host", "127.0.0.1", "--port", str(self.port), "--report-workers",
                        str(self.report_workers), *self.portal_args)
            self._wait(f"{self.url}/login")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, url: str, timeout: float = 180) -> None:
        wait_until_ready(url, self.names, timeout, self._verify, f"the logs in {self.workdir}")

    def stop(self) -> None:
        _terminate(self.processes, timeout=60)
