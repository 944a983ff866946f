"""A fake PostgreSQL for the simulator: ``pgha.ports.PostgresPort`` over a model of WAL, timelines and roles.

The agent drives it exactly as it drives the real ``PostgresNode``; the world (world.py) adds client writes,
replication and crashes. Its data directory (``PgData``) survives stops and agent restarts; only
``remove_data_dir`` drops it.

Rules
1. "Accepting writes" means running as primary. A fence is an immediate stop; nothing else ends it.
2. Nothing flushed is ever lost locally: a crash or immediate stop keeps ``lsn``. A fast stop of a primary first
   writes a shutdown checkpoint and sends it, with all WAL, to the replicas streaming from it (as walsenders do).
3. A replica streams from its upstream only while its WAL is a prefix of the upstream's (wal.py); otherwise it runs
   in recovery but ``streaming_from`` is None. Catching up happens in ``pull()``, called by the world.
4. Promotion opens a new timeline (a fresh segment uid) and writes an end-of-recovery record, so every timeline
   switch holds at least some WAL.
5. Changes are reported to ``net.on_pg`` at once, stamped with the node's local time (the world's time plus what
   the current tick already spent waiting on the DCS): when a real agent would have made them.
6. Failures raise ``CommandError``, as the real node does when pg_ctl fails.
7. Synchronous replication: ``synchronous_standby_names`` (SSN) is pgha's setting, kept across stops and agent
   restarts like the configuration file it lives in, and in force whenever the server runs (a reload applies it
   at once). A client write on a primary is *acknowledged* (``net.acknowledged``) only once, under the SSN in
   force, ``k`` of its standbys ``S`` streaming from this primary have flushed past the write's end (``FIRST k``
   and ``ANY k`` alike: ``k`` of ``S`` have it); with SSN empty at once (asynchronous). Until then the write
   waits in ``pending``, in LSN order; a change of SSN re-examines the waiters (an emptied SSN releases them all,
   as PostgreSQL does). A write still waiting when the primary stops, crashes or is fenced is never
   acknowledged (its client got an error or no answer): it may survive or not, it is *in doubt*.
8. A replica ``lagging`` stays connected (listed in the primary's ``pg_stat_replication``, ``streaming_from``
   set) but receives nothing: a slow disk or network, not a cut one (that is ``stalled``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from pgha.core import sync
from pgha.core.model import DataDir, LocalState, Member, PgRole, Standby
from pgha.postgres.conf import parse_conn_url
from pgha.ports import TransientJobError
from pgha.postgres.control import CommandError
from pgha.sim import wal
from pgha.sim.transcript import lsn as lsn_text
from pgha.sim.wal import History, Segment

INITIAL_LSN = 0x3000028  # where a fresh initdb leaves the WAL
RECORD = 0x28  # one checkpoint / end-of-recovery record


class PgNet(Protocol):
    """What a fake PostgreSQL needs from the world around it."""

    def pg_at(self, host: str) -> "FakePostgres | None": ...

    def new_uid(self) -> int: ...

    def new_system_id(self) -> str: ...

    def on_pg(self, pg: "FakePostgres", event: str, at: float, detail: str = "") -> None: ...

    def fence_in_force(self, pg: "FakePostgres") -> bool:
        """A fencer on this machine missed its deadline and its agent has not spoken since."""

    def flush_replicas(self, pg: "FakePostgres") -> frozenset[str]:
        """Send everything to the replicas streaming from ``pg``; the names of those replicas."""

    def downstream(self, pg: "FakePostgres") -> "list[FakePostgres]":
        """The replicas streaming from ``pg`` now (its walsenders), in name order."""

    def acknowledged(self, pg: "FakePostgres", write: "Pending") -> None:
        """``pg`` acknowledged this client write (its commit returned to the client)."""


@dataclass(frozen=True)
class Pending:
    """A client write on a primary: where its WAL ends, the segment that wrote it, when it was made."""

    lsn: int
    uid: int
    at: float


@dataclass
class PgData:
    """The data directory: what pg_controldata and the WAL say."""

    system_id: str
    history: History
    lsn: int
    last_role: PgRole
    clean: bool = True  # last shut down cleanly (no crash recovery, no end-of-recovery record at start)


class FakePostgres:
    def __init__(self, name: str, host: str, net: PgNet, now: Callable[[], float],
                 local_now: Callable[[], float], watchdog_deadline: Callable[[], float | None]) -> None:
        self.name = name
        self.host = host  # the "host:port" replicas report as sender
        self.net = net
        self.now = now
        self.local_now = local_now
        self.watchdog_deadline = watchdog_deadline
        self.data: PgData | None = None
        self.running = False
        self.role: PgRole | None = None
        self.following: str | None = None  # the member name the configuration points at
        self.upstream_host: str | None = None
        self.broken_until = 0.0  # start fails before this time (a crash that keeps it down)
        self.stalled = False  # replication from the upstream is cut
        self.dynamic_parameters: Mapping[str, Any] = {}
        self.use_slots = True
        self.slots: tuple[str, ...] = ()
        self._streamed_at_stop: frozenset[str] = frozenset()
        self.lagging = False  # connected to its upstream but receiving nothing (rule 8)
        self.sync_standby_names = ""  # pgha's setting (rule 7); in force while running
        self._ssn: tuple[str, tuple[tuple[str, ...] | None, int]] = ("", ((), 0))  # the value, parsed
        self.pending: list[Pending] = []  # client writes waiting for their synchronous standbys

    # --- what the world reads ---------------------------------------------------------------------------
    @property
    def accepting_writes(self) -> bool:
        return self.running and self.role is PgRole.PRIMARY

    @property
    def lsn(self) -> int:
        return self.data.lsn if self.data else 0

    @property
    def timeline(self) -> int:
        return wal.timeline_of(self.data.history) if self.data else 0

    def upstream(self) -> "FakePostgres | None":
        return self.net.pg_at(self.upstream_host) if self.upstream_host else None

    def streaming(self) -> bool:
        up = self.upstream()
        if not self.running or self.role is not PgRole.REPLICA or self.stalled or up is None or not up.running:
            return False
        assert self.data is not None and up.data is not None
        return wal.is_prefix(self.data.history, self.data.lsn, up.data.history, up.data.lsn)

    # --- PostgresPort: reading ----------------------------------------------------------------------------
    def local_state(self) -> LocalState:
        d = self.data
        if d is None:
            return LocalState(data_dir=DataDir.EMPTY)
        tl = wal.timeline_of(d.history)
        if not self.running:
            return LocalState(data_dir=DataDir.INITIALIZED, system_id=d.system_id, running=False,
                              last_role=d.last_role, timeline=tl, wal_position=d.lsn)
        if self.role is PgRole.PRIMARY:
            return LocalState(data_dir=DataDir.INITIALIZED, system_id=d.system_id, running=True,
                              role=PgRole.PRIMARY, timeline=tl, wal_position=d.lsn, standbys=self.standbys(),
                              sync_standby_names=self.sync_standby_names)
        return LocalState(data_dir=DataDir.INITIALIZED, system_id=d.system_id, running=True, role=PgRole.REPLICA,
                          timeline=tl, wal_position=d.lsn, receive_lsn=d.lsn, replay_lsn=d.lsn,
                          streaming_from=self.upstream_host if self.streaming() else None, following=self.following)

    def standbys(self) -> tuple[Standby, ...]:
        """pg_stat_replication of a running primary: one row per replica streaming from it."""
        names, k = self._parsed_ssn()
        replicas = self.net.downstream(self)
        quorum = self.sync_standby_names.lstrip().upper().startswith("ANY")
        listed = sorted((names.index(r.name.lower()), r.name) for r in replicas if names and r.name.lower() in names)
        first = {name for _, name in listed[:k]}  # FIRST k: the k connected ones listed first are "sync"
        rows = []
        for replica in replicas:
            if names is not None and replica.name.lower() not in names or k <= 0:
                state = "async"
            elif quorum or names is None:
                state = "quorum" if quorum else "sync"
            else:
                state = "sync" if replica.name in first else "potential"
            rows.append(Standby(name=replica.name, state="streaming", sync_state=state, flush_lsn=replica.lsn))
        return tuple(rows)

    # --- PostgresPort: acting -----------------------------------------------------------------------------
    def close(self) -> None:
        pass

    def write_pgpass(self) -> None:
        pass

    def sync_slots(self, members: tuple[str, ...]) -> None:
        self.slots = tuple(members)

    stop_epoch = 0  # bumped by every stop: a start ordered before it is cancelled (PostgresPort.start)

    def start(self, upstream: Member | None, as_primary: bool, hba: tuple[str, ...] | None,
              epoch: int | None = None) -> None:
        if epoch is not None and epoch != self.stop_epoch:
            raise CommandError("start cancelled: a stop was ordered after it")
        if self.data is None:
            raise CommandError("pg_ctl: directory is not a database cluster directory")
        if self.running:
            raise CommandError("pg_ctl: another server might be running")
        if self.now() < self.broken_until:
            raise CommandError("pg_ctl: could not start server (simulated failure)")
        if as_primary and self.net.fence_in_force(self):
            self.stop_epoch += 1
            raise CommandError("pg_ctl: the server was stopped at once (the fencer's deadline had passed)")
        self.running = True
        if as_primary:
            self._set_follow(None)
            self.role = PgRole.PRIMARY
            if not self.data.clean:
                self._append(RECORD)  # end-of-recovery checkpoint
            self.net.on_pg(self, "start-primary", self.local_now())
        else:
            self.role = PgRole.REPLICA
            self._set_follow(upstream)
            self.net.on_pg(self, "start-replica", self.local_now(), f"upstream={self.following or '-'}")

    def stop(self, mode: str) -> None:
        self.stop_epoch += 1
        if not self.running:
            return
        self._halt(mode, "stop-" + mode)

    def crash(self, event: str = "crash", at: float | None = None) -> None:
        """Killed (node death, PG crash, watchdog fence): an immediate stop, at ``at`` (default: now)."""
        if self.running:
            self._halt("immediate", event, at)

    def promote(self, timeline: int | None = None) -> None:
        if not self.running or self.role is not PgRole.REPLICA:
            raise CommandError("pg_ctl: cannot promote server; server is not in standby mode")
        assert self.data is not None
        new_tl = max(max(s.timeline for s in self.data.history) + 1, timeline or 0)
        self.data.history = self.data.history + (Segment(new_tl, self.data.lsn, self.net.new_uid()),)
        self.data.lsn += RECORD
        self.role = PgRole.PRIMARY
        self._set_follow(None)
        self.net.on_pg(self, "promote", self.local_now())

    def checkpoint(self) -> None:
        if not self.running:
            raise CommandError("psql: could not connect to server")
        if self.role is PgRole.PRIMARY:
            self._append(RECORD)

    def follow(self, upstream: Member | None) -> None:
        if not self.running:
            raise CommandError("pg_ctl: could not send reload signal: server is not running")
        self._set_follow(upstream)
        self.net.on_pg(self, "follow", self.local_now(), f"upstream={self.following or '-'}")

    def reload_config(self, cluster: Any, hba: Any) -> None:
        """Nothing to re-read: the fake server has no configuration files."""

    def set_sync_standby_names(self, value: str) -> None:
        """Kept for every later start; in force at once when running (a reload), re-examining the waiters."""
        self.sync_standby_names = value
        self.release()

    def remove_data_dir(self) -> None:
        if self.running:
            raise CommandError("refusing to remove the data directory of a running server")
        self.data = None

    def bootstrap(self, initdb_args: tuple[str, ...], hba: tuple[str, ...] | None,
                  post_bootstrap_hba: tuple[str, ...]) -> None:
        if self.data is not None:
            raise CommandError("initdb: directory exists but is not empty")
        history = (Segment(1, 0, self.net.new_uid()),)
        self.data = PgData(self.net.new_system_id(), history, INITIAL_LSN, PgRole.PRIMARY)
        self.running = True
        self.role = PgRole.PRIMARY
        self._set_follow(None)
        self.net.on_pg(self, "bootstrap", self.now())

    def _source(self, source: Member, tool: str) -> "FakePostgres":
        address = parse_conn_url(source.conn_url)
        src = self.net.pg_at(f"{address[0]}:{address[1]}") if address else None
        if src is None or not src.running or src.data is None:
            if tool == "pg_rewind":  # as PostgresNode: an unreachable source says nothing about our data
                raise TransientJobError(f"rewind source unreachable: could not connect to {source.name}")
            raise CommandError(f"{tool}: could not connect to {source.name}")
        return src

    def clone(self, source: Member) -> None:
        src = self._source(source, "pg_basebackup")
        if self.data is not None:
            raise CommandError("pg_basebackup: directory exists but is not empty")
        d = src.data
        self.data = PgData(d.system_id, wal.received(d.history, d.lsn), d.lsn, PgRole.REPLICA)
        self.net.on_pg(self, "cloned", self.now(), f"from={src.name}")

    def rewind(self, source: Member) -> None:
        """pg_rewind (PostgreSQL >= 13: crash recovery first), deciding by timeline history as pg_rewind does:
        same timeline, or our WAL ends before the fork point: nothing to do. Then configured as a replica."""
        if self.running:
            raise CommandError("pg_rewind: target server must be shut down cleanly")
        if self.data is None:
            raise CommandError("pg_rewind: target data directory is empty")
        src = self._source(source, "pg_rewind")
        assert src.data is not None
        try:
            fork = wal.rewind_point(self.data.history, src.data.history)
        except ValueError as e:
            raise CommandError(f"pg_rewind: {e}") from None
        if fork is not None and self.data.lsn > fork:
            self.data.history = wal.received(src.data.history, fork)
            self.data.lsn = fork
            self.net.on_pg(self, "rewound", self.now(), f"from={src.name} to={lsn_text(fork)}")
        self.data.last_role = PgRole.REPLICA
        self.data.clean = True

    def replicated_at_stop(self, member: str | None = None) -> bool | int | None:
        """True when a replica (``member``, or any) was streaming at the last fast stop as primary (it then got
        everything, see ``_halt``), else None. Never an LSN: the executor would then poll the DCS with real
        sleeps, and in this model no replica can receive WAL from a stopped server anyway."""
        sent = self._streamed_at_stop
        return True if (member in sent if member is not None else bool(sent)) else None

    def timeline_history(self, existing: list[list[Any]], reason: str, me: str) -> list[list[Any]]:
        known = {int(e[0]) for e in existing if e and str(e[0]).isdecimal()}
        history = [list(e) for e in existing]
        timeline = self.timeline
        segments = self.data.history if self.data else ()
        for parent, child in zip(segments, segments[1:]):
            if parent.timeline in known:
                continue
            if parent.timeline == timeline - 1:
                history.append([parent.timeline, child.start, reason, f"sim:{self.now():.3f}", me])
            else:
                history.append([parent.timeline, child.start, ""])
        return sorted(history, key=lambda e: int(e[0]))

    # --- what the world does to it ------------------------------------------------------------------------
    def write(self, size: int) -> int:
        """A client write on this primary; returns the new flush LSN. It is acknowledged (``net.acknowledged``)
        at once, or later when its synchronous standbys have it (rule 7)."""
        self._append(size)
        assert self.data is not None
        self.pending.append(Pending(self.data.lsn, self.data.history[-1].uid, self.now()))
        self.release()
        return self.lsn

    def pull(self, force: bool = False) -> bool:
        """Receive everything the upstream has, if streaming (and not lagging, unless ``force``: the upstream's
        clean shutdown waits for it); True when something arrived."""
        if (self.lagging and not force) or not self.streaming():
            return False
        up = self.upstream()
        assert up is not None and up.data is not None and self.data is not None
        if up.data.lsn == self.data.lsn and up.data.history == self.data.history:
            return False
        self.data.lsn = up.data.lsn
        self.data.history = wal.received(up.data.history, up.data.lsn)
        if up.pending:
            names = up._parsed_ssn()[0]
            if names is None or self.name.lower() in names:  # only a listed standby's flush releases commits
                up.release()
        return True

    def release(self) -> None:
        """Acknowledge the waiting writes the SSN in force now lets through (rule 7)."""
        if not self.pending or not self.accepting_writes:
            return
        names, k = self._parsed_ssn()
        if k <= 0:
            upto = self.lsn
        else:
            flushed = sorted((r.lsn for r in self.net.downstream(self) if names is None or r.name.lower() in names),
                             reverse=True)
            if len(flushed) < k:
                return
            upto = flushed[k - 1]
        done = 0
        while done < len(self.pending) and self.pending[done].lsn <= upto:
            done += 1
        if done:
            acked, self.pending = self.pending[:done], self.pending[done:]
            for write in acked:
                self.net.acknowledged(self, write)

    def _parsed_ssn(self) -> tuple[tuple[str, ...] | None, int]:
        """(standby names, k) of the SSN in force, as PostgreSQL reads it; names None: any standby (``*``).
        Patroni's placeholder names a standby that never connects: commits wait."""
        value = self.sync_standby_names
        if self._ssn[0] != value:
            self._ssn = (value, _ssn_rule(value))
        return self._ssn[1]

    # --- helpers --------------------------------------------------------------------------------------------
    def _append(self, size: int) -> None:
        assert self.data is not None
        self.data.lsn += size
        self.data.clean = False

    def _set_follow(self, upstream: Member | None) -> None:
        self.following = upstream.name if upstream is not None else None
        address = parse_conn_url(upstream.conn_url) if upstream is not None else None
        self.upstream_host = f"{address[0]}:{address[1]}" if address else None

    def _halt(self, mode: str, event: str, at: float | None = None) -> None:
        assert self.data is not None
        was, detail = self.role, ""
        if at is None:
            at, deadline = self.local_now(), self.watchdog_deadline()
            if was is PgRole.PRIMARY and deadline is not None and self.now() <= deadline < at:
                # the watchdog fired while the agent still waited on the DCS
                at, event, detail = deadline, "fence", "by=watchdog"
        self._streamed_at_stop = frozenset()
        if self.pending:  # their clients get an error (or nothing): never acknowledged, in doubt
            detail = (detail + " " if detail else "") + f"unacknowledged={len(self.pending)}"
            self.pending = []
        if mode == "fast" and was is PgRole.PRIMARY:
            self._append(RECORD)  # shutdown checkpoint, sent to every streaming replica before exit
            self._streamed_at_stop = self.net.flush_replicas(self)
        self.running = False
        self.role = None
        self.data.last_role = was or self.data.last_role
        self.data.clean = mode != "immediate"
        self.net.on_pg(self, event, at, detail)


def _ssn_rule(value: str) -> tuple[tuple[str, ...] | None, int]:
    """(names, k) of a synchronous_standby_names value: ``k`` of ``names`` must have flushed a commit (names None:
    any standby); ((), 0): asynchronous. Names from ``core.sync.parse``; k as written (the placeholder, which
    parse drops, still counts towards nothing)."""
    text = value.strip()
    if not text:
        return (), 0
    m = re.match(r"^(?:(?:ANY|FIRST)\s+)?(\d+)\s*\(", text, re.IGNORECASE)
    k = int(m.group(1)) if m else 1
    parsed = sync.parse(text)
    return (parsed[0] if parsed is not None else None), max(k, 1)
