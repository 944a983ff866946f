"""Typed actions the decision core asks the shell to carry out.

Ordering contract (from etcd raft's Ready/Advance): the executor runs a decision's actions in order and stops at the
first one that fails; what did and did not happen is seen in the next tick's observation, never assumed. So a
decision puts the step that *confirms* something before the steps that rely on it:
1. ``AcquireLeader`` / ``RefreshLeader`` come before ``Promote`` or ``StartPostgres(primary)``: nobody becomes a
   writer without holding the leader lease.
2. ``Demote`` / ``StopPostgres`` come before ``ReleaseLeader``: the lease is given up only once this node no longer
   accepts writes.
3. ``ClaimInitialize`` comes before ``Bootstrap``: only the node that won the initialize key runs initdb.
Long tasks (``Bootstrap``, ``Clone``) start a background job; their outcome arrives as ``LocalState.job``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Union


class StopMode(Enum):
    FAST = "fast"  # terminate sessions, checkpoint: the clean way
    IMMEDIATE = "immediate"  # fence now: kill every session at once; crash recovery on next start, nothing acked lost


@dataclass(frozen=True)
class AcquireLeader:
    """Create the leader key for this node, only if nobody holds it."""


@dataclass(frozen=True)
class RefreshLeader:
    """Renew the lease and keep the leader key ours; fails when the lock is lost."""


@dataclass(frozen=True)
class ReleaseLeader:
    """Delete the leader key if it still holds our name."""


@dataclass(frozen=True)
class RevokeLease:
    """Drop our lease: the leader key and our member key vanish in the same instant, so nobody racing for the
    lock still sees this departing node as a running, more advanced member."""


@dataclass(frozen=True)
class ClaimInitialize:
    """Win the bootstrap race: create ``initialize`` only if absent."""


@dataclass(frozen=True)
class SetInitialize:
    system_id: str


@dataclass(frozen=True)
class CancelInitialize:
    """Give the bootstrap race back after a failed initdb."""


@dataclass(frozen=True)
class WriteConfig:
    """Seed the DCS ``config`` key from bootstrap.dcs, only if absent."""


@dataclass(frozen=True)
class Bootstrap:
    """Background job: initdb, start as primary, create the configured roles."""


@dataclass(frozen=True)
class Clone:
    """Background job: pg_basebackup from ``source`` into the empty data directory."""

    source: str


@dataclass(frozen=True)
class RemoveDataDir:
    """Remove a data directory left half-made by a failed bootstrap or clone."""


@dataclass(frozen=True)
class StartPostgres:
    """Start PostgreSQL as primary, or as a replica streaming from ``upstream`` (None: no upstream yet)."""

    as_primary: bool
    upstream: str | None = None


@dataclass(frozen=True)
class Follow:
    """Point a running replica at ``upstream`` (rewrite primary_conninfo, reload)."""

    upstream: str | None


@dataclass(frozen=True)
class ClaimTimeline:
    """Record in the DCS (``status``) that this promotion takes ``timeline``, before promoting: a node that dies
    right after promoting, before publishing anything, must not see its timeline id reused by the next."""

    timeline: int


@dataclass(frozen=True)
class Promote:
    """pg_ctl promote onto ``timeline`` (None: PostgreSQL's next one); the lease must already be confirmed in this
    same decision. Ids between ours and ``timeline`` are skipped: other nodes claimed them."""

    timeline: int | None = None


@dataclass(frozen=True)
class Demote:
    """Stop accepting writes now and come back as a replica of ``upstream``; with None (no leader known) stay
    stopped until the DCS names one."""

    mode: StopMode
    upstream: str | None = None


@dataclass(frozen=True)
class StopPostgres:
    mode: StopMode


@dataclass(frozen=True)
class Rewind:
    """Background job: pg_rewind this stopped former primary from ``source``, then configure it as a replica.

    pg_rewind itself finds out whether the histories diverged; when they did not it changes nothing."""

    source: str


@dataclass(frozen=True)
class AwaitReplicated:
    """After a clean stop of the primary: wait (at most ``timeout`` s) until a replica (``member``, or any) has
    received everything up to the shutdown checkpoint, so the lease is handed over without losing a commit.
    Fails on timeout."""

    timeout: float
    member: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """CHECKPOINT on the running primary before a planned stop, so the shutdown checkpoint has little to write."""


@dataclass(frozen=True)
class ClearFailover:
    """Delete the ``failover`` key if it is still the one read (``version``): the request is done or void."""

    version: int


@dataclass(frozen=True)
class WriteFailsafe:
    """Leader only: the ``failsafe`` key lists these (member, api_url) pairs; None deletes it."""

    members: tuple[tuple[str, str], ...] | None


@dataclass(frozen=True)
class SetSyncStandbyNames:
    """Make ``value`` PostgreSQL's synchronous_standby_names: kept in the configuration pgha writes (so a restart
    or a promotion keeps it) and applied at once with a reload when PostgreSQL runs. The next tick's
    ``LocalState.sync_standby_names`` shows whether it is in force. None: pgha stops setting it, and the
    configuration's own value (postgresql.parameters; usually none) applies again."""

    value: str | None


@dataclass(frozen=True)
class WriteSync:
    """Compare-and-swap the ``sync`` key (version from ``ClusterView.versions["sync"]``, 0: create) to
    ``{"leader": leader, "sync_standby": "a,b" or null, "quorum": quorum}``; fails if someone changed it since."""

    leader: str
    voters: tuple[str, ...]
    quorum: int
    version: int


@dataclass(frozen=True)
class DeleteSync:
    """Delete the ``sync`` key if unchanged since ``version`` (mode off: Patroni deletes it too)."""

    version: int


@dataclass(frozen=True)
class ReloadPostgres:
    """Re-read the local configuration, rewrite PostgreSQL's configuration files and signal it to reload."""


@dataclass(frozen=True)
class Answer:
    """Reply to an operator request (model.Request) with an HTTP code and Patroni's text. Last in its decision:
    a request whose actions failed stays pending and is decided again."""

    request: int
    code: int
    text: str


@dataclass(frozen=True)
class UpdateHistory:
    """Leader only: append the timeline switch that made us leader to the DCS ``history`` key."""

    reason: str


@dataclass(frozen=True)
class SyncSlots:
    """Leader only: physical replication slots exist for exactly these members (others dropped)."""

    members: tuple[str, ...]


@dataclass(frozen=True)
class AckJob:
    """The finished background job was handled: stop reporting it. Last in its decision, so a job whose
    follow-up failed is seen again next tick."""


@dataclass(frozen=True)
class Exit:
    """Stop the agent with an error; PostgreSQL is left as it is."""

    message: str


Action = Union[
    AcquireLeader, RefreshLeader, ReleaseLeader, RevokeLease, ClaimInitialize, SetInitialize, CancelInitialize, WriteConfig,
    Bootstrap, Clone, RemoveDataDir, StartPostgres, Follow, ClaimTimeline, Promote, Demote, StopPostgres, Rewind, AwaitReplicated,
    Checkpoint, ClearFailover, WriteFailsafe, SetSyncStandbyNames, WriteSync, DeleteSync, ReloadPostgres, Answer, UpdateHistory,
    SyncSlots, AckJob, Exit,
]
