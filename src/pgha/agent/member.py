"""The member data an agent publishes under ``members/<name>``, in Patroni's format (spec section 1).

Pure: built from the config and this tick's LocalState. Patroni's confd/HAProxy templates split conn_url and
api_url on '/' and ':', so their shapes are kept exactly.
"""

from __future__ import annotations

from typing import Any

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


def member_data(cfg: Any, local: LocalState, api_scheme: str = "http") -> dict[str, Any]:
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
    return data
