"""``radassist portal``'s process supervisor: gunicorn and the report workers side by side, each restarted when it
dies, none taking the others down.

A child that exits is started again after a backoff that doubles while it keeps dying (up to ``max_backoff``) and
resets once it has stayed up for ``stable_seconds``. Every exit and restart is logged. Only a child that dies
``crash_loop`` times within ``crash_window`` seconds stops the portal: that is a configuration problem no restart
fixes, and the exit code says so. Report workers get stable names (``<host>-worker-<i>``), so a restarted worker
takes back at once the jobs its predecessor held instead of waiting for their leases to run out.
"""

import dataclasses
import logging
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    exits: list[float] = dataclasses.field(default_factory=list)


class CrashLoop(RuntimeError):
    """A child died too often in too short a time."""


class Supervisor:
    def __init__(self, children: list[Child], min_backoff: float = 1.0, max_backoff: float = 30.0,
                 stable_seconds: float = 60.0, crash_loop: int = 5, crash_window: float = 120.0):
        self.children = children
        self.min_backoff, self.max_backoff, self.stable_seconds = min_backoff, max_backoff, stable_seconds
        self.crash_loop, self.crash_window = crash_loop, crash_window
        self._stopping = False

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.command)
        child.started, child.restart_at = time.monotonic(), None
        level = logging.WARNING if child.restarts else logging.INFO
        log.log(level, "%s started (pid %d, restart %d)", child.name, child.process.pid, child.restarts)

    def stop(self, *_signal) -> None:
        self._stopping = True

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def run(self, poll_seconds: float = 0.5) -> int:
        """Runs until SIGTERM/SIGINT (returns 0) or a crash loop (returns 1); stops every child on the way out."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.start()
        try:
            while not self._stopping:
                self.check()
                time.sleep(poll_seconds)
            return 0
        except CrashLoop as error:
            log.error("%s; stopping the portal", error)
            print(f"radassist portal: {error}", file=sys.stderr)
            return 1
        finally:
            self.terminate()

    def check(self) -> None:
        """One round: notes children that exited, restarts those whose backoff is over."""
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and child.restart_at is None and child.process.poll() is not None:
                uptime = now - child.started
                child.exits = [t for t in child.exits if now - t < self.crash_window] + [now]
                if len(child.exits) >= self.crash_loop:
                    raise CrashLoop(f"{child.name} exited {len(child.exits)} times within {self.crash_window:g} s "
                                    f"(last exit code {child.process.returncode})")
                stable = uptime >= self.stable_seconds
                child.backoff = self.min_backoff if stable or not child.backoff else min(2 * child.backoff,
                                                                                          self.max_backoff)
                child.restart_at = now + child.backoff
                log.error("%s (pid %d) exited with code %s after %.0f s; restarting in %.0f s", child.name,
                          child.process.pid, child.process.returncode, uptime, child.backoff)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def terminate(self, grace: float = 20.0) -> None:
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def worker_name(index: int) -> str:
    """A stable name for the supervisor's ``index``-th report worker on this host."""
    return f"{socket.gethostname()}-worker-{index}"
