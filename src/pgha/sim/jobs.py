"""The simulator's background jobs: ``JobRunner``'s interface (current, start, ack) on simulated time.

A job's ``work`` runs when the job completes, ``duration(kind)`` simulated seconds after it started (at the
node's local time: a job started late in a tick slowed by the DCS starts that much later), scheduled through
``schedule(at, callback)``; then the agent is woken (``on_done``), as the real runner's thread would.

Rules
1. Deterministic: no threads; the world's event loop runs the completion.
2. At most one job; a finished job stays reported until acknowledged (the JobRunner contract).
3. ``cancel()`` forgets a running job whose agent died: its work never runs (a killed pg_basebackup leaves nothing
   the fake data directory would keep).
"""

from __future__ import annotations

from typing import Callable

from pgha.core.model import Job, JobKind, JobState
from pgha.ports import TransientJobError


class SimJobs:
    def __init__(self, now: Callable[[], float], schedule: Callable[[float, Callable[[], None]], None],
                 duration: Callable[[JobKind], float], on_done: Callable[[], None]) -> None:
        self._now = now
        self._schedule = schedule
        self._duration = duration
        self._on_done = on_done
        self._job: Job | None = None
        self._generation = 0

    def current(self) -> Job | None:
        return self._job

    def start(self, kind: JobKind, work: Callable[[], None], detail: str = "") -> None:
        if self._job is not None:
            raise RuntimeError(f"a {self._job.kind.value} job is already reported")
        self._job = Job(kind, JobState.RUNNING, self._now(), detail)
        self._generation += 1
        generation = self._generation
        self._schedule(self._now() + self._duration(kind), lambda: self._finish(generation, kind, work))

    def _finish(self, generation: int, kind: JobKind, work: Callable[[], None]) -> None:
        if generation != self._generation or self._job is None:
            return
        started = self._job.started_at
        try:
            work()
            self._job = Job(kind, JobState.SUCCEEDED, started)  # as JobRunner: the outcome carries no detail
        except Exception as e:  # the job's failure is an observation, as in JobRunner
            self._job = Job(kind, JobState.FAILED, started, detail=str(e)[:500],
                            retryable=isinstance(e, TransientJobError))
        self._on_done()

    def ack(self) -> None:
        if self._job is not None and self._job.state is not JobState.RUNNING:
            self._job = None

    def cancel(self) -> None:
        self._generation += 1
        self._job = None
