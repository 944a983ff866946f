"""Plain values the decision core reads: the DCS snapshot, the local node, and one tick's observation.

Theory of operation
-------------------
The shell (agent/loop.py) gathers everything the core may need *before* calling ``decide()``: one read of the
DCS (``ClusterView``), one probe of the local PostgreSQL (``LocalState``), what it knows of its own lease
(``LeaseState``) and the time. The core never asks for more in the middle of a decision.

Rules
1. Every type here is frozen. A tick's observation never changes once built.
2. Values come from outside (the DCS may hold anything someone wrote): parsing lives in the adapters, and a
   member whose JSON cannot be read is dropped there with a warning, never passed on half-filled.
3. Times are monotonic seconds from the shell's clock; LSNs are byte positions (ints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping


def lsn_text(value: int) -> str:
    """A WAL position as PostgreSQL writes it (``0/3000148``)."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class DataDir(Enum):
    """What the local data directory holds."""

    EMPTY = "empty"  # missing or empty: needs bootstrap or clone
    INITIALIZED = "initialized"  # a PostgreSQL cluster lives here
    INVALID = "invalid"  # non-empty but not a PostgreSQL data directory


class PgRole(Enum):
    PRIMARY = "primary"
    REPLICA = "replica"


class JobKind(Enum):
    """Long tasks the shell runs in the background; their outcome is a later observation."""

    BOOTSTRAP = "bootstrap"  # initdb, start, create roles
    CLONE = "clone"  # pg_basebackup from the leader
    START = "start"  # pg_ctl start; as the leader, bounded by primary_start_timeout
    REWIND = "rewind"  # pg_rewind from the leader, then configured as a replica


class JobState(Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    kind: JobKind
    state: JobState
    started_at: float
    detail: str = ""
    retryable: bool = False  # failed for a passing reason (its source was unreachable): try again, change nothing


@dataclass(frozen=True)
class Member:
    """One ``members/<name>`` key, parsed."""

    name: str
    conn_url: str = ""
    api_url: str = ""
    state: str = ""
    role: str = ""
    xlog_location: int | None = None
    timeline: int | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def nofailover(self) -> bool:
        tags = self.tags or {}
        if tags.get("nofailover") in (True, "true", "True"):
            return True
        prio = tags.get("failover_priority")
        return isinstance(prio, int) and prio <= 0


@dataclass(frozen=True)
class Failover:
    """The ``failover`` key: an operator's switchover (``leader`` set) or failover (only ``member``) request.

    ``scheduled_at`` is wall-clock time (Unix seconds); None means "now"."""

    leader: str | None = None
    member: str | None = None
    scheduled_at: float | None = None


@dataclass(frozen=True)
class SyncState:
    """The ``sync`` key (Patroni's format ``{"leader": n, "sync_standby": "a,b"|null, "quorum": int}``): the
    standbys the leader made synchronous (``voters``, lower-cased: names are case-insensitive there) and how many
    of the *other* voters a candidate must hear from, none of them ahead of it, before it may promote."""

    leader: str | None = None
    voters: tuple[str, ...] = ()
    quorum: int = 0

    def lists(self, name: str) -> bool:
        return name.lower() in self.voters


@dataclass(frozen=True)
class ClusterView:
    """One consistent read of ``/<namespace>/<scope>/`` in the DCS."""

    leader: str | None = None  # value of the leader key: a bare member name
    members: tuple[Member, ...] = ()
    initialize: str | None = None  # None: key absent; "": bootstrap race in progress; else the system id
    config: Mapping[str, Any] | None = None
    history: tuple[tuple[Any, ...], ...] = ()
    status_optime: int | None = None
    # The highest timeline a promotion in this cluster claimed (``status`` key, ``pgha_timeline``): written before
    # promoting, so a node that promotes and dies before publishing anything still keeps its id from being reused.
    status_timeline: int | None = None
    failover: Failover | None = None
    failsafe: Mapping[str, Any] | None = None  # {member name: api_url}, kept by the leader in failsafe mode
    sync: SyncState | None = None  # None: the key is absent, empty ({}), or names no leader
    # Backend versions of the permanent keys, for compare-and-swap writes (Dcs.put_key); 0: the key is absent.
    versions: Mapping[str, int] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        return bool((self.config or {}).get("pause"))

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None


@dataclass(frozen=True)
class Standby:
    """One row of the primary's ``pg_stat_replication``: a walsender and the standby behind it."""

    name: str  # application_name: the member's name (primary_conninfo sets it)
    state: str  # streaming, catchup, startup, backup, stopping
    sync_state: str  # async, potential, sync, quorum
    flush_lsn: int | None = None


@dataclass(frozen=True)
class LocalState:
    """The local PostgreSQL as the probe saw it this tick."""

    data_dir: DataDir
    system_id: str | None = None
    running: bool = False
    role: PgRole | None = None  # None when not running or not answering
    timeline: int | None = None
    wal_position: int | None = None  # primary: flush LSN; replica: max(received, replayed)
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    streaming_from: str | None = None  # host:port of the upstream the WAL receiver is connected to
    following: str | None = None  # member name the configuration points the replica at (None: no upstream)
    last_role: PgRole | None = None  # when stopped: what pg_controldata says it last ran as
    job: Job | None = None
    # A running primary: its pg_stat_replication rows. Any running node: synchronous_standby_names as SHOW reports
    # it (the value in force, after any reload); None when not known (not running).
    standbys: tuple[Standby, ...] = ()
    sync_standby_names: str | None = None


@dataclass(frozen=True)
class LeaseState:
    """What the shell knows of the leader lease it holds, from its own successful calls.

    ``valid_until`` is the send time of the last keepalive the DCS accepted plus the TTL it granted: the lease
    cannot have expired before then, whatever happened since.
    """

    valid_until: float | None = None


@dataclass(frozen=True)
class PeerStatus:
    """What a member answered on its REST API (GET /patroni) just before this tick, when the shell asked.

    The shell asks only when there is no leader: the members' published data may be a tick old, and a race
    decided on it can wait for a peer that is in fact no further ahead, or that is gone."""

    name: str
    reachable: bool
    wal_position: int | None = None
    timeline: int | None = None
    role: str | None = None


class RequestKind(Enum):
    """What an operator asked this node to do through its REST API (the failover key is read from the DCS)."""

    RESTART = "restart"
    RELOAD = "reload"
    REINITIALIZE = "reinitialize"


@dataclass(frozen=True)
class Request:
    """One operator request waiting for this node's loop; answered by an ``Answer`` action (core/requests.py)."""

    id: int
    kind: RequestKind
    force: bool = False  # reinitialize: even while PostgreSQL runs as a healthy replica


@dataclass(frozen=True)
class Observation:
    now: float
    cluster: ClusterView | None  # None: the DCS could not be read this tick
    local: LocalState
    lease: LeaseState = LeaseState()
    dcs_error: str = ""
    shutdown_requested: bool = False
    peers: tuple[PeerStatus, ...] = ()
    wall_now: float = 0.0  # Unix seconds: only for comparing with times operators wrote (scheduled_at)
    requests: tuple[Request, ...] = ()
    failsafe_heard: float | None = None  # when (monotonic) this node last accepted a primary's POST /failsafe
