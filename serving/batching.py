"""Server-side batching like TF Serving's: concurrent requests to one signature run as one batch.

A worker thread takes the first waiting request, then keeps collecting until the batch holds
``max_batch_size`` examples or ``batch_timeout_micros`` have passed, concatenates inputs along axis 0, runs
once and splits the outputs back. If a batch fails on bad input, its requests are retried one by one so only
the bad request fails.
"""

import concurrent.futures
import dataclasses
import queue
import threading
import time

import numpy as np

from serving import errors


@dataclasses.dataclass
class BatchingOptions:
    enabled: bool = True
    max_batch_size: int = 32
    batch_timeout_micros: int = 5000
    max_enqueued_batches: int = 100


@dataclasses.dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    future: concurrent.futures.Future


class BatchScheduler:
    """Batches calls to ``run(inputs) -> outputs`` (dicts of batch-major arrays)."""

    def __init__(self, run, options: BatchingOptions, name: str = "batcher", on_batch=None):
        self._run, self._options, self._on_batch = run, options, on_batch or (lambda size: None)
        capacity = options.max_enqueued_batches * options.max_batch_size
        self._queue: queue.Queue[_Task | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, inputs: dict[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        """Runs ``inputs`` in the next batches; a request larger than ``max_batch_size`` is split into pieces of at
        most that size (TF Serving's large-batch splitting), so no batch is ever larger."""
        if self._closed:
            raise errors.Unavailable("this model version is being unloaded")
        size = len(next(iter(inputs.values())))
        step = self._options.max_batch_size
        tasks = [_Task({k: v[start:start + step] for k, v in inputs.items()}, min(step, size - start),
                       concurrent.futures.Future()) for start in range(0, size, step)]
        for task in tasks:
            try:
                self._queue.put(task, timeout=1.0)
            except queue.Full as full:
                for queued in tasks:
                    queued.future.cancel()  # pieces already queued are skipped, never run for nobody
                raise errors.Unavailable("the batching queue is full; retry later") from full
        parts = [task.future.result(timeout=timeout) for task in tasks]
        if len(parts) == 1:
            return parts[0]
        return {key: concatenate_padded([part[key] for part in parts]) for key in parts[0]}

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _collect(self, first: _Task) -> list[_Task]:
        batch, total = [first], first.size
        deadline = time.monotonic() + self._options.batch_timeout_micros / 1e6
        while total < self._options.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                task = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if task is None:
                self._queue.put(None)
                break
            if total + task.size > self._options.max_batch_size:
                self._execute(batch)  # run what we have; start the next batch with this task
                batch, total = [task], task.size
                deadline = time.monotonic() + self._options.batch_timeout_micros / 1e6
                continue
            batch.append(task)
            total += task.size
        return batch

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            self._execute(self._collect(task))

    def _execute(self, batch: list[_Task]) -> None:
        batch = [task for task in batch if task.future.set_running_or_notify_cancel()]
        if not batch:
            return
        self._on_batch(sum(t.size for t in batch))
        if len(batch) == 1:
            self._resolve(batch[0])
            return
        keys = batch[0].inputs.keys()
        merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in keys}
        try:
            outputs = self._run(merged)
        except errors.InvalidInput:
            for task in batch:  # isolate the bad request(s)
                self._resolve(task)
            return
        except Exception as error:  # noqa: BLE001 - delivered to every waiting caller
            for task in batch:
                task.future.set_exception(error)
            return
        start = 0
        for task in batch:
            task.future.set_result({k: v[start : start + task.size] for k, v in outputs.items()})
            start += task.size

    def _resolve(self, task: _Task) -> None:
        try:
            task.future.set_result(self._run(task.inputs))
        except Exception as error:  # noqa: BLE001 - delivered to the caller
            task.future.set_exception(error)


def concatenate_padded(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenates along axis 0, padding with zeros to the largest trailing shape: the pieces of a split request
    whose outputs are padded to their own largest image (the segmenter's maps) join as one answer padded to the
    request's largest."""
    shape = tuple(max(sizes) for sizes in zip(*(array.shape[1:] for array in arrays), strict=True))
    if all(array.shape[1:] == shape for array in arrays):
        return np.concatenate(arrays)
    return np.concatenate([np.pad(array, [(0, 0)] + [(0, want - have) for have, want in
                                                      zip(array.shape[1:], shape, strict=True)])
                           for array in arrays])
