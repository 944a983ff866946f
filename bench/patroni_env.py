"""Patroni 4.1.5 beside pgha, for the benchmarks: its virtualenv, and a local N-node Patroni cluster on 127.0.0.1
laid out like `pgha up`'s (PostgreSQL on P+i, REST API on P+100+i, etcd on P+200/P+201) with the same PostgreSQL
settings.

PostgreSQL refuses to run as root and root's interpreter usually lives under /root (unreadable by other
accounts), so Patroni gets a venv made with Debian's /usr/bin/python3 under /opt/pgha-bench, readable by all,
and runs as the ``postgres`` account when the benchmark runs as root. Everything it starts is recorded by PID
and stopped by PID.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
from typing import Any, Callable

import benchlib

PATRONI_VERSION = "4.1.5"
VENV = os.environ.get("PGHA_BENCH_PATRONI_VENV", "/opt/pgha-bench/patroni-venv")
BIN_DIR = "/usr/lib/postgresql/15/bin"
REQUIREMENTS = [f"patroni[etcd3]=={PATRONI_VERSION}", "psycopg[binary]"]


class SetupError(Exception):
    pass


def _run(cmd: list[str], timeout: float, say: Callable[[str], None], **kw) -> subprocess.CompletedProcess:
    say("  $ " + " ".join(cmd))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{cmd[0]} did not finish within {timeout:.0f}s") from None
    if res.returncode != 0:
        raise SetupError(f"{' '.join(cmd)} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-2000:]}")
    return res


# --- the account PostgreSQL (and so Patroni) runs as ----------------------------------------------------------
class RunAs:
    """``postgres`` when we are root (PostgreSQL refuses root), else ourselves."""

    def __init__(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(os.environ.get("PGHA_PG_USER", "postgres"))
        else:
            entry = pwd.getpwuid(os.geteuid())
        self.name, self.uid, self.gid, self.home = entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir
        self.switching = os.geteuid() == 0 and self.uid != 0

    def popen_kwargs(self) -> dict[str, Any]:
        env = dict(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        kw: dict[str, Any] = {"env": env}
        if self.switching:
            kw.update(user=self.uid, group=self.gid, extra_groups=[])
        return kw

    def chown(self, path: str) -> None:
        if self.switching:
            os.chown(path, self.uid, self.gid)


# --- the venv -------------------------------------------------------------------------------------------------
def patroni_bin() -> str:
    return os.path.join(VENV, "bin", "patroni")


def installed_version(account: RunAs) -> str | None:
    """Patroni's version as the account that runs it sees it, or None when it is missing or unusable."""
    exe = os.path.join(VENV, "bin", "python")
    if not os.path.exists(exe):
        return None
    code = "import patroni.dcs.etcd3, psycopg; from patroni.version import __version__; print(__version__)"
    try:
        res = subprocess.run([exe, "-c", code], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, **account.popen_kwargs())
    except (subprocess.TimeoutExpired, OSError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_patroni(account: RunAs, say: Callable[[str], None] = print) -> str:
    """Install Patroni into VENV when it is missing (bounded; says what it does). Returns its version."""
    version = installed_version(account)
    if version == PATRONI_VERSION:
        return version
    say(f"Patroni {PATRONI_VERSION} is not usable from {VENV} (found: {version}); installing it")
    py = "/usr/bin/python3"
    if not os.path.exists(py):
        raise SetupError("Debian's /usr/bin/python3 is missing: apt-get install -y python3")
    probe = subprocess.run([py, "-c", "import venv, ensurepip"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        if os.geteuid() != 0:
            raise SetupError("python3-venv is missing and we are not root: apt-get install -y python3-venv")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update", "-qq"], 600, say, env=env)
        _run(["apt-get", "install", "-y", "-qq", "python3-venv"], 600, say, env=env)
    if os.path.isdir(VENV):
        say(f"  removing the unusable {VENV}")
        shutil.rmtree(VENV)
    os.makedirs(os.path.dirname(VENV), mode=0o755, exist_ok=True)
    _run([py, "-m", "venv", VENV], 300, say)
    _run([os.path.join(VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check", *REQUIREMENTS], 900,
         say)
    _make_readable(os.path.dirname(VENV))
    version = installed_version(account)
    if version != PATRONI_VERSION:
        raise SetupError(f"after installing, {account.name} still cannot run Patroni {PATRONI_VERSION} from {VENV}"
                         f" (found: {version})")
    say(f"  Patroni {version} installed in {VENV}")
    return version


def _make_readable(top: str) -> None:
    """a+rX on the tree (the account that runs Patroni must read it), and a+x on its parents."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [dirpath] + [os.path.join(dirpath, f) for f in filenames + dirnames]:
            try:
                st = os.lstat(name)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
                extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            os.chmod(name, st.st_mode | extra)
    parent = os.path.dirname(os.path.abspath(top))
    while parent != "/":
        st = os.stat(parent)
        os.chmod(parent, st.st_mode | stat.S_IXOTH)
        parent = os.path.dirname(parent)


# --- a local Patroni cluster ----------------------------------------------------------------------------------
def _yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer (the bench runs with the standard library only): dicts, lists, str, int, bool."""
    pad = "  " * indent
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:\n{_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}\n")
        return "".join(out)
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, dict):
                body = _yaml(v, indent + 1)
                out.append(f"{pad}- {body.lstrip()}")
            else:
                out.append(f"{pad}- {_scalar(v)}\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (dict, list)):
        return "{}" if isinstance(v, dict) else "[]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class PatroniCluster:
    scope = "pgha-bench"
    namespace = "/service"

    def __init__(self, root: str, nodes: int, base_port: int, timing: dict[str, int] | None,
                 account: RunAs, say: Callable[[str], None] = print) -> None:
        self.root, self.nodes, self.base_port, self.timing = root, nodes, base_port, timing
        self.account, self.say = account, say
        self.etcd_proc: subprocess.Popen | None = None
        self.agents: dict[str, subprocess.Popen] = {}

    # layout, the same as pgha's Layout
    @property
    def etcd_port(self) -> int:
        return self.base_port + 200

    @property
    def etcd_peer_port(self) -> int:
        return self.base_port + 201

    def ports(self) -> list[int]:
        return ([self.base_port + i for i in range(self.nodes)] + [self.base_port + 100 + i for i in range(self.nodes)]
                + [self.etcd_port, self.etcd_peer_port])

    def name(self, i: int) -> str:
        return f"node{i}"

    def node_dir(self, i: int) -> str:
        return os.path.join(self.root, self.name(i))

    def data_dir(self, i: int) -> str:
        return os.path.join(self.node_dir(i), "data")

    def log(self, i: int) -> str:
        return os.path.join(self.node_dir(i), "patroni.log")

    def config(self, i: int, pw: dict[str, str]) -> dict[str, Any]:
        host = "127.0.0.1"
        pg, api = self.base_port + i, self.base_port + 100 + i
        dcs: dict[str, Any] = dict(self.timing or {})  # None: Patroni's defaults (ttl 30, loop_wait 10, retry 10)
        dcs.update({"maximum_lag_on_failover": 1048576,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                   "parameters": {"wal_log_hints": "on", "max_wal_senders": 10}}})
        return {
            "scope": self.scope,
            "namespace": self.namespace,
            "name": self.name(i),
            "restapi": {"listen": f"{host}:{api}", "connect_address": f"{host}:{api}"},
            "etcd3": {"hosts": f"{host}:{self.etcd_port}"},
            "bootstrap": {"dcs": dcs, "initdb": [{"encoding": "UTF8"}, "data-checksums"]},
            "postgresql": {
                "listen": f"{host}:{pg}",
                "connect_address": f"{host}:{pg}",
                "data_dir": self.data_dir(i),
                "bin_dir": BIN_DIR,
                "pgpass": os.path.join(self.node_dir(i), "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": pw["superuser"]},
                    "replication": {"username": "replicator", "password": pw["replication"]},
                    "rewind": {"username": "rewind_user", "password": pw["rewind"]},
                },
                "parameters": {"unix_socket_directories": self.node_dir(i), "shared_buffers": "64MB"},
                "pg_hba": ["local all all peer",
                           f"host all all {host}/32 scram-sha-256",
                           f"host replication replicator {host}/32 scram-sha-256"],
            },
        }

    def write_files(self) -> None:
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        os.chmod(self.root, 0o755)
        pw = {role: secrets.token_urlsafe(18) for role in ("superuser", "replication", "rewind")}
        for i in range(self.nodes):
            d = self.node_dir(i)
            os.makedirs(d, mode=0o700, exist_ok=True)
            self.account.chown(d)
            path = os.path.join(d, "patroni.yml")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(_yaml(self.config(i, pw)))
            self.account.chown(path)

    def start_etcd(self) -> subprocess.Popen:
        self.etcd_proc = benchlib.start_etcd(os.path.join(self.root, "etcd"), self.etcd_port, self.etcd_peer_port,
                                             os.path.join(self.root, "etcd.log"))
        return self.etcd_proc

    def start_agents(self) -> None:
        for i in range(self.nodes):
            with open(self.log(i), "ab") as log:
                self.account.chown(self.log(i))
                proc = subprocess.Popen([patroni_bin(), os.path.join(self.node_dir(i), "patroni.yml")],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.node_dir(i),
                                        start_new_session=True, **self.account.popen_kwargs())
            self.agents[self.name(i)] = proc

    def agent_pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.agents.items()}

    def agents_alive(self) -> bool:
        return all(p.poll() is None for p in self.agents.values())

    def stop(self) -> None:
        """Patroni agents (SIGTERM: each stops its PostgreSQL), then any PostgreSQL left behind (pg_ctl stop -m
        immediate, as its account), then etcd. All by PID, each wait bounded."""
        benchlib.stop_pids([p.pid for p in self.agents.values()], timeout=60)
        for p in self.agents.values():
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        for i in range(self.nodes):
            pid = postmaster_pid(self.data_dir(i))
            if pid and benchlib.pid_alive(pid):
                self.say(f"    stopping the PostgreSQL Patroni left in {self.data_dir(i)} (pid {pid})")
                try:
                    subprocess.run([os.path.join(BIN_DIR, "pg_ctl"), "stop", "-D", self.data_dir(i), "-m",
                                    "immediate", "-w", "-t", "30"], capture_output=True, timeout=60,
                                   stdin=subprocess.DEVNULL, **self.account.popen_kwargs())
                except subprocess.TimeoutExpired:
                    pass
                if benchlib.pid_alive(pid):
                    benchlib.stop_pids([pid], timeout=10)
        if self.etcd_proc is not None:
            benchlib.stop_pids([self.etcd_proc.pid], timeout=20)
            try:
                self.etcd_proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


def postmaster_pid(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def versions(account: RunAs) -> dict[str, str]:
    out = {"patroni": installed_version(account) or "missing"}
    try:
        res = subprocess.run([os.path.join(VENV, "bin", "python"), "-c",
                              "import sys, psycopg; print(sys.version.split()[0], psycopg.__version__)"],
                             capture_output=True, text=True, timeout=60, **account.popen_kwargs())
        py, psy = res.stdout.split()
        out.update(patroni_python=py, patroni_psycopg=psy)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass
    return out

