"""Pieces of the verifier benchmark (bench/verify_bench.py): the verifier's ``Target`` for the bench's Patroni
cluster, one verifier run of one fault against either system, and the machine's facts.

``PatroniTarget`` is what ``pgha.verify.target`` leaves to bench/: a ``CtlTarget`` (it reads the cluster through
the DCS keys Patroni writes, `/service/<scope>/leader`, `members/<name>`, `config`, with node0's patroni.yml as
the ctl config) that also serves the ``processes`` faults, as ``LocalTarget`` does for pgha: the Patroni process
of a member (the Popen failover_lib's PatroniSystem started), its postmaster (data/postmaster.pid), etcd's PID,
and restarts of a Patroni process or of etcd, each followed by a bounded wait until healthy.

Rules: only 127.0.0.1; every wait is bounded in count and time; processes are ended by the PID we started or read
from the cluster's own files (state.json, postmaster.pid), never by name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from psycopg.conninfo import make_conninfo

import benchlib
import failover_lib as fl
import patroni_env
import switchover_lib as sl

HOST = "127.0.0.1"


# --- the verifier's targets ----------------------------------------------------------------------------------
def patroni_target_class():
    """``PatroniTarget``, defined once pgha is importable (bench scripts import pgha from a snapshot of src/,
    after this module is loaded)."""
    global _PATRONI_TARGET
    if _PATRONI_TARGET is not None:
        return _PATRONI_TARGET
    from pgha.verify.target import CtlTarget, TargetError

    class PatroniTarget(CtlTarget):
        """The bench's local Patroni cluster (failover_lib.PatroniSystem, or switchover_lib's PatroniBehindHaproxy)
        as a verifier target: the API and SQL faults of ``CtlTarget`` plus the ``processes`` ones."""

        kind = "patroni-bench"
        capabilities = frozenset({"api", "sql", "processes"})

        def __init__(self, system: fl.PatroniSystem, dsn: str | None = None) -> None:
            super().__init__(os.path.join(system.node_dir(0), "patroni.yml"))
            self.system = system
            self.dsn = dsn
            self._nodes = system.nodes

        def _index(self, name: str) -> int:
            for i in range(self.system.nodes):
                if name == f"node{i}":
                    return i
            raise TargetError(f"{name} is not a node of {self.system.root}")

        # access: the superuser's password is in patroni.yml (Patroni's pgpass file holds the replication login)
        def node_conninfo(self, name: str) -> str:
            return make_conninfo(host=HOST, port=str(self.system.pg_port(self._index(name))), user="postgres",
                                 password=self.system.password, dbname="postgres")

        def default_dsn(self) -> str:
            if self.dsn:
                return self.dsn
            return fl.conninfo(self.system.ports, self.system.password)

        # processes
        def agent_pid(self, name: str) -> int | None:
            return self.system.agent_pid(self._index(name))   # the Popen's pid while it has not exited

        def postmaster_pid(self, name: str) -> int | None:
            pid = patroni_env.postmaster_pid(self.system.data_dir(self._index(name)))
            return pid if benchlib.pid_alive(pid) else None

        def dcs_pids(self) -> list[int]:
            proc = self.system.cluster.etcd_proc
            return [proc.pid] if proc is not None and proc.poll() is None else []

        def _wait_healthy(self, timeout: float, what: str) -> None:
            deadline = time.monotonic() + max(1.0, timeout)
            for _ in range(int(max(1.0, timeout) / 0.2) + 2):
                if self.healthy():
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            raise TargetError(f"{what}: the cluster was not healthy again within {timeout:.0f}s")

        def start_agent(self, name: str, timeout: float) -> None:
            """Start the member's Patroni process again (as the postgres account), then wait until healthy."""
            i = self._index(name)
            try:
                self.system.start_agent(i)
            except OSError as e:
                raise TargetError(f"starting Patroni on {name}: {e}") from None
            self._wait_healthy(timeout, f"Patroni restarted on {name}")

        def start_dcs(self, timeout: float) -> None:
            """etcd again, on its data directory and ports (its single member keeps its data), then healthy."""
            c = self.system.cluster
            if c.etcd_proc is not None and c.etcd_proc.poll() is None:
                return
            t0 = time.monotonic()
            proc = c.start_etcd()
            try:
                benchlib.wait_etcd_healthy(c.etcd_port, proc, timeout=min(30.0, max(1.0, timeout)))
            except (RuntimeError, TimeoutError) as e:
                raise TargetError(f"etcd: {e}") from None
            self._wait_healthy(timeout - (time.monotonic() - t0), "etcd restarted")

    _PATRONI_TARGET = PatroniTarget
    return PatroniTarget


_PATRONI_TARGET = None


def rw_dsn(system: fl.System) -> str:
    """HAProxy's read-write listener (P+300) of either system, with the superuser's password. The verifier adds
    its own connect_timeout (2 s), statement_timeout (3 s) and application_name: the same for both."""
    return make_conninfo(host=HOST, port=str(system.base_port + 300), user="postgres", password=system.password,
                         dbname="postgres")


def make_target(system: fl.System):
    """A fresh verifier target for ``system`` (one per run: each holds its own DCS clients, closed after)."""
    if hasattr(system, "make_target"):   # bench/patroni_netns.py's systems (both kinds)
        return system.make_target(rw_dsn(system))
    if system.kind == "pgha":
        from pgha.verify.target import LocalTarget
        return LocalTarget(system.layout.root)
    return patroni_target_class()(system, rw_dsn(system))


# --- one run -------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    system: str                     # "pgha" | "patroni"
    row: str
    scenario: str                   # the verifier's fault name
    run: int
    window_s: float = 0.0
    seed: int = 0
    busy_before_pct: float = 0.0
    leader_before: str = ""
    leaders_seen: list[str] = field(default_factory=list)   # the DCS leader, each change, during the run
    verify_run: str = ""
    unavailability_s: float | None = None
    longest_gap_s: float | None = None
    recovered: bool | None = None
    gap_from_s: float | None = None     # last commit before the gap, s after the fault acted (negative: before)
    gap_to_s: float | None = None       # first commit after it, s after the fault acted
    failed_tx: int | None = None
    unknown_outcome: int | None = None
    lost_acked: int | None = None
    lost_acked_before_fault: int | None = None
    in_doubt: int | None = None
    acked: int | None = None
    invariant_ok: bool | None = None
    ledger_matches_balances: bool | None = None
    overlapping_writers: int | None = None
    writers: list[str] = field(default_factory=list)
    healed_after_s: float | None = None  # the fault's own recovery (restart, SIGCONT, healthy) after it acted
    fault_note: str = ""
    fault_error: str = ""
    heal_s: float | None = None          # the bench's heal after the run (restart, streaming, HAProxy routed)
    rebuilt: bool = False
    error: str = ""


def _rel(value: float | None, ref: float | None) -> float | None:
    return None if value is None or ref is None else round(value - ref, 3)


def one_run(system: fl.System, row: str, scenario: str, run: int, window: float, seed: int, args,
            logdir: str, say: Callable[[str], None]) -> RunResult:
    """One verifier run (setup, the workload for ``window`` s with ``scenario`` injected ``lead`` s in, the final
    read and the accounting), then the bench's heal. Figures from the verifier's JSON; that JSON and every node's
    log from the run are kept in ``logdir``."""
    from pgha.verify.render import to_json
    from pgha.verify.runner import Settings, Verifier
    res = RunResult(system=system.kind, row=row, scenario=scenario, run=run, window_s=window, seed=seed)
    res.busy_before_pct = benchlib.wait_quiet(args.quiet_below, args.quiet_wait, say=say)
    leader = sl.wait_routed(system, 30)
    res.leader_before = f"node{leader}"
    stem = os.path.join(logdir, f"{row}-{scenario}-{run}")
    offsets = system.log_offsets()
    target = make_target(system)
    try:
        settings = Settings(dsns=[rw_dsn(system)], clients=args.clients, seed=seed, rate=args.rate,
                            min_gap=args.min_gap, dcs_outage=getattr(args, "dcs_outage", None))
        verifier = Verifier(settings, target, say=lambda line: say(f"    verify: {line}"))
        verifier.setup(timeout=30.0)
        res.verify_run = verifier.run_id
        verifier.run([scenario], window)
        result = verifier.finish()
        data = to_json(result)
    except Exception as e:  # noqa: BLE001 (VerifyError, TimeoutError, psycopg errors: the run reports it)
        res.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        data = None
    finally:
        target.close()
    if data is not None:
        with open(f"{stem}-verify.json", "w") as f:
            json.dump(data, f, indent=2)
        fig = data["faults"][0]
        inj = fig.get("injected_at")
        res.unavailability_s, res.longest_gap_s = fig["unavailability_s"], fig["longest_gap_s"]
        res.recovered = fig["recovered"]
        res.gap_from_s = _rel(fig.get("last_commit_before"), inj)
        res.gap_to_s = _rel(fig.get("first_commit_after"), inj)
        res.failed_tx, res.unknown_outcome = fig["failed_tx"], fig["unknown_outcome"]
        res.lost_acked, res.lost_acked_before_fault = fig["lost_acked"], fig["lost_acked_before_fault"]
        res.in_doubt, res.acked = fig["in_doubt"], fig["acked"]
        res.invariant_ok = fig["invariant_ok"]
        res.ledger_matches_balances = data.get("ledger_matches_balances")
        res.overlapping_writers = len(fig.get("overlapping_writers") or [])
        res.writers = [f"{w['node']} tl{w['timeline']}: {w['commits']}" for w in data.get("writers", [])]
        res.leaders_seen = [c["leader"] for c in data.get("leader_changes", [])]
        res.healed_after_s = _rel(fig.get("healed_at"), inj)
        res.fault_note, res.fault_error = fig.get("note") or "", fig.get("error") or ""
        if inj is None:
            res.error = (res.error + "; " if res.error else "") + f"fault not injected: {res.fault_error}"
    t_heal = time.monotonic()
    try:
        system.heal(args.heal_timeout)
        sl.wait_routed(system, 30)
        res.heal_s = time.monotonic() - t_heal
    except Exception as e:  # noqa: BLE001 (the caller rebuilds)
        res.error = (res.error + "; " if res.error else "") + f"heal failed: {e}"
    for i, text in system.log_since(offsets).items():
        with open(f"{stem}-node{i}.log", "w") as f:
            f.write(text)
    return res


def pick_base_port(first: int, seq: int, nodes: int) -> int:
    """A base port whose ports (P+i, P+100+i, P+200, P+201, P+300..302) are all free; rotates between clusters."""
    for k in range(16):
        base = first + ((seq + k) % 16) * 400
        ports = ([base + i for i in range(nodes)] + [base + 100 + i for i in range(nodes)]
                 + [base + 200, base + 201, base + 300, base + 301, base + 302])
        if not benchlib.ports_free(ports):
            return base
    raise SystemExit(f"no free port range found from {first} (16 tried)")


# --- the machine ---------------------------------------------------------------------------------------------
def machine_facts(account: patroni_env.RunAs, src_hash: str | None, git: bool = True) -> dict[str, str]:
    """bootstrap.machine_facts, plus HAProxy's version; ``git`` False: without reading the commit (no git)."""
    import bootstrap
    if git:
        facts = bootstrap.machine_facts(account, src_hash)
    else:
        facts = _facts_without_git(account, src_hash)
    try:
        from pgha.router.process import haproxy_binary
        out = subprocess.run([haproxy_binary() or "haproxy", "-v"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        facts["haproxy"] = " ".join(out.stdout.split()[:3])
    except (OSError, subprocess.SubprocessError):
        facts["haproxy"] = "HAProxy (version unknown)"
    return facts


def _facts_without_git(account: patroni_env.RunAs, src_hash: str | None) -> dict[str, str]:
    """The same facts as bootstrap.machine_facts, the commit left out."""
    import bootstrap

    def first_line(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            return (res.stdout or res.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "unknown"

    mem = cpu = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pgha, *_ = bootstrap.import_pgha()
    facts = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem, "kernel": platform.release(),
        "postgresql": first_line([os.path.join(patroni_env.BIN_DIR, "postgres"), "--version"]),
        "etcd": first_line([benchlib.etcd_binary(), "--version"]),
        "pgha": f"{pgha.__version__} (commit not read{f'; src/ snapshot sha256 {src_hash}' if src_hash else ''}),"
                f" Python {platform.python_version()}",
    }
    with open("/proc/loadavg") as f:
        facts["load_before"] = " ".join(f.read().split()[:3])
    pv = patroni_env.versions(account)
    facts["patroni"] = (f"{pv.get('patroni')} (Python {pv.get('patroni_python', '?')}, "
                        f"psycopg {pv.get('patroni_psycopg', '?')}, etcd3 API)")
    return facts


def load_results(rows: list[dict[str, Any]]) -> list[RunResult]:
    known = set(RunResult.__dataclass_fields__)
    return [RunResult(**{k: v for k, v in r.items() if k in known}) for r in rows]
