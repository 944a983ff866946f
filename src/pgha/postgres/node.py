"""The local PostgreSQL node's lifecycle: bootstrap, clone, configure, start, stop, promote, follow, slots.

This is the "control" half of the PostgreSQL adapter (probe.py is the read-only half). The executor calls it to
carry out the core's actions; it decides nothing.

Rules
1. Files PostgreSQL reads are written atomically and owned by the PostgreSQL account; the pgpass file is 0600.
2. The replica configuration (standby.signal, primary_conninfo, primary_slot_name) is written *before* the
   server starts, so a node never starts as a primary by accident.
3. Role passwords are sent with logging of the statement switched off for the session.
4. synchronous_standby_names set by the agent (sync mode) is part of every postgresql.conf rendered afterwards
   (starts, reloads, promotion, after an agent restart: read back from the file's marker, conf.py rule 5).
"""

from __future__ import annotations

import os
import shlex
import threading
import shutil
import tempfile
from typing import Any, Mapping

import psycopg
from psycopg import sql

from pgha.core.model import ClusterView, LocalState, Member, PgRole
from pgha.fsutil import read_text, write_atomic
from pgha.osuser import Account
from pgha.postgres import conf
from pgha.postgres.control import CommandError, PgCommands
from pgha.ports import TransientJobError
from pgha.procutil import pid_alive
from pgha.postgres.probe import Probe, lsn_to_int


def local_host(listen_addresses: str) -> str:
    first = (listen_addresses or "").split(",")[0].strip()
    if first in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    return "::1" if first == "::" else first


class PostgresNode:
    def __init__(self, cfg: Any, account: Account) -> None:
        self.cfg = cfg
        pg = cfg.postgresql
        self.pg = pg
        self.account = account
        self.data_dir = pg.data_dir
        self.commands = PgCommands(pg.bin_dir, pg.data_dir, account, env={"PGPASSFILE": pg.pgpass})
        superuser = pg.superuser
        self.probe = Probe(self.commands, {
            "host": local_host(pg.listen_addresses), "port": pg.port, "user": superuser.username,
            "password": superuser.password or None, "dbname": pg.database, "application_name": "pgha",
        })
        self.dynamic_parameters: Mapping[str, Any] = {}
        self.use_slots = True
        self._lifecycle = threading.Lock()  # start and stop never overlap (starts run in background jobs)
        self._conf_lock = threading.Lock()  # postgresql.conf is rendered and rewritten by one thread at a time
        self.stop_epoch = 0
        # synchronous_standby_names as the agent last set it (None: never, the parameters decide).
        self.sync_standby_names: str | None = conf.sync_from_conf(
            read_text(os.path.join(self.data_dir, "postgresql.conf")))

    def local_state(self) -> LocalState:
        state = self.probe.local_state(self.upstream())
        self._seen_pid = self.commands.postmaster_pid() if state.running else None
        return state

    def postmaster_died(self) -> bool:
        """Cheap check between ticks: the postmaster seen running at the last look is gone (a crash)."""
        pid = getattr(self, "_seen_pid", None)
        return pid is not None and not pid_alive(pid)

    def close(self) -> None:
        self.probe.close()

    def api_extras(self) -> dict:
        return self.probe.extras

    # --- files -----------------------------------------------------------------------------------------
    def write_pgpass(self) -> None:
        pg = self.pg
        entries = [(pg.replication.username, pg.replication.password or ""),
                   (pg.superuser.username, pg.superuser.password or "")]
        if pg.rewind is not None:
            entries.append((pg.rewind.username, pg.rewind.password or ""))
        write_atomic(pg.pgpass, conf.render_pgpass(entries), mode=0o600, chown=self.account.chown)

    def _write(self, name: str, content: str) -> None:
        write_atomic(os.path.join(self.data_dir, name), content, mode=0o600, chown=self.account.chown)

    def upstream(self) -> str | None:
        return conf.upstream_from_conf(read_text(os.path.join(self.data_dir, "postgresql.conf")))

    def configure(self, upstream: Member | None, as_replica: bool, hba: tuple[str, ...] | None,
                  signal: bool = True) -> None:
        """Write postgresql.conf (and, with ``signal``, standby.signal for a replica) for the next start or
        reload."""
        standby = self._standby_settings(upstream) if as_replica else None
        params = conf.merge_parameters(self.dynamic_parameters, self.pg.parameters)
        with self._conf_lock:
            text = conf.render_postgresql_conf(params, listen_addresses=self.pg.listen_addresses, port=self.pg.port,
                                               cluster_name=self.cfg.scope, standby=standby,
                                               upstream=upstream.name if upstream else None,
                                               sync_standby_names=self.sync_standby_names)
            self._write("postgresql.conf", text)
        if hba:
            self._write("pg_hba.conf", conf.render_pg_hba(hba))
        signal_file = os.path.join(self.data_dir, "standby.signal")
        if not signal:
            return
        if as_replica and not os.path.exists(signal_file):
            self._write("standby.signal", "")
        elif not as_replica and os.path.exists(signal_file):
            os.unlink(signal_file)

    def _standby_settings(self, upstream: Member | None) -> dict[str, str]:
        if upstream is None:
            return {}
        address = conf.parse_conn_url(upstream.conn_url)
        if address is None:
            return {}
        repl = self.pg.replication
        info = conf.conninfo(host=address[0], port=address[1], user=repl.username, passfile=self.pg.pgpass,
                             application_name=self.cfg.name, dbname="postgres", sslmode="prefer",
                             gssencmode="prefer", target_session_attrs=None)
        settings = {"primary_conninfo": info}
        if self.use_slots:
            settings["primary_slot_name"] = conf.slot_name(self.cfg.name)
        return settings

    # --- lifecycle -------------------------------------------------------------------------------------
    def _log_file(self) -> str:
        """PostgreSQL's startup/server log (pg_ctl -l). Beside the data directory when PostgreSQL's account owns
        its parent, because pg_basebackup and pg_rewind copy whatever lies inside it."""
        data_dir = os.path.abspath(self.data_dir)
        parent = os.path.dirname(data_dir)
        try:
            owned = os.stat(parent).st_uid == self.account.uid
        except OSError:
            owned = False
        if owned:
            return f"{data_dir}-postgresql.log"
        return os.path.join(data_dir, "pgha-postgresql.log")

    def start(self, upstream: Member | None, as_primary: bool, hba: tuple[str, ...] | None,
              epoch: int | None = None) -> None:
        with self._lifecycle:
            if epoch is not None and epoch != self.stop_epoch:
                raise CommandError("start cancelled: a stop was ordered after it")
            self.configure(upstream, not as_primary, hba)
            self.commands.start(self.pg.pg_ctl_timeout, self._log_file())

    def stop(self, mode: str) -> None:
        with self._lifecycle:  # a start in progress (a background job) finishes first, then is stopped
            self.stop_epoch += 1
            self._streaming_at_stop = self._streaming_replicas() if mode == "fast" else frozenset()
            self.probe.close()
            if self.commands.postmaster_pid() is not None:
                self.commands.stop(mode, self.pg.pg_ctl_timeout)

    def _streaming_replicas(self) -> frozenset[str]:
        """application_name of every streaming replica (pgha sets it to the member name)."""
        try:
            rows = self.probe.query("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
            return frozenset(str(row[0]) for row in rows)
        except Exception:
            return frozenset()

    def replicated_at_stop(self, member: str | None = None) -> bool | int | None:
        """A clean (fast) shutdown makes each streaming walsender send everything up to the shutdown checkpoint
        and wait for the standby to confirm it before PostgreSQL exits; so a replica (``member``, or any) that
        streamed at stop time has it all. Otherwise: the checkpoint LSN, for the caller to wait on."""
        streamed = getattr(self, "_streaming_at_stop", frozenset())
        if (member in streamed) if member is not None else bool(streamed):
            return True
        data = self.commands.controldata()
        return lsn_to_int(data.get("Latest checkpoint location", "")) if data else None

    def promote(self, timeline: int | None = None) -> None:
        # PostgreSQL removes standby.signal itself when it promotes; taking it away first makes it fail.
        self.configure(None, False, None, signal=False)
        if timeline is not None:
            self._skip_timelines(timeline)
        self.commands.promote(self.pg.pg_ctl_timeout)

    def _skip_timelines(self, target: int) -> None:
        """PostgreSQL promotes onto the first timeline id after ours with no history file in pg_wal: a placeholder
        for each id another node claimed makes it land on ``target``. Placeholders are comment-only (PostgreSQL's
        history parser skips '#' lines) and are read only to see that the id is taken."""
        current = self.probe.local_state(self.upstream()).timeline or 1
        wal_dir = os.path.join(self.data_dir, "pg_wal")
        for timeline in range(current + 1, target):
            path = os.path.join(wal_dir, f"{timeline:08X}.history")
            if not os.path.exists(path):
                write_atomic(path, f"# timeline {timeline} was claimed by another node of this cluster (pgha)\n",
                             mode=0o600, chown=self.account.chown)

    def checkpoint(self) -> None:
        self.probe.query("CHECKPOINT")

    def follow(self, upstream: Member | None) -> None:
        """Repoint a running replica; primary_conninfo is reloadable since PostgreSQL 13."""
        self.configure(upstream, True, None)
        self.commands.reload()

    def reload_config(self, cluster: ClusterView | None, hba: tuple[str, ...] | None) -> None:
        """Rewrite postgresql.conf (and pg_hba.conf) from the configuration in use, keeping the upstream, and
        signal a running PostgreSQL to reload; a stopped one reads them at its next start."""
        state = self.probe.local_state(self.upstream())
        if not state.running:
            return
        name = self.upstream()
        upstream = cluster.member(name) if cluster is not None and name else None
        self.configure(upstream, state.role is PgRole.REPLICA, hba, signal=False)
        self.commands.reload()

    def set_sync_standby_names(self, value: str | None) -> None:
        """Keep ``value`` as synchronous_standby_names in postgresql.conf from now on (rule 4) and, when
        PostgreSQL runs, reload it. Only that line changes in the file as it is (upstream, replica settings kept);
        without a file yet, the next configure() writes it. None gives the parameter back to the configuration
        (postgresql.parameters); nothing happens when pgha had not set one."""
        if value is None and self.sync_standby_names is None:
            return
        self.sync_standby_names = value
        own = conf.merge_parameters(self.dynamic_parameters, self.pg.parameters)
        own_value = next((v for k, v in own.items() if str(k).lower() == "synchronous_standby_names"), None)
        path = os.path.join(self.data_dir, "postgresql.conf")
        with self._conf_lock:
            text = read_text(path)
            if text is None:
                return
            updated = conf.with_sync_standby_names(text, value, own_value)
            if updated != text:
                self._write("postgresql.conf", updated)
        # A value already in the file may not be in force yet (a reload that failed): reload all the same.
        if self.commands.postmaster_pid() is not None:
            self.commands.reload()

    def remove_data_dir(self) -> None:
        if os.path.isdir(self.data_dir):
            shutil.rmtree(self.data_dir)

    def _prepare_data_dir(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.data_dir))
        os.makedirs(parent, exist_ok=True)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self.account.chown(self.data_dir)

    # --- background jobs -------------------------------------------------------------------------------
    def bootstrap(self, initdb_args: tuple[str, ...], hba: tuple[str, ...] | None, post_bootstrap_hba: tuple[str, ...]) -> None:
        """initdb, our configuration, start as primary, roles. Runs in a background job."""
        self.sync_standby_names = None  # a new cluster: no standby to wait for (an old value would block roles)
        self._prepare_data_dir()
        self.write_pgpass()
        args = ["-D", self.data_dir, f"--username={self.pg.superuser.username}", *initdb_args]
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o700)
            self.account.chown(tmp)
            if self.pg.superuser.password:
                pwfile = os.path.join(tmp, "pw")
                write_atomic(pwfile, self.pg.superuser.password + "\n", mode=0o600, chown=self.account.chown)
                args.append(f"--pwfile={pwfile}")
            self.commands.run("initdb", *args, timeout=300)
        base = os.path.join(self.data_dir, "postgresql.conf")
        os.replace(base, os.path.join(self.data_dir, "postgresql.base.conf"))
        if post_bootstrap_hba and not hba:
            existing = read_text(os.path.join(self.data_dir, "pg_hba.conf")) or ""
            self._write("pg_hba.conf", existing + conf.render_pg_hba(post_bootstrap_hba))
        self.start(None, True, hba)
        self._wait_ready()
        self.create_roles()
        self._post_bootstrap()

    def _post_bootstrap(self) -> None:
        """Patroni's post_bootstrap: the script gets a connection string (no password) as its one argument."""
        script = getattr(self.cfg.bootstrap, "post_bootstrap", None)
        if not script:
            return
        su = self.pg.superuser
        info = conf.conninfo(host=local_host(self.pg.listen_addresses), port=self.pg.port, user=su.username,
                             dbname=self.pg.database)
        self.commands.run_script(shlex.split(script) + [info], timeout=600)

    def _wait_ready(self) -> None:
        import time
        deadline = time.monotonic() + self.pg.pg_ctl_timeout
        while True:
            try:
                self.probe.query("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise CommandError("PostgreSQL did not accept connections after bootstrap")
                time.sleep(0.1)

    def create_roles(self) -> None:
        pg = self.pg
        self.probe.query("SET log_statement TO 'none'")
        self.probe.query("SET log_min_duration_statement TO -1")
        if pg.superuser.password:
            self.probe.query(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                sql.Identifier(pg.superuser.username), sql.Literal(pg.superuser.password)).as_string())
        self._ensure_role(pg.replication.username, pg.replication.password, "REPLICATION")
        if pg.rewind is not None and pg.rewind.username != pg.superuser.username:
            self._ensure_role(pg.rewind.username, pg.rewind.password, "")
            for fn in ("pg_catalog.pg_ls_dir(text, boolean, boolean)", "pg_catalog.pg_stat_file(text, boolean)",
                       "pg_catalog.pg_read_binary_file(text)",
                       "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"):
                self.probe.query(f"GRANT EXECUTE ON FUNCTION {fn} TO " + sql.Identifier(pg.rewind.username)
                                 .as_string())

    def _ensure_role(self, name: str, password: str | None, options: str) -> None:
        exists = self.probe.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        verb = "ALTER" if exists else "CREATE"
        stmt = sql.SQL(verb + " ROLE {} WITH LOGIN " + options).format(sql.Identifier(name))
        if password:
            stmt = stmt + sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        self.probe.query(stmt.as_string())

    def clone(self, source: Member) -> None:
        """pg_basebackup from ``source`` into the empty data directory. Runs in a background job."""
        address = conf.parse_conn_url(source.conn_url)
        if address is None:
            raise CommandError(f"member {source.name} publishes no usable conn_url")
        self.sync_standby_names = None  # a new copy: whatever this node set as a primary before is gone with it
        self._prepare_data_dir()
        self.write_pgpass()
        info = conf.conninfo(host=address[0], port=address[1], user=self.pg.replication.username,
                             application_name=self.cfg.name, connect_timeout=5)
        extra = [a for a in self.pg.basebackup if not a.startswith(("--pgdata", "-D"))]
        self.commands.run("pg_basebackup", "-D", self.data_dir, "-X", "stream", "-c", "fast", "--no-password",
                          "-d", info, *extra, timeout=3600)
        copied_log = self._log_file()  # the leader's server log came along with its data directory
        if os.path.exists(copied_log):
            os.unlink(copied_log)
        # A replica from the first moment: its pg_control (copied from a running primary) says "in production".
        self.configure(source, True, None)

    # --- rejoin and history ---------------------------------------------------------------------------
    _CONFIG_FILES = ("postgresql.conf", "postgresql.base.conf", "pg_hba.conf", "pg_ident.conf")

    def rewind(self, source: Member) -> None:
        """pg_rewind from ``source``, keeping our own configuration files (pg_rewind copies the source's)."""
        address = conf.parse_conn_url(source.conn_url)
        if address is None:
            raise CommandError(f"member {source.name} publishes no usable conn_url")
        saved = {name: read_text(os.path.join(self.data_dir, name)) for name in self._CONFIG_FILES}
        login = self.pg.rewind or self.pg.superuser
        info = conf.conninfo(host=address[0], port=address[1], user=login.username, dbname=self.pg.database,
                             connect_timeout=5)
        self.write_pgpass()
        self._check_source(info, login.password)
        try:
            self.commands.run("pg_rewind", "-D", self.data_dir, f"--source-server={info}", "--no-sync",
                              timeout=3600)
        finally:
            for name, text in saved.items():
                if text is not None:
                    self._write(name, text)
        self.configure(source, True, None)

    @staticmethod
    def _check_source(info: str, password: str | None) -> None:
        """A source we cannot reach says nothing about our data: report it as passing, not as a failed rewind
        (which may remove the data directory)."""
        try:
            psycopg.connect(info, password=password, connect_timeout=5).close()
        except psycopg.OperationalError as e:
            raise TransientJobError(f"rewind source unreachable: {str(e).strip().splitlines()[0]}") from None

    def timeline_history(self, existing: list[list[Any]], reason: str, me: str) -> list[list[Any]]:
        from datetime import datetime, timezone
        timeline = self.local_state().timeline
        if not timeline or timeline < 2:
            return [list(e) for e in existing]
        name = f"pg_wal/{timeline:08X}.history"
        text = self.probe.query("SELECT pg_read_file(%s)", (name,))[0][0]
        known = {int(e[0]) for e in existing if e and str(e[0]).isdecimal()}
        history = [list(e) for e in existing]
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        for line in text.splitlines():
            parts = [p.strip() for p in line.split("\t")]
            if len(parts) < 2 or not parts[0].isdecimal() or int(parts[0]) in known:
                continue
            tl, lsn = int(parts[0]), lsn_to_int(parts[1])
            if lsn is None:
                continue
            if tl == timeline - 1:  # the switch that made us leader: our reason, when, and who
                history.append([tl, lsn, reason, now, me])
            else:
                history.append([tl, lsn, parts[2] if len(parts) > 2 else ""])
        return sorted(history, key=lambda e: int(e[0]))

    # --- slots -----------------------------------------------------------------------------------------
    def sync_slots(self, members: tuple[str, ...]) -> None:
        """Create the missing physical slots. Slots of departed members are kept (a member whose agent
        restarts vanishes from the DCS for a moment and must find its WAL still there); expiring them after
        member_slots_ttl comes with the rejoin work."""
        wanted = {conf.slot_name(m) for m in members}
        rows = self.probe.query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'")
        for slot in sorted(wanted - {r[0] for r in rows}):
            self.probe.query("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
