"""A quiet command line: what TensorFlow, absl, TFX and Beam print that a user cannot act on is dropped.

Some of it is written by C++ before any Python setting can reach it (absl's pre-initialisation lines, the CUDA
probes of a machine without a GPU), so the command runs in a child whose standard error passes through
``StderrFilter``: line by line, known noise dropped, everything else (progress bars, our warnings, errors,
tracebacks) kept. A progress bar redraws itself after a carriage return without ending its line, so a partial line
is passed on as soon as the child pauses (``idle``). Python-side chatter is turned down in the
child itself (``quiet_python_logging``).
"""

import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading

# Lines a user can do nothing about. Matched anywhere in one line of the child's standard error.
NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cudart_stub\.cc", r"cuda_platform\.cc", r"cuda_executor\.cc", r"cuda_diagnostics\.cc", r"cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory", r"computation_placer\.cc", r"TF-TRT Warning",
    r"oneDNN custom operations are on", r"This TensorFlow binary is optimized to use available CPU instructions",
    r"rebuild TensorFlow with the appropriate compiler flags", r"cpu_feature_guard\.cc",
    r"ZetaSQL", r"payload_format", r"ArtifactQuery\.property_predicate is not supported", r"tensorflow_io",
    r"apache_beam.*(typehints|Make sure that locally built)",
    r"absl::InitializeLog", r"Attempting to register factory for plugin",
]).encode())
_LINE_END = re.compile(rb"[\r\n]")
IDLE_SECONDS = 0.2
TERMINAL_MARK = "RADASSIST_STDERR_IS_TERMINAL"


def stderr_is_terminal() -> bool:
    """Whether standard error ends on a terminal (directly, or through the filter of a quiet parent)."""
    return sys.stderr.isatty() or bool(os.environ.get(TERMINAL_MARK))


class StderrFilter:
    """Copies bytes from a child's pipe to ``sink``, dropping the lines ``NOISE`` matches."""

    def __init__(self, sink, noise: re.Pattern = NOISE):
        self.sink, self.noise = sink, noise
        self._pending = b""
        self._dropping = False  # inside a dropped line that a carriage return split

    def feed(self, data: bytes) -> None:
        self._pending += data
        while True:
            match = _LINE_END.search(self._pending)
            if not match:
                return
            segment, self._pending = self._pending[:match.end()], self._pending[match.end():]
            self._emit(segment)

    def idle(self) -> None:
        """The child paused: pass on the partial line it left (a progress bar), unless it is noise so far."""
        if self._pending and not self.noise.search(self._pending) and not self._dropping:
            self.sink.write(self._pending)
            self.sink.flush()
            self._pending = b""

    def close(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = b""
        self.sink.flush()

    def _emit(self, segment: bytes) -> None:
        if self.noise.search(segment):
            self._dropping = not segment.endswith(b"\n")
            return
        if self._dropping:
            self._dropping = not segment.endswith(b"\n")
            if segment.strip() == b"":
                return
        self.sink.write(segment)
        self.sink.flush()


def run_filtered(command: list[str], extra_env: dict[str, str]) -> int:
    """Runs ``command`` with its standard error filtered; returns its exit status. SIGINT and SIGTERM are passed on
    to the child (which cleans up and exits), not acted on here."""
    env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"}
    if sys.stderr.isatty():
        env[TERMINAL_MARK] = "1"  # the child's standard error is our pipe, but what it draws reaches a terminal
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    sink = StderrFilter(sys.stderr.buffer)

    def pump():
        descriptor = child.stderr.fileno()
        while True:
            ready, _, _ = select.select([descriptor], [], [], IDLE_SECONDS)
            if not ready:
                sink.idle()
                continue
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            sink.feed(chunk)
        sink.close()

    reader = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    reader.start()
    previous = {signum: signal.signal(signum, lambda signum, _frame: child.send_signal(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    reader.join(timeout=10)
    return status


def quiet_python_logging() -> None:
    """In the child: absl (TFX's logger) and the libraries' loggers at WARNING, TensorFlow's at ERROR."""
    for name in ("absl", "tensorflow", "apache_beam", "tfx", "ml_metadata", "mlflow", "alembic", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "tensorflow" else logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # the portal's slim install has no absl
        pass
