"""Situations without a usable local data directory, and the end of the background jobs that make one.

Rules
1. Only the node that wins the ``initialize`` key runs initdb (ClaimInitialize before Bootstrap); a node tagged
   nofailover never bootstraps (it could never lead the cluster it made).
2. A cluster that has a leader is joined by cloning from the leader; one that is initialized but leaderless is
   waited for, never bootstrapped again.
3. A failed bootstrap gives the initialize key back and removes what it half-made, acknowledged (AckJob) only
   after that cleanup succeeded.
"""

from __future__ import annotations

from pgha.core.actions import (AckJob, AcquireLeader, Bootstrap, CancelInitialize, ClaimInitialize, Clone,
                               ReleaseLeader, RemoveDataDir, SetInitialize, StopMode, StopPostgres, WriteConfig)
from pgha.core.model import Job, JobState, Observation
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings

def empty_data_dir(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    cluster = obs.cluster
    assert cluster is not None
    holder = cluster.leader
    if holder == settings.name:
        # Our key, but nothing to lead with: let another node take over.
        return Decision((ReleaseLeader(),), memory, Reason.WAIT_LEADER)
    if holder is not None:
        return Decision((Clone(holder),), memory, Reason.CLONE_STARTED, leader=holder)
    if cluster.initialize is None:
        if settings.nofailover:
            return Decision((), memory, Reason.NOT_ALLOWED_TO_BOOTSTRAP)
        return Decision((ClaimInitialize(), Bootstrap()), memory, Reason.BOOTSTRAP_CLAIMED)
    if cluster.initialize == "":
        return Decision((), memory, Reason.WAIT_BOOTSTRAP)
    return Decision((), memory, Reason.WAIT_LEADER)


def job_finished(obs: Observation, memory: Memory, settings: Settings, job: Job) -> Decision:
    """The end of the bootstrap job (jobs.py handles the other kinds)."""
    if job.state is JobState.SUCCEEDED:
        return _bootstrap_done(obs, memory, settings)
    return _bootstrap_failed(memory, job)


def _bootstrap_done(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    cluster = obs.cluster
    if cluster is None:
        return Decision((), memory, Reason.DCS_UNREACHABLE_HOLD, detail=obs.dcs_error)
    if cluster.leader not in (None, settings.name):
        # Someone leads a cluster we did not make: never run two primaries.
        return Decision((StopPostgres(StopMode.IMMEDIATE), AckJob()), memory, Reason.LOCK_LOST_DEMOTE,
                        leader=cluster.leader)
    actions = (AcquireLeader(), SetInitialize(obs.local.system_id or ""), WriteConfig(), AckJob())
    return Decision(actions, memory, Reason.BOOTSTRAP_DONE)


def _bootstrap_failed(memory: Memory, job: Job) -> Decision:
    actions = (StopPostgres(StopMode.IMMEDIATE), RemoveDataDir(), CancelInitialize(), AckJob())
    return Decision(actions, memory, Reason.BOOTSTRAP_FAILED, detail=job.detail)
