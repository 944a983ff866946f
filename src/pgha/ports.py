"""The small interfaces the agent's shell drives: the DCS and the clock.

Every DCS backend (etcd v3, ZooKeeper, Consul (experimental); the in-memory one for the simulator and tests)
implements ``Dcs`` and passes the same contract suite (tests/contract/; Consul, with no server installable
here, is tested against exchanges recorded from its documentation instead). Keys and values are Patroni's
(../shared/spec/patroni-compat.md, section 1), under ``/<namespace>/<scope>/``.

Rules
1. Every call returns within its deadline (``timeout`` seconds, or the backend's default), raising
   ``DcsError`` when the DCS cannot be reached in time. No call retries past its deadline.
2. Compare-and-swap operations answer False when the comparison fails; that is not an error.
3. One lease (session) per agent: the leader key and the agent's own member key both live on it, so both vanish
   when the agent stops renewing for ``ttl`` seconds.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from pgha.core.model import ClusterView, LocalState, Member


class DcsError(Exception):
    """The DCS could not be reached or answered an error, within the call's deadline."""


class TransientJobError(Exception):
    """A background job failed for a passing reason (its source was unreachable): the core tries again later
    and repairs nothing (no data directory is removed for it)."""


class Dcs(Protocol):
    ttl: int

    def set_ttl(self, ttl: int) -> None:
        """Use ``ttl`` for leases granted from now on (a new lease is granted at the next renew)."""

    def snapshot(self, timeout: float | None = None) -> ClusterView:
        """Read the whole cluster prefix in one consistent read."""

    def renew_lease(self, timeout: float | None = None) -> float:
        """Keep the agent's lease alive, granting a new one when it has none or it expired.

        Returns the TTL in seconds the DCS granted, counted from the moment this call was *sent*.
        """

    def acquire_leader(self, name: str, timeout: float | None = None) -> bool:
        """Create the leader key with ``name`` on our lease, only if it does not exist."""

    def refresh_leader(self, name: str, timeout: float | None = None) -> bool:
        """Keep holding the leader key: renew the lease and make sure the key holds ``name`` on our lease.

        False when the key is missing or holds another name: the lock is lost.
        """

    def release_leader(self, name: str, timeout: float | None = None) -> bool:
        """Delete the leader key only if it holds ``name``."""

    def touch_member(self, name: str, data: Mapping[str, Any], timeout: float | None = None) -> None:
        """Write ``members/<name>`` (compact JSON) on our lease; skipped when unchanged since the last write."""

    def member_lease_alive(self, name: str, timeout: float | None = None,
                           window: float | None = None) -> bool | None:
        """Is ``members/<name>`` held by a lease other than ours that someone keeps renewing?

        Watches the lease for ``window`` seconds (an owner renews at least once per its loop_wait). None when
        the key does not exist. Used once at start-up to refuse a second agent with a live name.
        """

    def claim_initialize(self, timeout: float | None = None) -> bool:
        """Create ``initialize`` with "" only if absent: True means we won the bootstrap race."""

    def set_initialize(self, system_id: str, timeout: float | None = None) -> None:
        """Write the system identifier into ``initialize`` (permanent key)."""

    def cancel_initialize(self, timeout: float | None = None) -> None:
        """Delete ``initialize`` after a failed bootstrap, so another node may try."""

    def set_config(self, config: Mapping[str, Any], timeout: float | None = None) -> bool:
        """Create ``config`` (dynamic configuration JSON) only if absent."""

    def put_key(self, key: str, value: Any, version: int | None = None, timeout: float | None = None) -> bool:
        """Write the permanent key ``key`` (one of dcs.keys.PERMANENT: config, failover, failsafe, sync) as compact
        JSON. With ``version`` (``ClusterView.versions[key]``, 0 for an absent key) only if the key was not
        written since: False when it was (rule 2)."""

    def delete_key(self, key: str, version: int | None = None, timeout: float | None = None) -> bool:
        """Delete a permanent key; with ``version`` only if unchanged since (False otherwise)."""

    def delete_cluster(self, timeout: float | None = None) -> None:
        """Delete every key of this cluster (``/<namespace>/<scope>/...``): `pgha remove`, patronictl's
        ``remove``. Members still running write their keys again on their next tick."""

    def set_history(self, history: list[list[Any]], timeout: float | None = None) -> None: ...

    def set_status(self, status: Mapping[str, Any], timeout: float | None = None) -> None: ...

    def wait_for_leader_change(self, timeout: float) -> bool:
        """Block until the leader key changes (or the watch breaks), at most ``timeout`` s. True if it changed.
        A backend may also wake on a change of the ``failover`` key (etcd does), so a switchover starts at once."""

    def close(self, revoke: bool = True) -> None:
        """Stop watches; with ``revoke`` drop our lease, which deletes our member and leader keys at once."""


class PostgresPort(Protocol):
    """The local PostgreSQL as the agent's shell drives it (postgres/node.py; a fake one in the simulator).

    Long operations (``bootstrap``, ``clone``) are called from a background job; the rest from the HA loop.
    Failures raise (CommandError, OSError, psycopg errors); the executor turns them into a failed action.
    """

    dynamic_parameters: Mapping[str, Any]
    use_slots: bool

    def local_state(self) -> LocalState: ...

    def close(self) -> None: ...

    def write_pgpass(self) -> None: ...

    stop_epoch: int  # bumped by every stop()

    def start(self, upstream: Member | None, as_primary: bool, hba: tuple[str, ...] | None,
              epoch: int | None = None) -> None:
        """Start PostgreSQL; with ``epoch`` (stop_epoch when the start was ordered), refuse if a stop was ordered
        since: a fence must never be undone by a start job that was already on its way."""

    def stop(self, mode: str) -> None:
        """Stop PostgreSQL; waits for a start in progress to finish first, then stops it."""

    def promote(self, timeline: int | None = None) -> None:
        """pg_ctl promote; with ``timeline``, onto that id (the ids between are marked taken first)."""

    def checkpoint(self) -> None: ...

    def follow(self, upstream: Member | None) -> None: ...

    def remove_data_dir(self) -> None: ...

    def reload_config(self, cluster: ClusterView | None, hba: tuple[str, ...] | None) -> None:
        """Rewrite PostgreSQL's configuration from the settings in use and reload it (keeping the upstream)."""

    def bootstrap(self, initdb_args: tuple[str, ...], hba: tuple[str, ...] | None,
                  post_bootstrap_hba: tuple[str, ...]) -> None: ...

    def clone(self, source: Member) -> None: ...

    def sync_slots(self, members: tuple[str, ...]) -> None: ...

    def rewind(self, source: Member) -> None:
        """pg_rewind from ``source`` (no-op when not diverged), then configure as its replica."""

    def replicated_at_stop(self, member: str | None = None) -> bool | int | None:
        """After a clean stop as primary: True when a replica (``member``, or any) was streaming (PostgreSQL's shutdown then waits
        until it has the shutdown checkpoint), else the checkpoint LSN to wait for; None when unknown."""

    def set_sync_standby_names(self, value: str) -> None:
        """Keep ``value`` as synchronous_standby_names in the configuration pgha writes (a later start, restart or
        promotion keeps it) and, when PostgreSQL runs, apply it now (reload). LocalState.sync_standby_names
        reports the value in force."""

    def timeline_history(self, existing: list[list[Any]], reason: str, me: str) -> list[list[Any]]:
        """``existing`` (the DCS history) completed with the switches in this primary's timeline history file;
        the newest one gets ``reason`` and ``me``."""
