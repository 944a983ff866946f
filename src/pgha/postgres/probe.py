"""Read-only look at the local PostgreSQL: builds the ``LocalState`` the core decides on.

Rules
1. The probe never changes anything; a failed query means "not answering", not an error to raise.
2. One SQL round trip per tick when PostgreSQL runs (a primary's walsenders and the synchronous_standby_names
   in force included); pg_controldata only when it does not (or once, for the system identifier, which never
   changes for a data directory).
3. Every connection attempt and query has a short deadline (connect_timeout, statement_timeout), so a hung
   server cannot stall the HA loop.
"""

from __future__ import annotations

import os
import re

import psycopg

from pgha.core.model import DataDir, LocalState, PgRole, Standby
from pgha.postgres.control import PgCommands

_STATUS_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint END,
       (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       CASE WHEN pg_is_in_recovery()
            THEN (SELECT timeline_id FROM pg_control_checkpoint())
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
       current_setting('server_version_num')::int,
       pg_postmaster_start_time()::text,
       pg_last_xact_replay_timestamp()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
       (SELECT (latest_end_lsn - '0/0'::pg_lsn)::bigint FROM pg_stat_wal_receiver),
       (SELECT json_agg(json_build_object('usename', usename, 'application_name', application_name,
                                          'client_addr', client_addr::text, 'state', state,
                                          'sync_state', sync_state, 'sync_priority', sync_priority))
          FROM pg_stat_replication),
       (SELECT json_agg(name ORDER BY name) FROM pg_settings WHERE pending_restart),
       (SELECT json_agg(json_build_object('name', application_name, 'state', state, 'sync_state', sync_state,
                                          'flush_lsn', (flush_lsn - '0/0'::pg_lsn)::bigint))
          FROM pg_stat_replication),
       current_setting('synchronous_standby_names')
"""


def data_dir_state(path: str) -> DataDir:
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        return DataDir.EMPTY
    if not entries:
        return DataDir.EMPTY
    if "PG_VERSION" in entries and "global" in entries:
        return DataDir.INITIALIZED
    return DataDir.INVALID


def lsn_to_int(text: str) -> int | None:
    hi, sep, lo = (text or "").partition("/")
    try:
        return (int(hi, 16) << 32) + int(lo, 16) if sep else None
    except ValueError:
        return None


class Probe:
    def __init__(self, commands: PgCommands, conninfo: dict) -> None:
        self.commands = commands
        self.conninfo = conninfo
        self._conn: psycopg.Connection | None = None
        self._system_id: str | None = None
        # What the REST API shows besides LocalState (server version, start time, replication, ...): read in
        # the same round trip, kept here because the decision core has no use for it.
        self.extras: dict = {}
        self._pending: tuple[tuple[str, ...], dict] = ((), {})

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # tcp_user_timeout: a server killed mid-query must not hang the HA loop on a dead socket.
            self._conn = psycopg.connect(**self.conninfo, autocommit=True, connect_timeout=3,
                                         options="-c statement_timeout=5000", tcp_user_timeout=3000,
                                         keepalives=1, keepalives_idle=2, keepalives_interval=1,
                                         keepalives_count=2)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with self.connection().cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error:
            self.close()
            raise

    def _pending_reason(self, names: object) -> dict:
        """Settings PostgreSQL reports as changed in its configuration but waiting for a restart
        (``pg_settings.pending_restart``, set by a reload that saw them), as Patroni publishes them:
        ``{name: {"old_value": in use, "new_value": in the configuration file}}``. The values are read in a
        second query only when the set of names changes (rule 2 holds while nothing is pending)."""
        key = tuple(str(n) for n in names if str(n) not in _RECOVERY) if isinstance(names, list) else ()
        if not key:
            self._pending = ((), {})
            return {}
        if self._pending[0] != key:
            reason = {name: {"old_value": "", "new_value": ""} for name in key}
            try:
                for name, old, new in self.query(_PENDING_SQL):
                    reason[name] = {"old_value": str(old if old is not None else ""),
                                    "new_value": str(new if new is not None else "")}
            except psycopg.Error:
                pass  # no access to pg_file_settings: the names alone still say a restart is pending
            self._pending = (key, reason)
        return dict(self._pending[1])

    def local_state(self, upstream: str | None) -> LocalState:
        state = data_dir_state(self.commands.data_dir)
        if state is not DataDir.INITIALIZED:
            self._system_id = None
            return LocalState(data_dir=state)
        if self.commands.postmaster_pid() is None:
            self.close()
            self.extras = {}
            return self._stopped()
        return self._running(upstream)

    def system_id(self) -> str | None:
        if self._system_id is None:
            self._system_id = self.commands.controldata().get("Database system identifier")
        return self._system_id

    def _stopped(self) -> LocalState:
        data = self.commands.controldata()
        self._system_id = data.get("Database system identifier") or self._system_id
        cluster_state = data.get("Database cluster state", "")
        # A clone's pg_control says "in production" (copied from a running primary); standby.signal tells.
        standby = os.path.exists(os.path.join(self.commands.data_dir, "standby.signal"))
        last_role = PgRole.REPLICA if standby or "recovery" in cluster_state else PgRole.PRIMARY
        timeline = data.get("Latest checkpoint's TimeLineID")
        return LocalState(data_dir=DataDir.INITIALIZED, system_id=self._system_id, running=False,
                          last_role=last_role if cluster_state else None,
                          timeline=int(timeline) if timeline and timeline.isdecimal() else None,
                          wal_position=lsn_to_int(data.get("Latest checkpoint location", "")))

    def _running(self, upstream: str | None) -> LocalState:
        base = LocalState(data_dir=DataDir.INITIALIZED, system_id=self.system_id(), running=True,
                          following=upstream)
        try:
            row = self.query(_STATUS_SQL)[0]
        except psycopg.Error:
            self.extras = {}
            return base  # starting, or not answering: role unknown
        in_recovery, flush, received, replayed, timeline, received_tli, wr_status, sender = row[:8]
        version, started, replayed_at, paused, latest_end, replication, pending = row[8:15]
        walsenders, sync_names = row[15:17]
        self.extras = {"server_version": version, "postmaster_start_time": started, "replayed_timestamp": replayed_at,
                       "paused": paused, "latest_end_lsn": latest_end, "replication": replication or [],
                       "pending_restart_reason": self._pending_reason(pending)}
        if not in_recovery:
            return _replace(base, role=PgRole.PRIMARY, timeline=timeline, wal_position=flush, following=None,
                            standbys=standbys(walsenders), sync_standby_names=sync_names)
        position = max(p for p in (received, replayed, 0) if p is not None)
        replaying = replay_timeline(self.commands.postmaster_pid())
        timeline = replaying or max(timeline or 0, received_tli or 0) or None
        return _replace(base, role=PgRole.REPLICA, timeline=timeline,
                        wal_position=position, receive_lsn=received, replay_lsn=replayed,
                        streaming_from=sender if wr_status == "streaming" else None, sync_standby_names=sync_names)


def standbys(rows: object) -> tuple[Standby, ...]:
    """pg_stat_replication's rows (json_agg of name, state, sync_state, flush_lsn as bytes) as Standby values;
    rows that cannot be read are skipped."""
    found = []
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            continue
        flush = row.get("flush_lsn")
        found.append(Standby(name=row["name"], state=str(row.get("state") or ""),
                             sync_state=str(row.get("sync_state") or ""),
                             flush_lsn=flush if isinstance(flush, int) and not isinstance(flush, bool) else None))
    return tuple(found)


# Set by pgha from the topology (conf.py), different on a primary and a replica by design: never "pending".
_RECOVERY = {"primary_conninfo", "primary_slot_name", "recovery_target_timeline", "recovery_target",
             "recovery_target_lsn", "recovery_target_name", "recovery_target_time", "recovery_target_xid",
             "recovery_target_action", "recovery_target_inclusive", "restore_command", "archive_cleanup_command",
             "recovery_min_apply_delay", "promote_trigger_file", "recovery_end_command"}

_PENDING_SQL = """
SELECT name, current_setting(name),
       (SELECT setting FROM pg_file_settings f WHERE f.name = s.name ORDER BY seqno DESC LIMIT 1)
  FROM pg_settings s WHERE pending_restart
"""


_SEGMENT = re.compile(r"\b([0-9A-F]{8})[0-9A-F]{16}\b")


def replay_timeline(postmaster: int | None) -> int | None:
    """The timeline a standby is replaying, from its startup process's title ("startup recovering
    000000030000000000000004"). pg_control's timeline is the last restartpoint's and lags behind a followed
    promotion, and the WAL receiver's is gone once it disconnects; the title is always current. Linux only."""
    if postmaster is None:
        return None
    try:
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "startup" in title:
            match = _SEGMENT.search(title)
            return int(match.group(1), 16) if match else None
    return None


def _replace(state: LocalState, **changes) -> LocalState:
    from dataclasses import replace
    return replace(state, **changes)
