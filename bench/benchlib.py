"""Shared pieces of the benchmarks: process figures from /proc, a single-member etcd on loopback, a DCS poller
that reads the keys Patroni and pgha both write, and stopping processes by the PID we started.

Rules: only 127.0.0.1; every loop is bounded in count and time; processes are ended by PID, never by name.
Standard library only, so the same code measures both systems.
"""

from __future__ import annotations

import tempfile

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


# --- /proc --------------------------------------------------------------------------------------------------
def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """VmRSS (or another /proc/PID/status field in kB, e.g. VmHWM: the peak) of one process in MB (MiB), or
    None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (its own threads, not its children), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command name: state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (bounded) until the PIDs are gone; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if p]
    for _ in range(int(timeout / 0.05) + 2):
        for p in left:
            _reap(p)
        left = [p for p in left if pid_alive(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def stop_pids(pids: list[int], timeout: float = 60.0) -> None:
    """SIGTERM to each PID, then SIGKILL to the ones still there after ``timeout`` seconds."""
    live = [p for p in pids if pid_alive(p)]
    for p in live:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    left = wait_gone(live, timeout)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(left, 10)


def ports_free(ports: list[int]) -> list[int]:
    """The ports among ``ports`` that something on 127.0.0.1 already listens on (empty when all are free)."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                busy.append(port)
    return busy


# --- etcd ---------------------------------------------------------------------------------------------------
def etcd_binary() -> str:
    path = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(path):
        raise SystemExit("etcd is not installed: apt-get install -y etcd-server")
    return path


def start_etcd(data_dir: str, client_port: int, peer_port: int, log_path: str) -> subprocess.Popen:
    client = f"http://{HOST}:{client_port}"
    peer = f"http://{HOST}:{peer_port}"
    cmd = [etcd_binary(), "--name", "bench", "--data-dir", data_dir,
           "--listen-client-urls", client, "--advertise-client-urls", client,
           "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
           "--initial-cluster", f"bench={peer}", "--initial-cluster-state", "new"]
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_etcd_healthy(client_port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{HOST}:{client_port}/health"
    for _ in range(int(timeout / 0.05) + 2):
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise TimeoutError(f"etcd on {HOST}:{client_port} was not healthy within {timeout:.0f}s")


# --- the DCS, as both systems write it ----------------------------------------------------------------------
def _b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def etcd_prefix(client_port: int, prefix: str, timeout: float = 1.0) -> dict[str, bytes]:
    """All keys under ``prefix`` via etcd's v3 JSON gateway (etcd 3.4: /v3/kv/range)."""
    p = prefix.encode()
    end = p[:-1] + bytes([p[-1] + 1])
    body = json.dumps({"key": _b64(p), "range_end": _b64(end)}).encode()
    req = urllib.request.Request(f"http://{HOST}:{client_port}/v3/kv/range", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data = json.loads(r.read())
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in data.get("kvs", [])}


@dataclass
class ClusterState:
    leader: str | None = None
    members: dict[str, dict[str, Any]] = field(default_factory=dict)

    def streaming(self, nodes: int) -> bool:
        """One leader (running primary) and nodes-1 other members with replication_state 'streaming'."""
        if self.leader is None or len(self.members) < nodes:
            return False
        lead = self.members.get(self.leader)
        if not lead or lead.get("state") != "running" or lead.get("role") not in ("primary", "master"):
            return False
        others = [m for n, m in self.members.items() if n != self.leader]
        return sum(1 for m in others if m.get("replication_state") == "streaming") >= nodes - 1

    def all_running(self, nodes: int) -> bool:
        """A leader, and nodes members whose state is 'running' (replicas up, whatever their replication)."""
        return (self.leader is not None and len(self.members) >= nodes
                and all(m.get("state") == "running" for m in self.members.values()))

    def line(self) -> str:
        parts = []
        for name in sorted(self.members):
            m = self.members[name]
            what = "leader" if name == self.leader else (m.get("replication_state") or m.get("role") or "?")
            parts.append(f"{name} {m.get('state', '?')}/{what}")
        return ", ".join(parts) or "no member yet"


def read_cluster(client_port: int, namespace: str, scope: str) -> ClusterState | None:
    base = f"{namespace.rstrip('/')}/{scope}/"
    try:
        kvs = etcd_prefix(client_port, base)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    state = ClusterState()
    for key, value in kvs.items():
        rest = key[len(base):]
        if rest == "leader":
            state.leader = value.decode(errors="replace") or None
        elif rest.startswith("members/"):
            try:
                state.members[rest[len("members/"):]] = json.loads(value)
            except ValueError:
                state.members[rest[len("members/"):]] = {}
    return state


@dataclass
class Milestones:
    leader: float | None = None      # seconds from t0 until the leader key was first seen
    running: float | None = None     # ... until a leader and N members in state 'running' were first seen
    streaming: float | None = None   # ... until one leader + N-1 streaming replicas were first seen
    last: str = ""


def poll_until_streaming(client_port: int, namespace: str, scope: str, nodes: int, t0: float, deadline: float,
                         interval: float = 0.1, alive=lambda: True, say=print) -> Milestones:
    """Poll the DCS every ``interval`` seconds until the cluster streams, ``deadline`` (monotonic) passes, or
    ``alive()`` turns false. Bounded in count and time."""
    ms = Milestones()
    for _ in range(int((deadline - time.monotonic()) / interval) + 2):
        now = time.monotonic()
        st = read_cluster(client_port, namespace, scope)
        if st is not None:
            if st.leader and ms.leader is None:
                ms.leader = now - t0
            if ms.running is None and st.all_running(nodes):
                ms.running = now - t0
            if st.streaming(nodes):
                ms.streaming = now - t0
                ms.last = st.line()
                return ms
            line = st.line()
            if line != ms.last:
                say(f"    {now - t0:6.2f}s {line}")
                ms.last = line
        if time.monotonic() >= deadline or not alive():
            break
        time.sleep(max(0.0, interval - (time.monotonic() - now)))
    return ms


def helper_processes(pid: int) -> list[int]:
    """The agent's own helper processes: its children (by /proc scan), PostgreSQL's processes excluded (pgha's
    fencer, for example; Patroni keeps none)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        comm = head.split("(", 1)[1]
        if int(rest.split()[1]) == pid and not comm.startswith("postgres"):
            out.append(int(entry))
    return out


# --- the rest of the machine --------------------------------------------------------------------------------
def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals), idle


def machine_busy(interval: float = 2.0) -> float:
    """The whole machine's CPU busy % (of all cores) over ``interval`` seconds."""
    t1, i1 = _cpu_times()
    time.sleep(interval)
    t2, i2 = _cpu_times()
    return 100.0 * (1 - (i2 - i1) / max(1, t2 - t1))


def wait_quiet(threshold: float, max_wait: float, say=print) -> float:
    """Wait (at most ``max_wait`` s) until the machine is under ``threshold`` % busy over 2 s, so that other work
    on it disturbs a run less; returns the last figure (the run goes ahead either way)."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy()
    for _ in range(int(max_wait / 2) + 1):
        if busy < threshold or time.monotonic() >= deadline:
            break
        say(f"    the machine is {busy:.0f}% busy (other work): waiting for under {threshold:.0f}%")
        busy = machine_busy()
    return busy


# --- idle window --------------------------------------------------------------------------------------------
def idle_window(pids: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    """CPU % of each PID over ``seconds`` of wall time, its VmRSS at the end and its VmHWM (peak RSS over its
    life, bootstrap included). Checks once a second that each process is still there; raises if one is gone."""
    start_cpu = {n: cpu_seconds(p) for n, p in pids.items()}
    helpers = {n: helper_processes(p) for n, p in pids.items()}
    helpers_cpu = {h: cpu_seconds(h) for hs in helpers.values() for h in hs}
    t_start = time.monotonic()
    end = t_start + seconds
    for _ in range(int(seconds) + 2):
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(1.0, left))
        for n, p in pids.items():
            if not pid_alive(p):
                raise RuntimeError(f"{n} (pid {p}) exited during the idle window")
    wall = time.monotonic() - t_start
    out = {}
    for n, p in pids.items():
        c1, r = cpu_seconds(p), rss_mb(p)
        if c1 is None or r is None or start_cpu[n] is None:
            raise RuntimeError(f"{n} (pid {p}) exited during the idle window")
        h_rss = h_cpu = 0.0
        for h in helpers[n]:
            c, hr = cpu_seconds(h), rss_mb(h)
            if c is not None and hr is not None and helpers_cpu.get(h) is not None:
                h_rss += hr
                h_cpu += c - helpers_cpu[h]
        out[n] = {"cpu_pct": 100.0 * (c1 - start_cpu[n]) / wall, "rss_mb": r,
                  "rss_peak_mb": rss_mb(p, "VmHWM") or r, "wall_s": wall, "helpers": len(helpers[n]),
                  "helpers_rss_mb": h_rss, "helpers_cpu_pct": 100.0 * h_cpu / wall}
    return out


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"

def write_section(path: str, heading: str, section: str) -> None:
    """Replace (or add) the section under ``heading`` in ``path`` (a new file gets a title), keep every other
    section; written atomically. Every benchmark writes docs/BENCHMARKS.md through this."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\nHow pgha compares with Patroni on the same machine; each section says how it was " \
               "produced. The benchmarks are in bench/ (see bench/README.md).\n"
    lines = text.splitlines()
    try:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = lines[:start] + section.rstrip("\n").splitlines() + ([""] + lines[end:] if end < len(lines) else [])
    except ValueError:
        new = lines + ([""] if lines and lines[-1] != "" else []) + section.rstrip("\n").splitlines()
    out = "\n".join(new).rstrip("\n") + "\n"
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".benchmarks-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(out)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
