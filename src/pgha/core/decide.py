"""The decision core: one observation in, one decision out.

Theory of operation
-------------------
``decide(obs, memory, settings)`` is a pure function. The shell observes the world (DCS snapshot, local
PostgreSQL, its own lease, the time), calls it, carries out the returned actions in order (stopping at the first
failure, see actions.py) and publishes the reason. Nothing here reads a clock, a socket or a file.

The dispatcher applies the rules that hold whatever the role, in this order, and then hands over to one
situation handler (bootstrap.py, leader.py, replica.py):
1. A requested shutdown wins over everything. A leader stops cleanly and hands the lock over only once a replica
   has the shutdown checkpoint.
2. Single-writer rule: a node running as primary that cannot show a valid lease demotes *now*. "Valid" means
   the DCS names us as leader, or, when the DCS cannot be read, our last accepted renewal is still good for longer
   than ``settings.fence_margin``. Nothing below this rule may keep a primary running without the lease. (The
   bootstrap job's fresh primary is exempt: it runs before the cluster exists, under the initialize key.)
3. A background job (bootstrap, clone, start, rewind) in progress: wait for it (jobs.py); its outcome is handled
   once, when it ends.
4. DCS unreachable: replicas keep doing what they do; nobody starts, promotes or clones.
5. Identity: a data directory whose system id differs from the cluster's ``initialize`` key is refused.
6. An operator request (restart, reload, reinitialize; requests.py) is carried out before the situation.
7. Paused (``pause: true`` in the DCS config): pause.py replaces the situation handlers.
"""

from __future__ import annotations

from dataclasses import replace

from pgha.core import bootstrap, jobs, leader, pause, replica, requests
from pgha.core.actions import AwaitReplicated, Demote, Exit, RevokeLease, StopMode, StopPostgres
from pgha.core.model import DataDir, JobKind, JobState, Observation, PgRole
from pgha.core.reasons import Reason
from pgha.core.settings import Decision, Memory, Settings


def decide(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    memory = _observe(obs, memory)
    for rule in (_shutdown, _single_writer, _job_outcome, _dcs_unreachable, _identity, requests.handle):
        decision = rule(obs, memory, settings)
        if decision is not None:
            return _remember(decision)
    return _remember(_by_situation(obs, memory, settings))


def _observe(obs: Observation, memory: Memory) -> Memory:
    """Facts worth carrying to later ticks, taken from this observation."""
    local = obs.local
    was_primary = memory.was_primary
    if local.role is PgRole.PRIMARY or (not local.running and local.last_role is PgRole.PRIMARY):
        was_primary = True
    elif local.streaming_from is not None:
        was_primary = False
    unstreamed = None
    if local.running and local.role is PgRole.REPLICA and local.streaming_from is None:
        unstreamed = memory.unstreamed_since if memory.unstreamed_since is not None else obs.now
    if (was_primary, unstreamed) == (memory.was_primary, memory.unstreamed_since):
        return memory
    return replace(memory, was_primary=was_primary, unstreamed_since=unstreamed)


def _remember(decision: Decision) -> Decision:
    if decision.memory.last_reason is decision.reason:
        return decision  # the same reason as last tick (the steady state): nothing new to remember
    return replace(decision, memory=replace(decision.memory, last_reason=decision.reason))


def _by_situation(obs: Observation, memory: Memory, settings: Settings) -> Decision:
    assert obs.cluster is not None
    if obs.cluster.paused and obs.cluster.initialize:
        return pause.paused(obs, memory, settings)
    if obs.local.data_dir is not DataDir.INITIALIZED:
        return bootstrap.empty_data_dir(obs, memory, settings)
    holder = obs.cluster.leader
    if holder == settings.name:
        return leader.as_lock_holder(obs, memory, settings)
    if holder is None:
        return replica.no_leader(obs, memory, settings)
    return replica.follow(obs, memory, settings, holder)


def _shutdown(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    if not obs.shutdown_requested:
        return None
    actions: list = []
    holder = obs.cluster is not None and obs.cluster.leader == settings.name
    job = obs.local.job
    starting = job is not None and job.kind is JobKind.START and job.state is JobState.RUNNING
    if obs.local.running or starting:  # a start on its way is finished, then stopped (PostgresPort.stop)
        actions.append(StopPostgres(StopMode.FAST))
        if holder and obs.local.role is PgRole.PRIMARY:
            actions.append(AwaitReplicated(timeout=min(5.0, settings.ttl / 2)))
    if obs.cluster is not None:
        actions.append(RevokeLease())  # leader key (if ours) and member key go together
    reason = Reason.SHUTDOWN_HANDOVER if any(isinstance(a, AwaitReplicated) for a in actions) else Reason.SHUTDOWN
    return Decision(tuple(actions), memory, reason)


def _job_outcome(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    job = obs.local.job
    if job is None:
        return None
    if job.state is JobState.RUNNING:
        return jobs.running(obs, memory, settings, job)
    return jobs.finished(obs, memory, settings, job)


def lease_is_valid(obs: Observation, settings: Settings) -> bool:
    until = obs.lease.valid_until
    return until is not None and obs.now < until - settings.fence_margin


def _single_writer(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    if obs.local.role is not PgRole.PRIMARY:
        return None
    job = obs.local.job
    if job is not None and job.kind is JobKind.BOOTSTRAP:
        return None  # jobs.py: the fresh primary takes the lock when its bootstrap ends
    cluster = obs.cluster
    if cluster is None:
        if lease_is_valid(obs, settings):
            return None  # rule 4 explains the wait
        return Decision((Demote(StopMode.IMMEDIATE, None),), memory, Reason.LEASE_EXPIRING_FENCE,
                        detail=obs.dcs_error)
    holder = cluster.leader
    if holder == settings.name:
        return None  # the leader handler refreshes first
    if holder is None:
        if lease_is_valid(obs, settings):
            return None  # leader.py takes the key back while our lease still covers us
        return Decision((Demote(StopMode.IMMEDIATE, None),), memory, Reason.LEASE_EXPIRING_FENCE)
    return Decision((Demote(StopMode.IMMEDIATE, holder),), memory, Reason.LOCK_LOST_DEMOTE, leader=holder)


def _dcs_unreachable(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    if obs.cluster is not None:
        return None
    hold = obs.local.role is PgRole.PRIMARY
    reason = Reason.DCS_UNREACHABLE_HOLD if hold else Reason.DCS_UNREACHABLE
    return Decision((), memory, reason, detail=obs.dcs_error)


def _identity(obs: Observation, memory: Memory, settings: Settings) -> Decision | None:
    assert obs.cluster is not None
    local = obs.local
    if local.data_dir is DataDir.INVALID:
        message = ("the data directory is not empty and holds no PostgreSQL cluster; "
                   "refusing to touch it (empty it or point postgresql.data_dir elsewhere)")
        return Decision((Exit(message),), memory, Reason.INVALID_DATA_DIR, detail=message)
    initialize = obs.cluster.initialize
    if local.data_dir is DataDir.INITIALIZED and initialize and local.system_id and initialize != local.system_id:
        message = (f"the data directory belongs to another cluster: its system id {local.system_id} differs from "
                   f"the cluster's initialize key {initialize}; refusing to start")
        return Decision((Exit(message),), memory, Reason.FOREIGN_DATA_DIR, detail=message)
    return None


__all__ = ["decide", "lease_is_valid", "Decision", "Memory", "Settings"]
