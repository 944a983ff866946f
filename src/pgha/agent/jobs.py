"""Background jobs: long PostgreSQL tasks (bootstrap, clone) that must not block the HA loop.

Rules
1. At most one job at a time; the core never asks for a second while one runs (it sees ``LocalState.job``).
2. A finished job stays reported, with its outcome, until the core acknowledges it (AckJob), so an outcome is
   never lost to a failed follow-up step.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pgha.core.model import Job, JobKind, JobState
from pgha.ports import TransientJobError

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, clock: Callable[[], float] = time.monotonic, on_done: Callable[[], None] | None = None):
        self._clock = clock
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._on_done = on_done

    def current(self) -> Job | None:
        with self._lock:
            return self._job

    def start(self, kind: JobKind, work: Callable[[], None], detail: str = "") -> None:
        with self._lock:
            if self._job is not None:
                raise RuntimeError(f"a {self._job.kind.value} job is already reported")
            self._job = Job(kind, JobState.RUNNING, self._clock(), detail)
        threading.Thread(target=self._run, args=(kind, work), name=f"job-{kind.value}", daemon=True).start()

    def _run(self, kind: JobKind, work: Callable[[], None]) -> None:
        started = self.current().started_at  # type: ignore[union-attr]
        try:
            work()
            outcome = Job(kind, JobState.SUCCEEDED, started)
        except Exception as e:  # the job's failure is an observation, never a crash of the agent
            log.error("%s failed: %s", kind.value, e)
            outcome = Job(kind, JobState.FAILED, started, detail=str(e)[:500],
                          retryable=isinstance(e, TransientJobError))
        with self._lock:
            self._job = outcome
        if self._on_done:
            self._on_done()

    def ack(self) -> None:
        with self._lock:
            if self._job is not None and self._job.state is not JobState.RUNNING:
                self._job = None
