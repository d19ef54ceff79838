"""Long work started from the pages (an analysis, a file import), run in a thread of the
server with its progress kept for the page to show.

The registry is in memory, in the process that started the job: the page asking about it
reaches that process when the server runs one worker (``patron serve``). What the job
leaves behind is in the store either way: the analysis run, the import run and its
rejects report.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from patron.kit.clock import utcnow
from patron.kit.errors import PatronError

Report = Callable[[float, str], None]
"""What a job calls as it goes: the share done (0 to 1) and what it is doing."""


@dataclass
class Job:
    id: str
    kind: str
    label: str
    actor: str
    started_at: datetime
    done: float = 0.0
    step: str = "starting"
    status: Literal["running", "finished", "failed"] = "running"
    result: str = ""
    finished_at: datetime | None = field(default=None)


class Jobs:
    """The jobs of this process, newest first."""

    def __init__(self, *, keep: int = 50) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._keep = keep

    def start(self, kind: str, label: str, actor: str, work: Callable[[Report], str]) -> Job:
        job = Job(secrets.token_urlsafe(8), kind, label, actor, utcnow())
        with self._lock:
            self._jobs[job.id] = job
            for stale in list(self._jobs)[: -self._keep]:
                del self._jobs[stale]

        def report(done: float, step: str) -> None:
            with self._lock:
                job.done, job.step = max(0.0, min(1.0, done)), step

        def run() -> None:
            try:
                outcome, status = work(report), "finished"
            except PatronError as exc:
                outcome, status = exc.message, "failed"
            except Exception as exc:  # a job's crash is shown on its page, not lost
                outcome, status = f"{type(exc).__name__}: {exc}", "failed"
            with self._lock:
                job.result, job.finished_at = outcome, utcnow()
                job.status = status  # type: ignore[assignment]
                if status == "finished":
                    job.done, job.step = 1.0, "done"

        threading.Thread(target=run, name=f"patron-job-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))


JOBS = Jobs()
