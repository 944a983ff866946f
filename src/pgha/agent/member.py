"""The member data an agent publishes under ``members/<name>``, in Patroni's format (spec section 1).

Built from the config and this tick's LocalState. Patroni's confd/HAProxy templates split conn_url and
api_url on '/' and ':', so their shapes are kept exactly.

Patroni also publishes ``pending_restart`` (+ ``pending_restart_reason``) while PostgreSQL waits for a restart to
apply a changed setting, and ``pause: true`` while the cluster is in maintenance mode (patronictl's ``list`` and
``pause --wait`` read them here). Both come from what the agent reports for its REST API (report.py): pass them
as ``status``, or, when the caller has none, the last status reported for this member is used (``note_status``,
at most one tick old).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from pgha import PATRONI_COMPAT_VERSION, __version__
from pgha.core.model import DataDir, JobKind, JobState, LocalState, PgRole

_JOB_STATES = {JobKind.BOOTSTRAP: "initializing new cluster", JobKind.CLONE: "creating replica",
               JobKind.REWIND: "rewinding", JobKind.START: "starting"}


def member_state(local: LocalState) -> str:
    job = local.job
    if job is not None and job.state is JobState.RUNNING:
        return _JOB_STATES.get(job.kind, "starting")
    if job is not None and job.state is JobState.FAILED and job.kind is JobKind.BOOTSTRAP:
        return "initdb failed"
    if not local.running:
        return "stopped"
    return "running" if local.role is not None else "starting"


def member_role(local: LocalState) -> str:
    job = local.job
    building = job is not None and job.state is JobState.RUNNING and job.kind in (JobKind.CLONE, JobKind.BOOTSTRAP)
    if local.data_dir is not DataDir.INITIALIZED or building:
        return "uninitialized"  # a half-copied data directory's pg_control says nothing about its role
    if local.role is PgRole.PRIMARY:
        return "primary"
    if local.role is PgRole.REPLICA or local.last_role is PgRole.REPLICA:
        return "replica"
    return "primary" if local.last_role is PgRole.PRIMARY else "uninitialized"


_noted: dict[tuple[str, str], dict[str, Any]] = {}  # (scope, name) -> the status flags last reported
_noted_lock = threading.Lock()


def status_flags(pending_reason: Mapping[str, Any] | None, paused: bool) -> dict[str, Any]:
    """The member-data fields that come from the agent's status: Patroni's names and shapes."""
    flags: dict[str, Any] = {}
    if pending_reason:
        flags["pending_restart"] = True
        flags["pending_restart_reason"] = {k: dict(v) if isinstance(v, Mapping) else v
                                           for k, v in pending_reason.items()}
    if paused:
        flags["pause"] = True
    return flags


def note_status(cfg: Any, flags: Mapping[str, Any]) -> None:
    """Called by the status report each tick: what the next ``member_data`` of this member publishes."""
    with _noted_lock:
        _noted[(str(cfg.scope), str(cfg.name))] = dict(flags)


def _flags_for(cfg: Any) -> dict[str, Any]:
    with _noted_lock:
        return dict(_noted.get((str(getattr(cfg, "scope", "")), str(getattr(cfg, "name", ""))), {}))


def member_data(cfg: Any, local: LocalState, api_scheme: str = "http",
                status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "conn_url": f"postgres://{cfg.postgresql.connect_address}/{cfg.postgresql.database}",
        "api_url": f"{api_scheme}://{cfg.restapi.connect_address}/patroni",
        "state": member_state(local),
        "role": member_role(local),
        "version": PATRONI_COMPAT_VERSION,
        "pgha_version": __version__,
    }
    if local.wal_position is not None and local.running:
        data["xlog_location"] = local.wal_position
    if local.timeline is not None:
        data["timeline"] = local.timeline
    if local.role is PgRole.REPLICA:
        if local.receive_lsn is not None:
            data["receive_lsn"] = local.receive_lsn
        if local.replay_lsn is not None:
            data["replay_lsn"] = local.replay_lsn
        data["replication_state"] = "streaming" if local.streaming_from else "in archive recovery"
    if cfg.tags:
        data["tags"] = dict(cfg.tags)
    flags = dict(status) if status is not None else _flags_for(cfg)
    if not local.running:
        flags.pop("pending_restart", None)
        flags.pop("pending_restart_reason", None)
    data.update(flags)
    return data
