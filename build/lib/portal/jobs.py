"""Background analysis jobs: queued on upload, claimed by workers, retried with backoff, failed with a reason.

The ``jobs`` table is the source of truth. A queue only tells workers which job to try next:
- ``DatabaseQueue`` (the embedded default, no Redis): workers poll the table for due jobs.
- ``RedisQueue`` (production): a Redis list per queue, a per-worker processing list (moved back on restart),
  and a sorted set of delayed retries. Redis may lose everything (it keeps nothing on disk here); the sweeper
  re-offers every due queued job that is in no list, so the database alone is enough to recover.
Claiming is a conditional UPDATE (queued -> running), so a job offered twice still runs once. A running job
whose lease runs out (its worker died) is queued again; so queued work survives any restart.
"""

import dataclasses
import datetime as dt
import logging
import time

import sqlalchemy as sa

from portal.models import Batch, Job, JobStatus, db, utcnow

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobSettings:
    max_attempts: int = 4
    retry_seconds: float = 5.0      # doubles with every failed attempt
    lease_seconds: float = 300.0    # a running job not finished by then is given to another worker
    redispatch_seconds: float = 30.0  # Redis: a due job seen in no list for this long is offered again

    @classmethod
    def from_config(cls, config) -> "JobSettings":
        return cls(max_attempts=config["JOB_MAX_ATTEMPTS"], retry_seconds=config["JOB_RETRY_SECONDS"],
                   lease_seconds=config["JOB_LEASE_SECONDS"])


def enqueue_scans(scans, created_by, patient, queue: "JobQueue", batch: Batch | None = None) -> Batch:
    """One queued job per scan in ``batch`` (a new one by default), committed, then offered to the queue."""
    if batch is None:
        batch = Batch(created_by_id=created_by.id, patient_id=patient.id)
        db.session.add(batch)
        db.session.flush()
    jobs = [Job(batch_id=batch.id, scan_id=scan.id) for scan in scans]
    db.session.add_all(jobs)
    db.session.commit()
    try:
        queue.offer([job.id for job in jobs])
    except queue.unavailable_errors as error:  # the sweeper offers them once the queue is back
        log.warning("queue unavailable, %d jobs wait in the database: %s", len(jobs), error)
    return batch


def batch_progress(batch: Batch) -> dict:
    counts = {status.value: 0 for status in JobStatus}
    for job in batch.jobs:
        counts[job.status] += 1
    total = len(batch.jobs)
    finished = counts[JobStatus.DONE.value] + counts[JobStatus.FAILED.value]
    return {"batch": batch.id, "total": total, "finished": finished, "counts": counts,
            "complete": finished == total, "percent": round(100 * finished / total) if total else 100}


def latest_jobs(scan_ids: list[int]) -> dict[int, Job]:
    """scan id -> its most recent analysis job."""
    latest: dict[int, Job] = {}
    if scan_ids:
        for job in db.session.scalars(sa.select(Job).where(Job.scan_id.in_(scan_ids)).order_by(Job.id)):
            latest[job.scan_id] = job
    return latest


def claim(job_ids: list[int], worker: str, settings: JobSettings) -> list[Job]:
    """Switches each due queued job among ``job_ids`` to running for ``worker``; returns those it got."""
    now = utcnow()
    claimed = []
    for job_id in job_ids:
        result = db.session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value, Job.not_before <= now)
            .values(status=JobStatus.RUNNING.value, worker=worker, attempts=Job.attempts + 1, started_at=now,
                    lease_until=now + dt.timedelta(seconds=settings.lease_seconds))
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            claimed.append(job_id)
    db.session.commit()
    return list(db.session.scalars(sa.select(Job).where(Job.id.in_(claimed)).order_by(Job.id))) if claimed else []


def due_jobs(limit: int) -> list[int]:
    return list(db.session.scalars(
        sa.select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.not_before <= utcnow())
        .order_by(Job.id).limit(limit)))


def finish(job: Job) -> None:
    job.status, job.finished_at, job.lease_until, job.last_error = JobStatus.DONE.value, utcnow(), None, None


def fail(job: Job, reason: str, settings: JobSettings, retryable: bool) -> dt.datetime | None:
    """Records a failed attempt: queued again after a backoff (returned), or failed for good with ``reason``."""
    job.last_error, job.lease_until = reason[:2000], None
    if retryable and job.attempts < settings.max_attempts:
        job.status = JobStatus.QUEUED.value
        job.not_before = utcnow() + dt.timedelta(seconds=settings.retry_seconds * 2 ** (job.attempts - 1))
        return job.not_before
    job.status, job.finished_at = JobStatus.FAILED.value, utcnow()
    return None


def release(job_ids: list[int], reason: str, delay_seconds: float) -> dt.datetime:
    """Running jobs -> queued again after ``delay_seconds``, the attempt not counted: the model server was down,
    which says nothing about the scan. Returns when they are due."""
    not_before = utcnow() + dt.timedelta(seconds=delay_seconds)
    db.session.execute(
        sa.update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING.value)
        .values(status=JobStatus.QUEUED.value, attempts=Job.attempts - 1, lease_until=None, not_before=not_before,
                last_error=reason[:2000])
        .execution_options(synchronize_session=False))
    db.session.commit()
    return not_before


def requeue_expired(settings: JobSettings, worker: str | None = None) -> list[int]:
    """Running jobs whose lease ran out (their worker died), or every running job of ``worker`` (it restarted
    under the same name) -> queued again, or failed after the last attempt."""
    now = utcnow()
    running = sa.select(Job).where(Job.status == JobStatus.RUNNING.value)
    expired = list(db.session.scalars(running.where(Job.worker == worker) if worker else
                                      running.where(Job.lease_until < now)))
    requeued = []
    for job in expired:
        if job.attempts >= settings.max_attempts:
            job.status, job.finished_at = JobStatus.FAILED.value, now
            job.last_error = f"worker {job.worker} stopped during the last attempt"
        else:
            job.status, job.not_before, job.lease_until = JobStatus.QUEUED.value, now, None
            job.last_error = f"worker {job.worker} stopped; retried"
            requeued.append(job.id)
    db.session.commit()
    if expired:
        log.warning("requeued %d jobs whose worker stopped, failed %d", len(requeued), len(expired) - len(requeued))
    return requeued


class JobQueue:
    """Tells workers which jobs to try. Losing a message delays a job; it never loses it."""

    unavailable_errors: tuple[type[BaseException], ...] = ()

    def offer(self, job_ids: list[int], not_before: dt.datetime | None = None) -> None:
        """Makes jobs visible to workers (now, or from ``not_before``)."""

    def take(self, worker: str, limit: int, timeout: float) -> list[int] | None:
        """Up to ``limit`` job ids to try, waiting at most ``timeout`` s. None: look in the database yourself."""
        raise NotImplementedError

    def done(self, worker: str, job_ids: list[int]) -> None:
        """The worker is finished with these ids (whatever the outcome)."""

    def recover(self, worker: str) -> None:
        """Called when a worker starts: gives back what an earlier run of the same worker held."""

    def sweep(self, settings: JobSettings) -> None:
        """Periodic housekeeping (any worker may run it): jobs of workers that died are queued again."""
        self.offer(requeue_expired(settings))


class DatabaseQueue(JobQueue):
    """No broker: workers poll the jobs table. The embedded default."""

    def __init__(self, poll_seconds: float = 0.25):
        self.poll_seconds = poll_seconds

    def take(self, worker: str, limit: int, timeout: float) -> list[int] | None:
        ids = due_jobs(limit)
        if not ids:
            db.session.rollback()  # end the read transaction so the next poll sees new rows
            time.sleep(min(self.poll_seconds, timeout))
        return ids


class RedisQueue(JobQueue):
    def __init__(self, url: str, name: str = "radassist:jobs", timeout: float = 5.0):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=timeout + 5, socket_connect_timeout=timeout)
        self.ready, self.delayed = f"{name}:ready", f"{name}:delayed"
        self.processing_prefix = f"{name}:processing:"
        self.unavailable_errors = (redis.RedisError,)

    def offer(self, job_ids: list[int], not_before: dt.datetime | None = None) -> None:
        if not job_ids:
            return
        if not_before is None:
            self.redis.lpush(self.ready, *job_ids)
        else:
            score = not_before.replace(tzinfo=dt.UTC).timestamp()
            self.redis.zadd(self.delayed, {str(job_id): score for job_id in job_ids})

    def take(self, worker: str, limit: int, timeout: float) -> list[int] | None:
        processing = self.processing_prefix + worker
        if timeout > 0:
            first = self.redis.blmove(self.ready, processing, timeout, "RIGHT", "LEFT")
        else:  # BLMOVE's 0 means "wait forever"
            first = self.redis.lmove(self.ready, processing, "RIGHT", "LEFT")
        if first is None:
            return []
        ids = [int(first)]
        while len(ids) < limit:
            more = self.redis.lmove(self.ready, processing, "RIGHT", "LEFT")
            if more is None:
                break
            ids.append(int(more))
        return ids

    def done(self, worker: str, job_ids: list[int]) -> None:
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.lrem(self.processing_prefix + worker, 1, job_id)
        pipe.execute()

    def recover(self, worker: str) -> None:
        processing = self.processing_prefix + worker
        while self.redis.lmove(processing, self.ready, "RIGHT", "LEFT") is not None:
            pass

    def sweep(self, settings: JobSettings) -> None:
        now = time.time()
        due = self.redis.zrangebyscore(self.delayed, "-inf", now)
        if due:
            pipe = self.redis.pipeline()
            pipe.zrem(self.delayed, *due)
            pipe.lpush(self.ready, *due)
            pipe.execute()
        super().sweep(settings)
        self._reoffer_lost(settings)

    def _reoffer_lost(self, settings: JobSettings) -> None:
        """Due queued jobs that no list holds (Redis restarted, or an offer failed) are offered again."""
        cutoff = utcnow() - dt.timedelta(seconds=settings.redispatch_seconds)
        waiting = list(db.session.scalars(sa.select(Job.id).where(
            Job.status == JobStatus.QUEUED.value, Job.not_before <= cutoff)))
        db.session.rollback()
        if not waiting:
            return
        held = {int(x) for x in self.redis.lrange(self.ready, 0, -1)}
        held |= {int(x) for x in self.redis.zrange(self.delayed, 0, -1)}
        for key in self.redis.scan_iter(self.processing_prefix + "*"):
            held |= {int(x) for x in self.redis.lrange(key, 0, -1)}
        lost = [job_id for job_id in waiting if job_id not in held]
        if lost:
            log.warning("offering %d queued jobs again that no queue held", len(lost))
            self.offer(lost)


def queue_from_url(url: str | None) -> JobQueue:
    """``redis://...`` -> RedisQueue; empty -> DatabaseQueue."""
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return RedisQueue(url)
    if url:
        raise ValueError(f"unsupported job queue URL {url!r} (use redis://host:port/db, or leave it empty)")
    return DatabaseQueue()
