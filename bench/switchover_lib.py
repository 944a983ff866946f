"""Pieces of the switchover benchmark: a writer that goes through HAProxy's rw port and records, for every commit,
the node that took it; HAProxy in front of a Patroni cluster (no router); the faults; one run.

Rules: only 127.0.0.1; every loop is bounded in count and time; processes are ended by the PID we started or
read from the cluster's own files (state.json, postmaster.pid), never by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from psycopg.conninfo import make_conninfo

import benchlib
import failover_lib as fl

HOST = "127.0.0.1"


def rw_conninfo(port: int, password: str, pgbouncer: bool = False) -> str:
    """A plain client of HAProxy's rw listener: one host, no target_session_attrs (HAProxy does the routing).
    Through PgBouncer: no ``options`` (PgBouncer refuses that startup parameter; transaction pooling would not
    keep a session setting anyway)."""
    if pgbouncer:
        return make_conninfo(host=HOST, port=str(port), user="postgres", password=password, dbname="postgres",
                             connect_timeout=1, application_name="bench-switchover")
    return make_conninfo(host=HOST, port=str(port), user="postgres", password=password, dbname="postgres",
                         connect_timeout=1, options="-c statement_timeout=1000", application_name="bench-switchover")


# --- the client --------------------------------------------------------------------------------------------
@dataclass
class Commit:
    k: int
    t: float      # time.monotonic() right after the INSERT returned (autocommit: committed)
    conn: int     # serial of the connection it went through
    node: int     # the PostgreSQL port that took it (inet_server_port(), returned by the INSERT)


class GapWriter(threading.Thread):
    """One row per autocommit INSERT through HAProxy; after an error on a session it reconnects at once, after a
    failed connect it pauses ``retry_pause``. Errors are kept as (time, "connect" | "session", text). Bounded by
    ``max_seconds`` and a count."""

    def __init__(self, info: str, tag: str, max_seconds: float, retry_pause: float = 0.02) -> None:
        super().__init__(name=f"writer-{tag}", daemon=True)
        self.info, self.tag, self.max_seconds, self.retry_pause = info, tag, max_seconds, retry_pause
        self.commits: list[Commit] = []
        self.errors: list[tuple[float, str, str]] = []
        self.events: list[tuple[float, str]] = []   # connects tried and made, for the run's writer log
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: psycopg.Connection | None = None
        serial = k = 0
        sql = f"INSERT INTO {fl.TABLE} (run, k) VALUES (%s, %s) RETURNING inet_server_port()"
        try:
            for _ in range(10_000_000):
                if self.stop_event.is_set() or time.monotonic() >= deadline:
                    break
                if conn is None:
                    self.events.append((time.monotonic(), "connecting"))
                    try:
                        conn = psycopg.connect(self.info, autocommit=True)
                    except psycopg.Error as e:
                        self._error("connect", e)
                        self.stop_event.wait(self.retry_pause)
                        continue
                    serial += 1
                    self.events.append((time.monotonic(), f"connected #{serial}"))
                k += 1
                try:
                    node = conn.execute(sql, (self.tag, k)).fetchone()[0]
                except psycopg.Error as e:
                    self._error("session", e)
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
                    continue
                with self.lock:
                    self.commits.append(Commit(k, time.monotonic(), serial, int(node)))
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def _error(self, kind: str, e: Exception) -> None:
        text = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        with self.lock:
            self.errors.append((time.monotonic(), kind, text))

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        self.join(timeout=timeout)

    def snapshot(self) -> tuple[list[Commit], list[tuple[float, str, str]]]:
        with self.lock:
            return list(self.commits), list(self.errors)

    def first_elsewhere(self, t: float, old_port: int) -> Commit | None:
        """The first commit after ``t`` taken by a node other than ``old_port``."""
        commits, _ = self.snapshot()
        return next((c for c in commits if c.t > t and c.node != old_port), None)


# --- HAProxy, for Patroni (pgha's LocalCluster brings its own, with its router) ------------------------------
class PlainHaproxy:
    """HAProxy with the configuration pgha's router would get (pgha.router.haproxy_config.render: the same
    listen blocks, checks `OPTIONS /primary`, `inter 1s fall 2 rise 1 on-marked-down shutdown-sessions`), in
    front of a Patroni cluster, and no router: the health checks alone route."""

    def __init__(self, root: str, base_port: int, nodes: int) -> None:
        self.root, self.base_port, self.nodes = root, base_port, nodes
        self.socket = os.path.join(root, "haproxy.sock")
        self.config = os.path.join(root, "haproxy.cfg")
        self.log = os.path.join(root, "haproxy.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from pgha.router import process
        from pgha.router.haproxy_config import RouterPorts, Server, render
        binary = process.haproxy_binary()
        if binary is None:
            raise SystemExit("HAProxy is not installed: apt-get install -y haproxy")
        servers = [Server(f"node{i}", HOST, self.base_port + i, HOST, self.base_port + 100 + i)
                   for i in range(self.nodes)]
        ports = RouterPorts(self.base_port + 300, self.base_port + 301, self.base_port + 302)
        with open(self.config, "w") as f:
            f.write(render(servers, ports, self.socket, scope="pgha-bench (Patroni)"))
        self.proc = process.start_haproxy(binary, self.config, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            benchlib.stop_pids([self.proc.pid], timeout=10)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None


class PatroniBehindHaproxy(fl.PatroniSystem):
    """failover_lib's Patroni cluster with a PlainHaproxy in front (rw on P+300, ro P+301, stats P+302)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.haproxy = PlainHaproxy(self.root, self.base_port, self.nodes)

    def start(self, timeout: float) -> None:
        super().start(timeout)
        self.haproxy.start()

    def stop(self) -> None:
        self.haproxy.stop()
        super().stop()


def haproxy_runtime(system: fl.System):
    from pgha.router.runtime import HaproxyRuntime
    if system.kind == "pgha":
        return HaproxyRuntime(system.layout.haproxy_socket)
    return HaproxyRuntime(system.haproxy.socket)


def wait_routed(system: fl.System, timeout: float) -> int:
    """Wait (bounded) until HAProxy's rw sends to exactly the leader; returns the leader's index."""
    from pgha.router.runtime import RuntimeApiError
    runtime = haproxy_runtime(system)
    deadline = time.monotonic() + timeout
    last = "?"
    for _ in range(int(timeout / 0.2) + 2):
        leader = system.leader()
        try:
            up = runtime.up_servers("rw")
            last = f"leader node{leader}, rw up {sorted(up)}"
            if leader is not None and up == {f"node{leader}"}:
                return leader
        except RuntimeApiError as e:
            last = str(e)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise TimeoutError(f"HAProxy's rw does not route to the leader alone after {timeout:.0f}s ({last})")


# --- faults --------------------------------------------------------------------------------------------------
@dataclass
class Post:
    status: int | None = None
    body: str = ""
    took: float | None = None


def streaming_replica(system: fl.System, leader: int) -> int:
    st = system.cluster_state()
    names = sorted(n for n, m in (st.members if st else {}).items()
                   if n != f"node{leader}" and m.get("replication_state") == "streaming")
    if not names:
        raise RuntimeError("no streaming replica to switch over to")
    return int(names[0][4:])


def api_auth(system: fl.System, i: int) -> str | None:
    """The Basic authorization header for node ``i``'s REST API (restapi.authentication in its config file,
    which `pgha up` sets and our Patroni config does not), or None."""
    import base64
    import yaml
    path = os.path.join(system.node_dir(i), "pgha.yml" if system.kind == "pgha" else "patroni.yml")
    with open(path) as f:
        auth = (yaml.safe_load(f).get("restapi") or {}).get("authentication") or {}
    if not auth.get("username"):
        return None
    return "Basic " + base64.b64encode(f"{auth['username']}:{auth.get('password', '')}".encode()).decode()


def post_switchover(api_port: int, leader: int, candidate: int, auth: str | None, out: Post,
                    timeout: float = 60.0) -> None:
    body = json.dumps({"leader": f"node{leader}", "candidate": f"node{candidate}"}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
    req = urllib.request.Request(f"http://{HOST}:{api_port}/switchover", data=body, method="POST", headers=headers)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            out.status, out.body = r.status, r.read().decode(errors="replace")[:200]
    except urllib.error.HTTPError as e:
        out.status, out.body = e.code, e.read().decode(errors="replace")[:200]
    except (urllib.error.URLError, OSError) as e:
        out.body = str(e)[:200]
    out.took = time.monotonic() - t0


# --- one run -------------------------------------------------------------------------------------------------
@dataclass
class Result:
    system: str
    row: str
    fault: str
    run: int
    busy_before_pct: float = 0.0
    leader_before: str = ""
    leader_after: str = ""          # the node that took the first new commit
    fault_wall: float = 0.0         # time.time() of the fault, to read the logs against
    gap_s: float | None = None      # first commit on the new leader - last commit before it (on the old one)
    first_s: float | None = None    # first commit on the new leader - the fault
    old_last_s: float | None = None  # last commit on the old leader - the fault (it serves during CHECKPOINT)
    errors_connect: int = 0         # client errors after the fault: failed connects through HAProxy
    errors_session: int = 0         # ... statements that failed on an open session
    error_kinds: list[str] = field(default_factory=list)
    post_status: int | None = None
    post_s: float | None = None
    post_body: str = ""
    acked: int = 0
    missing: int | None = None
    heal_s: float | None = None
    rebuilt: bool = False
    error: str = ""


def one_run(system: fl.System, row: str, fault: str, run: int, args, logdir: str,
            say: Callable[[str], None], extra_logs: Callable[[], dict[str, str]]) -> Result:
    import re
    res = Result(system=system.kind, row=row, fault=fault, run=run)
    res.busy_before_pct = benchlib.wait_quiet(args.quiet_below, args.quiet_wait, say=say)
    leader = wait_routed(system, 30)
    res.leader_before = f"node{leader}"
    old_port = system.pg_port(leader)
    tag = f"sw-{row}-{fault}-{run}-{int(time.time())}"
    bouncer = getattr(system, "pgbouncer", False)
    writer = GapWriter(rw_conninfo(system.base_port + (303 if bouncer else 300), system.password, bouncer), tag,
                       args.fault_timeout + 120)
    extra = {name: _size(path) for name, path in extra_logs().items()}
    offsets = system.log_offsets()
    writer.start()
    try:
        deadline = time.monotonic() + 30   # steady: at least 1 s of commits, all on the leader
        for _ in range(400):
            commits, _ = writer.snapshot()
            if len(commits) >= 20 and commits[-1].t - commits[0].t >= 1.0 and commits[-1].node == old_port:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the writer did not settle on node{leader} within 30s ({len(commits)} commits)")
            time.sleep(0.1)
        post = Post()
        poster = None
        if fault == "s":
            candidate = streaming_replica(system, leader)
            poster = threading.Thread(target=post_switchover, daemon=True,
                                      args=(system.base_port + 100 + leader, leader, candidate,
                                            api_auth(system, leader), post))
            res.fault_wall, t_fault = time.time(), time.monotonic()
            poster.start()
            say(f"    POST /switchover to node{leader}: leader node{leader}, candidate node{candidate}")
        else:
            res.fault_wall = time.time()
            t_fault, what = fl.inject(system, "a", leader)
            say(f"    SIGKILL node{leader} (agent {what.agent_pid}, postmaster {what.postmaster_pid})")
        found = None
        for _ in range(int(args.fault_timeout / 0.02) + 2):
            found = writer.first_elsewhere(t_fault, old_port)
            if found is not None or time.monotonic() >= t_fault + args.fault_timeout or not writer.is_alive():
                break
            if post.status is not None and post.status >= 300 and time.monotonic() > t_fault + 5:
                break   # refused: nothing will move
            time.sleep(0.02)
        time.sleep(1.0)   # a little more writing on the new leader
        writer.stop()
        if poster is not None:
            poster.join(timeout=60)
            res.post_status, res.post_s, res.post_body = post.status, post.took, post.body
        commits, errors = writer.snapshot()
        after = [e for e in errors if e[0] > t_fault]
        res.errors_connect = sum(1 for e in after if e[1] == "connect")
        res.errors_session = sum(1 for e in after if e[1] == "session")
        kinds: dict[str, int] = {}
        for _, kind, text in after:
            key = f"{kind}: {re.sub(r'[0-9]+', 'N', text)[:90]}"
            kinds[key] = kinds.get(key, 0) + 1
        res.error_kinds = [f"{n}x {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])][:5]
        if found is None:
            res.error = f"no commit on another node within {args.fault_timeout:.0f}s of the fault"
        else:
            before = [c for c in commits if c.t < found.t]
            last = before[-1].t if before else t_fault
            res.gap_s, res.first_s = found.t - last, found.t - t_fault
            old_after = [c.t for c in commits if c.node == old_port and c.t > t_fault]
            res.old_last_s = (old_after[-1] - t_fault) if old_after else 0.0
            idx = system.ports.index(found.node) if found.node in system.ports else -1
            res.leader_after = f"node{idx}"
        acked = {c.k for c in commits}
        res.acked = len(acked)
        try:
            present, _ = fl.rows_present(fl.conninfo(system.ports, system.password), tag, timeout=60)
            res.missing = len(acked - present)
        except Exception as e:  # noqa: BLE001
            res.error = (res.error + "; " if res.error else "") + f"counting rows: {e}"
    finally:
        writer.stop()
    t_heal = time.monotonic()
    try:
        system.heal(args.heal_timeout)
        wait_routed(system, 30)
        res.heal_s = time.monotonic() - t_heal
    except Exception as e:  # noqa: BLE001 (the caller rebuilds)
        res.error = (res.error + "; " if res.error else "") + f"heal failed: {e}"
    stem = os.path.join(logdir, f"{row}-{fault}-{run}")
    write_timeline(f"{stem}-writer.log", writer, res.fault_wall, t_fault if res.fault_wall else None)
    for i, text in system.log_since(offsets).items():
        with open(f"{stem}-node{i}.log", "w") as f:
            f.write(text)
    for name, path in extra_logs().items():
        try:
            with open(path, "rb") as src, open(f"{stem}-{name}", "wb") as dst:
                src.seek(extra.get(name, 0))
                dst.write(src.read(400_000))
        except OSError:
            pass
    return res


def write_timeline(path: str, writer: GapWriter, fault_wall: float, t_fault: float | None) -> None:
    """The writer's side of the run, in wall-clock time (to read beside the agents' logs): each connect tried
    and made, each error, and the commits around the switch of node (first and last of each run of commits on
    one node)."""
    if t_fault is None:
        return
    import datetime as dt
    commits, errors = writer.snapshot()
    lines: list[tuple[float, str]] = list(writer.events) + [(t, f"ERROR {k}: {x}") for t, k, x in errors]
    lines.append((t_fault, "FAULT"))
    for i, c in enumerate(commits):
        prev = commits[i - 1] if i else None
        nxt = commits[i + 1] if i + 1 < len(commits) else None
        if prev is None or nxt is None or prev.node != c.node or nxt.node != c.node or nxt.conn != c.conn \
                or prev.conn != c.conn:
            lines.append((c.t, f"commit k={c.k} on port {c.node} (conn #{c.conn})"))
    with open(path, "w") as f:
        for t, text in sorted(lines, key=lambda x: x[0]):
            if abs(t - t_fault) > 30:
                continue
            wall = dt.datetime.fromtimestamp(fault_wall + (t - t_fault)).strftime("%H:%M:%S,%f")[:-3]
            f.write(f"{wall} {t - t_fault:+8.3f}s {text}\n")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
