"""Long work started from the pages (an analysis, a file import), run in a thread of the
server, with its state kept in the ``jobs`` table so that every server process sees it.

The job's process writes its progress and a heartbeat in short transactions of their own,
from a beat thread beside the job: the job itself never waits on those writes (an analysis
on SQLite holds the write lock from its start to its end). A running job whose heartbeat is
older than a minute shows as stalled: its process died or lost the store. The process that
runs a job shows that job's progress first-hand, so a lagging write never makes it look
stalled there.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from patron.kit.clock import utcnow
from patron.kit.db import unit_of_work
from patron.kit.errors import PatronError
from patron.models import Job, JobStatus
from patron.web.repository import WebRepository

log = logging.getLogger(__name__)

Report = Callable[[float, str], None]
"""What a job calls as it goes: the share done (0 to 1) and what it is doing."""

STALLED_AFTER = timedelta(seconds=60)
"""A running job whose heartbeat is older than this is shown as stalled."""

Shown = Literal["running", "finished", "failed", "stalled"]


@dataclass(frozen=True)
class JobState:
    """A job as a page shows it."""

    id: str
    kind: str
    label: str
    actor: str
    status: Shown
    done: float
    step: str
    result: str
    owner: str
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None


def this_process() -> str:
    """The owner name of jobs run here: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Jobs:
    """Start jobs in this process and read every process's jobs from the store."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        beat_seconds: float = 1.0,
        heartbeat_seconds: float = 10.0,
        stalled_after: timedelta = STALLED_AFTER,
    ) -> None:
        self._factory = factory
        self._beat = beat_seconds
        self._heartbeat = timedelta(seconds=heartbeat_seconds)
        self._stalled_after = stalled_after
        self._lock = threading.Lock()
        self._live: dict[str, tuple[float, str]] = {}
        """Progress of the jobs running in this process, as they report it."""

    def start(self, kind: str, label: str, actor: str, work: Callable[[Report], str]) -> str:
        """Record the job, run ``work`` in a thread, and return the job's id."""
        job_id = secrets.token_urlsafe(8)
        with unit_of_work(self._factory) as session:
            WebRepository(session).add(
                Job(id=job_id, kind=kind, label=label, actor=actor, owner=this_process())
            )
        with self._lock:
            self._live[job_id] = (0.0, "starting")

        def report(done: float, step: str) -> None:
            with self._lock:
                self._live[job_id] = (max(0.0, min(1.0, done)), step)

        def run() -> None:
            stop = threading.Event()
            beat = threading.Thread(
                target=self._beat_until, args=(job_id, stop), name=f"patron-beat-{job_id}",
                daemon=True,
            )  # fmt: skip
            beat.start()
            try:
                outcome, status = work(report), JobStatus.FINISHED
            except PatronError as exc:
                outcome, status = exc.message, JobStatus.FAILED
            except Exception as exc:  # a job's crash is shown on its page, not lost
                outcome, status = f"{type(exc).__name__}: {exc}", JobStatus.FAILED
            stop.set()
            beat.join()
            with self._lock:
                done, step = self._live[job_id]
            if status is JobStatus.FINISHED:
                done, step = 1.0, "done"
            now = utcnow()
            try:
                self._write(job_id, status=status, done=done, step=step, result=outcome,
                            finished_at=now, heartbeat_at=now)  # fmt: skip
            except SQLAlchemyError:
                log.exception("job %s ended (%s) but its outcome could not be stored", job_id,
                              status.value)  # fmt: skip
            with self._lock:
                del self._live[job_id]

        threading.Thread(target=run, name=f"patron-job-{job_id}", daemon=True).start()
        return job_id

    def _beat_until(self, job_id: str, stop: threading.Event) -> None:
        """Write the job's progress when it changes, and the heartbeat at least every
        ``heartbeat_seconds``, until ``stop`` is set."""
        written: tuple[float, str] | None = None
        last = utcnow()
        while not stop.wait(self._beat):
            with self._lock:
                now_at = self._live[job_id]
            now = utcnow()
            if now_at == written and now - last < self._heartbeat:
                continue
            try:
                self._write(job_id, done=now_at[0], step=now_at[1], heartbeat_at=now)
            except SQLAlchemyError as exc:  # the next beat tries again
                log.warning("job %s: progress not stored: %s", job_id, exc)
                continue
            written, last = now_at, now

    def _write(self, job_id: str, **values: object) -> None:
        with unit_of_work(self._factory) as session:
            WebRepository(session).update_job(job_id, **values)

    def get(self, session: Session, job_id: str) -> JobState | None:
        found = WebRepository(session).job(job_id)
        return self._shown(found) if found is not None else None

    def recent(self, session: Session, *, limit: int = 50) -> list[JobState]:
        """The newest jobs of every process, newest first."""
        return [self._shown(job) for job in WebRepository(session).recent_jobs(limit=limit)]

    def _shown(self, job: Job) -> JobState:
        state = JobState(
            id=job.id, kind=job.kind, label=job.label, actor=job.actor,
            status=job.status.value,
            done=job.done, step=job.step, result=job.result, owner=job.owner,
            started_at=job.started_at, heartbeat_at=job.heartbeat_at,
            finished_at=job.finished_at,
        )  # fmt: skip
        with self._lock:
            live = self._live.get(job.id)
        if live is not None and job.status is JobStatus.RUNNING:
            return replace(state, done=live[0], step=live[1])
        if job.status is JobStatus.RUNNING and utcnow() - job.heartbeat_at > self._stalled_after:
            return replace(state, status="stalled")
        return state
