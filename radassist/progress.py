"""Live progress of a local pipeline run, read from ML Metadata (robust to TF resetting Python logging)."""

import threading
import time

from ml_metadata.proto import metadata_store_pb2
from tqdm import tqdm

from pipelines.metadata import read_only_store
from radassist import quiet

_DONE = {metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED}
_FAILED = {metadata_store_pb2.Execution.FAILED, metadata_store_pb2.Execution.CANCELED}


def node_name(store, execution) -> str:
    """The pipeline node's id ("NoduleExampleGen"), from the execution's node context; else its component type."""
    try:
        for context in store.get_contexts_by_execution(execution.id):
            if context.type == "node" and "." in context.name:
                return context.name.split(".", 1)[1]
    except Exception:  # noqa: BLE001 - the writer may hold the database for a moment
        pass
    return execution.type.rsplit(".", 1)[-1] if execution.type else f"execution {execution.id}"


class PipelineProgress:
    """A tqdm bar over the pipeline's nodes, updated by polling the SQLite MLMD store."""

    def __init__(self, metadata_path: str, node_ids: list[str], interval: float = 2.0):
        self._path, self._nodes, self._interval = metadata_path, node_ids, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._seen_before: set[int] = set()
        self._shown: tuple | None = None
        self._terminal = quiet.stderr_is_terminal()
        self.bar = tqdm(total=len(node_ids), desc="pipeline", unit="component", dynamic_ncols=True)

    def _store(self):
        return read_only_store(self._path)

    def __enter__(self):
        try:
            self._seen_before = {e.id for e in self._store().get_executions()}
        except Exception:  # noqa: BLE001 - a missing store just means a first run
            self._seen_before = set()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self._update()
        self.bar.close()

    def _update(self) -> None:
        try:
            store = self._store()
            executions = [e for e in store.get_executions() if e.id not in self._seen_before]
        except Exception:  # noqa: BLE001 - the writer may hold the database for a moment
            return
        done = [e for e in executions if e.last_known_state in _DONE]
        running = [e for e in executions if e.last_known_state == metadata_store_pb2.Execution.RUNNING]
        failed = [e for e in executions if e.last_known_state in _FAILED]
        if failed:
            description = f"FAILED: {node_name(store, failed[-1])}"
        elif running:
            description = f"running {node_name(store, running[-1])}"
        else:
            description = self.bar.desc
        state = (min(len(done), len(self._nodes)), description)
        if state == self._shown and not self._terminal:  # a log gets a line per step, not one per poll
            return
        self._shown = state
        self.bar.n = state[0]
        self.bar.set_description(description, refresh=False)
        self.bar.refresh()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._update()
            time.sleep(self._interval)
