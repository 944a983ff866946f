"""Background jobs as the core sees them: what to do while one runs, and once, when it ends.

Rules
1. While a job runs nothing else is started; the lock holder keeps refreshing its lease while its PostgreSQL
   starts, and hands the lock over when the start overruns primary_start_timeout (Patroni's rule).
2. A finished job is acknowledged (AckJob) last in the decision that handles its outcome, so an outcome whose
   follow-up failed is seen again on the next tick.
3. A failed rewind is not retried against the same leader (memory.rewind_failed_from); with
   remove_data_directory_on_rewind_failure the data directory goes and the node clones afresh.
"""

from __future__ import annotations

from dataclasses import replace

from pgha.core import bootstrap
from pgha.core.actions import AckJob, RefreshLeader, ReleaseLeader, RemoveDataDir, StopMode, StopPostgres
from pgha.core.model import Job, JobKind, JobState, Observation
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings

START_AS_PRIMARY = "as primary"

_RUNNING = {JobKind.BOOTSTRAP: Reason.BOOTSTRAP_RUNNING, JobKind.CLONE: Reason.CLONE_RUNNING,
            JobKind.REWIND: Reason.REWIND_RUNNING}


def running(obs: Observation, memory: Memory, settings: Settings, job: Job) -> Decision:
    if job.kind is JobKind.START:
        return _starting(obs, memory, settings, job)
    return Decision((), memory, _RUNNING.get(job.kind, Reason.JOB_RUNNING), detail=job.kind.value)


def _lease_ok(obs: Observation, settings: Settings) -> bool:
    until = obs.lease.valid_until
    return until is not None and obs.now < until - settings.fence_margin


def _starting(obs: Observation, memory: Memory, settings: Settings, job: Job) -> Decision:
    cluster = obs.cluster
    elapsed = f"{obs.now - job.started_at:.1f}s"
    as_primary = job.detail == START_AS_PRIMARY
    if not as_primary:
        return Decision((), memory, Reason.JOB_RUNNING, detail="starting PostgreSQL as a replica")
    if cluster is None:
        if _lease_ok(obs, settings):
            return Decision((), memory, Reason.PRIMARY_STARTING, detail=elapsed)
        return Decision((StopPostgres(StopMode.IMMEDIATE),), memory, Reason.LEASE_EXPIRING_FENCE)
    if cluster.leader != settings.name:
        return Decision((StopPostgres(StopMode.IMMEDIATE),), memory, Reason.LOCK_LOST_DEMOTE, leader=cluster.leader)
    if obs.now - job.started_at > settings.primary_start_timeout and has_healthy_replica(obs, settings):
        return Decision((StopPostgres(StopMode.IMMEDIATE), ReleaseLeader()), memory, Reason.PRIMARY_START_TIMEOUT,
                        detail=elapsed)
    return Decision((RefreshLeader(),), memory, Reason.PRIMARY_STARTING, detail=elapsed)


def has_healthy_replica(obs: Observation, settings: Settings) -> bool:
    cluster = obs.cluster
    assert cluster is not None
    return any(m.name != settings.name and m.state == "running" and not m.nofailover for m in cluster.members)


def finished(obs: Observation, memory: Memory, settings: Settings, job: Job) -> Decision:
    ok = job.state is JobState.SUCCEEDED
    if job.kind is JobKind.BOOTSTRAP:
        return bootstrap.job_finished(obs, memory, settings, job)
    if ok:
        return Decision((AckJob(),), memory, Reason.JOB_DONE, detail=job.kind.value)
    if job.retryable:  # e.g. the leader was unreachable: nothing is wrong with our data, try again later
        return Decision((AckJob(),), memory, Reason.JOB_RETRY, detail=job.detail)
    if job.kind is JobKind.CLONE:
        return Decision((RemoveDataDir(), AckJob()), memory, Reason.CLONE_FAILED, detail=job.detail)
    if job.kind is JobKind.REWIND:
        return _rewind_failed(obs, memory, settings, job)
    holder = obs.cluster.leader if obs.cluster is not None else None
    if job.kind is JobKind.START and holder == settings.name:
        return Decision((ReleaseLeader(), AckJob()), memory, Reason.START_FAILED_RELEASE, detail=job.detail)
    return Decision((AckJob(),), memory, Reason.START_FAILED, detail=job.detail)


def _rewind_failed(obs: Observation, memory: Memory, settings: Settings, job: Job) -> Decision:
    if settings.remove_data_directory_on_rewind_failure:
        return Decision((RemoveDataDir(), AckJob()), memory, Reason.REWIND_FAILED_RECLONE, detail=job.detail)
    holder = obs.cluster.leader if obs.cluster is not None else None
    return Decision((AckJob(),), replace(memory, rewind_failed_from=holder), Reason.REWIND_FAILED, leader=holder,
                    detail=job.detail)
