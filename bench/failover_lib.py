"""Pieces of the failover benchmark: the writing client, and one interface over a local pgha cluster and a local
Patroni cluster (start, find the leader, the PIDs to kill, heal, stop).

Rules: only 127.0.0.1; every loop is bounded in count and time; processes are ended by the PID we started or
read from the cluster's own files (state.json, postmaster.pid), never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg.conninfo import make_conninfo

import benchlib
import patroni_env

HOST = "127.0.0.1"
TABLE = "bench_failover"


# --- the client --------------------------------------------------------------------------------------------
def conninfo(ports: list[int], password: str, target: str = "read-write", connect_timeout: int = 1,
             statement_timeout_ms: int = 1000) -> str:
    """A libpq multi-host string: every node, the first that accepts writes wins."""
    return make_conninfo(host=",".join([HOST] * len(ports)), port=",".join(str(p) for p in ports),
                         user="postgres", password=password, dbname="postgres", connect_timeout=connect_timeout,
                         target_session_attrs=target, options=f"-c statement_timeout={statement_timeout_ms}",
                         application_name="bench-failover")


def connect_rw(info: str, timeout: float) -> psycopg.Connection:
    """Connect to whichever node accepts writes, retrying (bounded) while there is none."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for _ in range(int(timeout / 0.2) + 2):
        try:
            return psycopg.connect(info, autocommit=True)
        except psycopg.Error as e:
            last = e
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise TimeoutError(f"no node accepted writes within {timeout:.0f}s: {str(last).splitlines()[0] if last else ''}")


def ensure_table(info: str, timeout: float = 30.0) -> None:
    with connect_rw(info, timeout) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (run text NOT NULL, k int NOT NULL, "
                     "at timestamptz NOT NULL DEFAULT clock_timestamp())")


@dataclass
class Commit:
    k: int
    t: float          # time.monotonic() right after the INSERT returned (autocommit: committed)
    conn: int         # serial of the connection it went through


@dataclass
class Conn:
    serial: int
    opened: float     # time.monotonic() once connected
    port: int


class Writer(threading.Thread):
    """Inserts one row per transaction (autocommit) through a multi-host read-write connection; after any error
    it drops the connection and reconnects (pausing ``retry_pause`` between failed connects). Every commit is
    recorded with its time and the connection it went through. Bounded by ``max_seconds`` and a count."""

    def __init__(self, info: str, tag: str, max_seconds: float = 600.0, retry_pause: float = 0.05) -> None:
        super().__init__(name=f"writer-{tag}", daemon=True)
        self.info, self.tag, self.max_seconds, self.retry_pause = info, tag, max_seconds, retry_pause
        self.commits: list[Commit] = []
        self.conns: list[Conn] = []
        self.errors: list[tuple[float, str]] = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: psycopg.Connection | None = None
        serial, k = 0, 0
        try:
            for _ in range(10_000_000):
                if self.stop_event.is_set() or time.monotonic() >= deadline:
                    break
                if conn is None:
                    try:
                        conn = psycopg.connect(self.info, autocommit=True)
                    except psycopg.Error as e:
                        self._error(e)
                        self.stop_event.wait(self.retry_pause)
                        continue
                    serial += 1
                    with self.lock:
                        self.conns.append(Conn(serial, time.monotonic(), conn.info.port))
                k += 1
                try:
                    conn.execute(f"INSERT INTO {TABLE} (run, k) VALUES (%s, %s)", (self.tag, k))
                except psycopg.Error as e:
                    self._error(e)
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
                    continue
                with self.lock:
                    self.commits.append(Commit(k, time.monotonic(), serial))
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def _error(self, e: Exception) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), str(e).strip().splitlines()[0][:160] if str(e).strip() else
                                type(e).__name__))

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        self.join(timeout=timeout)

    # --- views (thread-safe copies) ---
    def snapshot(self) -> tuple[list[Commit], list[Conn], list[tuple[float, str]]]:
        with self.lock:
            return list(self.commits), list(self.conns), list(self.errors)

    def current_port(self) -> int | None:
        with self.lock:
            return self.conns[-1].port if self.conns else None

    def first_commit_after(self, t: float) -> tuple[Commit, Conn] | None:
        """The first commit through a connection opened after ``t``."""
        commits, conns, _ = self.snapshot()
        opened = {c.serial: c for c in conns}
        for c in commits:
            if c.t > t and opened[c.conn].opened > t:
                return c, opened[c.conn]
        return None


def rows_present(info: str, tag: str, timeout: float = 30.0) -> tuple[set[int], int]:
    """The k values of ``tag`` on the node that accepts writes now, and that node's port."""
    with connect_rw(info, timeout) as conn:
        ks = {r[0] for r in conn.execute(f"SELECT k FROM {TABLE} WHERE run = %s", (tag,)).fetchall()}
        return ks, conn.info.port


# --- the clusters ------------------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    agent_pid: int | None
    postmaster_pid: int | None


class System:
    """One local 3-node cluster of either system, as the failover benchmark drives it."""

    kind = "?"
    namespace = "/service"
    scope = "?"

    def __init__(self, root: str, nodes: int, base_port: int, say: Callable[[str], None]) -> None:
        self.root, self.nodes, self.base_port, self.say = root, nodes, base_port, say
        self.password = ""

    # layout: PostgreSQL on P+i, etcd client on P+200 (both systems)
    def pg_port(self, i: int) -> int:
        return self.base_port + i

    @property
    def ports(self) -> list[int]:
        return [self.pg_port(i) for i in range(self.nodes)]

    @property
    def etcd_port(self) -> int:
        return self.base_port + 200

    def node_dir(self, i: int) -> str:
        return os.path.join(self.root, f"node{i}")

    def data_dir(self, i: int) -> str:
        return os.path.join(self.node_dir(i), "data")

    def log_path(self, i: int) -> str:
        raise NotImplementedError

    def cluster_state(self) -> benchlib.ClusterState | None:
        return benchlib.read_cluster(self.etcd_port, self.namespace, self.scope)

    def leader(self) -> int | None:
        st = self.cluster_state()
        if st is None or not st.leader or not st.leader.startswith("node"):
            return None
        return int(st.leader[4:])

    def postmaster_pid(self, i: int) -> int | None:
        return patroni_env.postmaster_pid(self.data_dir(i))

    def agent_pid(self, i: int) -> int | None:
        raise NotImplementedError

    def wait_streaming(self, timeout: float) -> benchlib.Milestones:
        t0 = time.monotonic()
        return benchlib.poll_until_streaming(self.etcd_port, self.namespace, self.scope, self.nodes, t0,
                                             t0 + timeout, interval=0.2, say=self.say)

    def start(self, timeout: float) -> None:
        raise NotImplementedError

    def wait_replication(self, timeout: float) -> None:
        """After the DCS says so, confirm on the leader itself: N-1 rows of pg_stat_replication streaming (the
        members' keys can be a loop old). Bounded."""
        deadline = time.monotonic() + timeout
        info = conninfo(self.ports, self.password, connect_timeout=2, statement_timeout_ms=2000)
        seen = -1
        for _ in range(int(timeout / 0.2) + 2):
            try:
                with psycopg.connect(info, autocommit=True) as conn:
                    seen = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                                        ).fetchone()[0]
                if seen >= self.nodes - 1:
                    return
            except psycopg.Error:
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind}: the leader shows {seen} streaming replicas after {timeout:.0f}s")

    def heal(self, timeout: float) -> None:
        """Restart whatever agent is not running, then wait until one leader and N-1 streaming replicas."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_offsets(self) -> dict[int, int]:
        out = {}
        for i in range(self.nodes):
            try:
                out[i] = os.path.getsize(self.log_path(i))
            except OSError:
                out[i] = 0
        return out

    def log_since(self, offsets: dict[int, int], limit: int = 400_000) -> dict[int, str]:
        out = {}
        for i in range(self.nodes):
            try:
                with open(self.log_path(i), "rb") as f:
                    f.seek(offsets.get(i, 0))
                    out[i] = f.read(limit).decode(errors="replace")
            except OSError:
                out[i] = ""
        return out


class PghaSystem(System):
    kind = "pgha"

    def __init__(self, root: str, nodes: int, base_port: int, timing: dict[str, Any] | None,
                 say: Callable[[str], None], pgbouncer: bool = False) -> None:
        super().__init__(root, nodes, base_port, say)
        from pgha.local.cluster import LocalCluster
        from pgha.local.layout import SCOPE, Layout
        self.scope = SCOPE
        self.timing = timing            # None: LocalCluster's defaults (what `pgha up` uses)
        self.layout = Layout(root, nodes, base_port)
        self.up_log: list[str] = []
        self.cluster = LocalCluster(self.layout, say=self.up_log.append, pgbouncer=pgbouncer)
        self.pgbouncer = pgbouncer  # clients through PgBouncer (P+303) instead of HAProxy's rw (P+300)

    def log_path(self, i: int) -> str:
        return os.path.join(self.layout.node_dir(i), "agent.log")

    def agent_pid(self, i: int) -> int | None:
        from pgha.local.layout import read_state
        pid = read_state(self.layout).get("agents", {}).get(f"node{i}")
        return int(pid) if pid else None

    def _read_password(self) -> str:
        import yaml
        with open(os.path.join(self.layout.node_dir(0), "pgha.yml")) as f:
            return yaml.safe_load(f)["postgresql"]["authentication"]["superuser"]["password"]

    def start(self, timeout: float) -> None:
        self.cluster.up(timeout=timeout, timing=self.timing)
        self.password = self._read_password()

    def heal(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        dead = [i for i in range(self.nodes) if not benchlib.pid_alive(self.agent_pid(i))]
        if dead:
            self.say(f"    heal: restarting the agent of {', '.join(f'node{i}' for i in dead)} (pgha up)")
            self.cluster.up(timeout=timeout, timing=self.timing)
        ms = self.wait_streaming(max(1.0, deadline - time.monotonic()))
        if ms.streaming is None:
            raise TimeoutError(f"pgha: not streaming again within {timeout:.0f}s ({ms.last})")
        self.wait_replication(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self.cluster.down()


class PatroniSystem(System):
    kind = "patroni"

    def __init__(self, root: str, nodes: int, base_port: int, timing: dict[str, int] | None,
                 account: patroni_env.RunAs, say: Callable[[str], None]) -> None:
        super().__init__(root, nodes, base_port, say)
        self.cluster = patroni_env.PatroniCluster(root, nodes, base_port, timing, account, say=say)
        self.scope = self.cluster.scope
        self.namespace = self.cluster.namespace
        self.account = account

    def log_path(self, i: int) -> str:
        return self.cluster.log(i)

    def agent_pid(self, i: int) -> int | None:
        proc = self.cluster.agents.get(f"node{i}")
        return proc.pid if proc is not None and proc.poll() is None else None

    def _read_password(self) -> str:
        import yaml
        with open(os.path.join(self.node_dir(0), "patroni.yml")) as f:
            return yaml.safe_load(f)["postgresql"]["authentication"]["superuser"]["password"]

    def start(self, timeout: float) -> None:
        self.cluster.write_files()
        self.password = self._read_password()
        proc = self.cluster.start_etcd()
        benchlib.wait_etcd_healthy(self.etcd_port, proc, timeout=30)
        self.cluster.start_agents()
        t0 = time.monotonic()
        ms = benchlib.poll_until_streaming(self.etcd_port, self.namespace, self.scope, self.nodes, t0, t0 + timeout,
                                           interval=0.2, alive=self.cluster.agents_alive, say=self.say)
        if ms.streaming is None:
            raise TimeoutError(f"Patroni: not streaming within {timeout:.0f}s ({ms.last})")

    def start_agent(self, i: int) -> None:
        """(Re)start the Patroni process of one node, as bootstrap's PatroniCluster.start_agents does."""
        name = f"node{i}"
        old = self.cluster.agents.get(name)
        if old is not None and old.poll() is None:
            return
        if old is not None:
            try:
                old.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        with open(self.cluster.log(i), "ab") as log:
            proc = subprocess.Popen([patroni_env.patroni_bin(), os.path.join(self.node_dir(i), "patroni.yml")],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.node_dir(i),
                                    start_new_session=True, **self.account.popen_kwargs())
        self.cluster.agents[name] = proc

    def heal(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        dead = [i for i in range(self.nodes) if self.agent_pid(i) is None]
        if dead:
            self.say(f"    heal: restarting Patroni on {', '.join(f'node{i}' for i in dead)}")
            for i in dead:
                self.start_agent(i)
        ms = self.wait_streaming(max(1.0, deadline - time.monotonic()))
        if ms.streaming is None:
            raise TimeoutError(f"Patroni: not streaming again within {timeout:.0f}s ({ms.last})")
        self.wait_replication(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self.cluster.stop()


def inject(system: System, fault: str, leader: int) -> tuple[float, Fault]:
    """Inject ``fault`` on node ``leader``; returns (time.monotonic() of the fault, what was signalled).

    a: SIGKILL the agent and the postmaster, back to back (node death)
    b: SIGKILL the postmaster only (PostgreSQL crash, agent alive)
    c: SIGTERM the agent (graceful stop)
    """
    agent = system.agent_pid(leader)
    pm = system.postmaster_pid(leader)
    if not agent or not benchlib.pid_alive(agent):
        raise RuntimeError(f"node{leader}'s agent is not running (pid {agent})")
    if fault in ("a", "b") and (not pm or not benchlib.pid_alive(pm)):
        raise RuntimeError(f"node{leader}'s postmaster is not running (pid {pm})")
    if fault == "a":
        t = time.monotonic()
        os.kill(agent, signal.SIGKILL)
        os.kill(pm, signal.SIGKILL)
    elif fault == "b":
        t = time.monotonic()
        os.kill(pm, signal.SIGKILL)
    elif fault == "c":
        t = time.monotonic()
        os.kill(agent, signal.SIGTERM)
    else:
        raise ValueError(fault)
    return t, Fault(fault, agent, pm)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class RunResult:
    system: str
    row: str
    fault: str
    run: int
    leader_before: str = ""
    leader_after: str = ""
    writer_node_after: str = ""
    busy_before_pct: float = 0.0
    figure_s: float | None = None          # first commit on a connection opened after the fault - fault time
    broke_s: float | None = None           # first client error after the fault - fault time
    late_old_conn_commits: int = 0         # commits on the pre-fault connection after the fault
    acked: int = 0
    present: int = 0
    missing: int | None = None
    missing_ks: list[int] = field(default_factory=list)
    missing_before_fault: int | None = None  # of the missing rows, those acknowledged before the fault
    heal_s: float | None = None
    rebuilt: bool = False
    error: str = ""
    errors_seen: list[str] = field(default_factory=list)
