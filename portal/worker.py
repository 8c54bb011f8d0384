"""The report worker: takes analysis jobs from the queue, calls the model server, writes draft reports.

Runs as its own process (``radassist worker``; ``radassist portal`` starts one beside gunicorn), so the web
processes never load TensorFlow. Jobs are taken in small batches and sent to the model as one request.
"""

import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from flask import Flask

from portal import prediction_context, reports
from portal.extensions import blobs, report_jobs
from portal.jobs import JobQueue, JobSettings, claim, fail, finish, release, requeue_expired
from portal.models import Job, ServiceStatus, db, utcnow
from portal.security import record

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _InFlight:
    """A batch whose model call is running in the background."""

    jobs: list[Job]
    offered: list[int]
    images: list[bytes]
    future: Future
    started: float


class Worker:
    def __init__(self, app: Flask, client, queue: JobQueue | None = None, name: str | None = None,
                 batch_size: int | None = None, sweep_seconds: float = 5.0):
        self.app, self.client = app, client
        with app.app_context():
            self.queue = queue or report_jobs.queue
            self.store = blobs.store
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size or app.config["WORKER_BATCH_SIZE"]
        self.settings = JobSettings.from_config(app.config)
        self.sweep_seconds = sweep_seconds
        self.stopping = threading.Event()
        import fpdf  # noqa: F401  - loaded now, not while the first batch of reports waits
        self._last_sweep = 0.0
        self._recovered = False
        self._in_flight: _InFlight | None = None
        self._model_calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-call")
        self._outage_until = 0.0        # monotonic time before which no new batch is sent (the model is down)
        self._outage_backoff = 0.0
        self._status_seconds = app.config["MODEL_STATUS_SECONDS"]
        folder = app.config.get("PREDICTION_CONTEXT_LOG")
        self._context = prediction_context.ContextLog(folder, self.name) if folder else None
        self._status_reporter = threading.Thread(target=self._report_model_status, name="model-status",
                                                 daemon=True)

    def run(self) -> None:
        """Works until ``stop()`` (or SIGTERM in ``main``)."""
        self._status_reporter.start()
        with self.app.app_context():
            log.info("worker %s started", self.name)
            while not self.stopping.is_set():
                self.step(timeout=1.0)
            self.flush()
            log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        self.stopping.set()

    def report_model_status(self) -> None:
        """Records what the model server says about its versions (or why it did not answer) for the admin page:
        the workers alone may reach the model server."""
        from serving.client import ServingClientError

        try:
            status = {"versions": self.client.model_status(), "error": None}
        except (ServingClientError, OSError) as error:
            status = {"versions": [], "error": str(error)[:500]}
        segmenter = self.client.segmentation_model_name
        if segmenter:
            try:
                status["segmenter"] = {"name": segmenter, "versions": self.client.model_status(segmenter),
                                       "error": None}
            except (ServingClientError, OSError) as error:
                status["segmenter"] = {"name": segmenter, "versions": [], "error": str(error)[:500]}
        name = ServiceStatus.MODEL_SERVER
        row = db.session.get(ServiceStatus, name) or ServiceStatus(name=name)
        row.status_json, row.reported_by, row.updated_at = json.dumps(status), self.name, utcnow()
        db.session.add(row)
        db.session.commit()

    def _report_model_status(self) -> None:
        while not self.stopping.is_set():
            with self.app.app_context():
                try:
                    self.report_model_status()
                except Exception:  # noqa: BLE001 - a database hiccup must not end the reporting
                    db.session.rollback()
                    log.warning("could not record the model server's status", exc_info=True)
                finally:
                    db.session.remove()
            self.stopping.wait(self._status_seconds)

    def step(self, timeout: float = 0.0) -> int:
        """One round: housekeeping when due, send the next batch to the model, write the previous batch's reports.

        Pipelined: while the model server works on batch k+1, this process writes the reports of batch k, so the
        server never waits for report rendering. The first round also gives back whatever an earlier run of this
        worker (same name) held when it died. Returns the number of jobs whose reports were written or failed.
        """
        if not self._recovered:
            held = requeue_expired(self.settings, worker=self.name)  # what a predecessor of this name ran
            self.queue.recover(self.name)
            self.queue.offer(held)
            self._recovered = True
        if time.monotonic() - self._last_sweep >= self.sweep_seconds:
            self._last_sweep = time.monotonic()
            try:
                self.queue.sweep(self.settings)
            except self.queue.unavailable_errors as error:
                db.session.rollback()
                log.warning("queue unavailable during sweep: %s", error)
        if time.monotonic() < self._outage_until:  # the model server is down: take nothing, wait
            if self._in_flight:
                previous, self._in_flight = self._in_flight, None
                return self._receive(previous)
            time.sleep(min(timeout, self._outage_until - time.monotonic()) if timeout > 0 else 0)
            return 0
        try:  # with a batch at the model, only look for more work; do not wait for it
            offered = self.queue.take(self.name, self.batch_size, 0.0 if self._in_flight else timeout)
        except self.queue.unavailable_errors as error:
            log.warning("queue unavailable: %s", error)
            offered = []
            if not self._in_flight:
                time.sleep(min(timeout, 1.0) or 0.1)
        sent = None
        if offered:
            jobs = claim(offered, self.name, self.settings)
            if jobs:
                sent = self._send(jobs, offered)
            else:
                self.queue.done(self.name, offered)
        previous, self._in_flight = self._in_flight, sent
        return self._receive(previous) if previous else 0

    def flush(self) -> None:
        """Writes the reports of the batch still at the model (before stopping)."""
        if self._in_flight:
            previous, self._in_flight = self._in_flight, None
            self._receive(previous)

    def _send(self, jobs: list[Job], offered: list[int]) -> "_InFlight | None":
        try:
            images = [self.store.get(job.scan.image_sha256) for job in jobs]
        except OSError as error:
            self._failed(jobs, f"scan storage: {error}", retryable=True)
            self.queue.done(self.name, offered)
            return None
        future = self._model_calls.submit(self._analyse, images)
        return _InFlight(jobs, offered, images, future, time.perf_counter())

    def _analyse(self, images: list[bytes]) -> list[tuple]:
        """(classifier's prediction, segmenter's answer or why there is none) for each image: the classifier's
        errors are the batch's; the segmenter's only cost a report its outlines."""
        predictions = self.client.explain_batch(images)
        return list(zip(predictions, self._segment(images), strict=True))

    def _segment(self, images: list[bytes]) -> list:
        from serving.client import InvalidInput, ServingClientError

        if not self.client.segmentation_model_name:
            return ["no segmentation model is configured"] * len(images)
        try:
            return self.client.segment_batch(images)
        except InvalidInput as error:
            if len(images) > 1:
                return [answer for image in images for answer in self._segment([image])]
            return [f"the segmentation model rejected this image: {error}"]
        except (ServingClientError, OSError) as error:
            log.warning("segmentation unavailable for %d images: %s", len(images), error)
            return [f"the segmentation model {self.client.segmentation_model_name} did not answer "
                    f"({type(error).__name__})"] * len(images)

    def _receive(self, batch: "_InFlight") -> int:
        from serving.client import (
            DeadlineExceeded,
            InvalidInput,
            ModelContractError,
            ModelNotFound,
            ServerUnavailable,
            ServingClientError,
            Unauthenticated,
        )

        try:
            try:
                answers = batch.future.result()
            except InvalidInput as error:
                if len(batch.jobs) > 1:  # find the one bad image: the others still get their reports
                    for job in batch.jobs:
                        single = self._send([job], [])
                        if single:
                            self._receive(single)
                    return len(batch.jobs)
                self._failed(batch.jobs, f"the model rejected this image: {error}", retryable=False)
                return 1
            except (ServerUnavailable, DeadlineExceeded, Unauthenticated, ModelNotFound, ModelContractError) as error:
                # An outage or a deployment problem, not the scan's: its reports wait; no attempt is used up.
                self._wait_for_model(batch.jobs, error)
                return 0
            except (ServingClientError, OSError) as error:
                self._failed(batch.jobs, f"model server: {error}", retryable=True)
                return len(batch.jobs)
            self._outage_backoff = 0.0
            model_seconds = time.perf_counter() - batch.started
            written = self._write_reports(batch, answers)
            log.info("%d reports: model answered after %.2fs, written in %.2fs", written, model_seconds,
                     time.perf_counter() - batch.started - model_seconds)
            return len(batch.jobs)
        finally:
            if batch.offered:
                self.queue.done(self.name, batch.offered)

    def _write_reports(self, batch: "_InFlight", answers) -> int:
        """One commit per report: a report that cannot be written (blob store or database error) is retried later
        and never costs the others theirs, nor this process its life."""
        uncertain_below = self.app.config["REPORT_UNCERTAIN_BELOW"]
        written = 0
        for job, image, (prediction, segmentation) in zip(batch.jobs, batch.images, answers, strict=True):
            try:
                report = reports.create_model_report(job.scan, image, prediction, self.store, uncertain_below,
                                                     segmentation=segmentation)
                segmenter = (f", {segmentation.model_name} v{segmentation.model_version}"
                             if not isinstance(segmentation, str) else ", no segmentation")
                record("report_drafted_by_model", report,
                       detail=f"{prediction.model_name} v{prediction.model_version}{segmenter}, worker {self.name}")
                finish(job)
                # read before the commit expires the scan (after it, each line would load the row again)
                context = (prediction_context.record(job.scan, job.scan.image_sha256, prediction, segmentation)
                           if self._context else None)
                db.session.commit()
                written += 1
                if context:
                    self._log_context(job.scan_id, context)
            except Exception as error:  # noqa: BLE001 - whatever fails, the job is retried, the worker lives
                log.exception("job %d: writing the report failed", job.id)
                self._failed([job], f"writing the report: {type(error).__name__}", retryable=True)
        return written

    def _log_context(self, scan_id: int, context: dict) -> None:
        """Best effort: a context line that cannot be written is logged, the report stands."""
        try:
            self._context.write(context)
        except OSError:
            log.exception("scan %d: the prediction context could not be written", scan_id)

    def _wait_for_model(self, jobs: list[Job], error: Exception) -> None:
        """Gives the jobs back for later and stops sending for a while (doubling, up to MODEL_OUTAGE_MAX_WAIT)."""
        most = self.app.config["MODEL_OUTAGE_MAX_WAIT"]
        self._outage_backoff = min(max(2 * self._outage_backoff, self.settings.retry_seconds), most)
        self._outage_until = time.monotonic() + self._outage_backoff
        db.session.rollback()
        not_before = release([job.id for job in jobs], f"waiting for the model server: {error}",
                             self._outage_backoff)
        log.warning("model server unavailable (%s); %d jobs wait, next try in %.0f s", error, len(jobs),
                    self._outage_backoff)
        try:
            self.queue.offer([job.id for job in jobs], not_before=not_before)
        except self.queue.unavailable_errors as queue_error:  # the sweeper will find them
            log.warning("could not schedule the jobs again: %s", queue_error)

    def _failed(self, jobs: list[Job], reason: str, retryable: bool) -> None:
        db.session.rollback()
        retry = {}
        for job in jobs:
            job = db.session.get(Job, job.id)
            not_before = fail(job, reason, self.settings, retryable)
            if not_before is not None:
                retry.setdefault(not_before, []).append(job.id)
            log.warning("job %d (scan %d) attempt %d: %s%s", job.id, job.scan_id, job.attempts, reason,
                        "" if not_before else "; failed")
        db.session.commit()
        for not_before, ids in retry.items():
            try:
                self.queue.offer(ids, not_before=not_before)
            except self.queue.unavailable_errors as error:  # the sweeper will find them
                log.warning("could not schedule retries: %s", error)


def model_client(config):
    """The worker's ServingClient, with the TLS files and token the configuration names."""
    from serving.client import ChannelSecurity, ServingClient

    security = ChannelSecurity.from_files(
        root_ca=config["MODEL_SERVER_TLS_CA"], client_certificate=config["MODEL_SERVER_TLS_CERT"],
        client_key=config["MODEL_SERVER_TLS_KEY"], token_file=config["MODEL_SERVER_TOKEN_FILE"],
        server_name=config["MODEL_SERVER_TLS_NAME"])
    return ServingClient(config["MODEL_SERVER"], config["MODEL_NAME"], timeout=config["MODEL_TIMEOUT"], retries=2,
                         security=security, segmentation_model_name=config["SEGMENTATION_MODEL_NAME"])


def main(app: Flask, name: str | None = None) -> None:
    """``radassist worker``: runs one worker for ``app`` until SIGTERM/SIGINT."""
    client = model_client(app.config)
    worker = Worker(app, client, name=name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    try:
        worker.run()
    finally:
        client.close()
