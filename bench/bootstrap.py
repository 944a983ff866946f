#!/usr/bin/env python3
"""Bootstrap benchmark: pgha beside Patroni 4.1.5, in the same run, on this machine, on 127.0.0.1 only.

For each configuration (system x timing), each run, from a clean directory (fresh initdb):
1. the time from etcd's start until the DCS shows one leader and N-1 replicas streaming (the leader key, and
   ``replication_state: streaming`` in the other ``members/<name>`` values under /service/<scope>/, which both
   systems write), polled every 0.1 s with a deadline; also when the leader key first appeared;
2. each agent's RSS (VmRSS, /proc/PID/status, at the end of the idle window; and VmHWM, its peak) and its idle
   CPU % (utime+stime from /proc/PID/stat over a 30 s window right after the cluster streams, divided by wall
   time). The agent is the pgha agent process or the Patroni process, not PostgreSQL.

Runs are interleaved (A B C D A B C D ...) so that drift of the machine hits every configuration alike.

pgha's cluster is started with ``LocalCluster(Layout(...)).up(timing=...)`` (what ``pgha up`` runs), in a thread
while this process polls the DCS: t0 is taken right before up(), which writes the node configs and starts etcd
first. Patroni's: node configs written first, then t0, etcd started, waited healthy, the N Patroni processes
started at once (as the ``postgres`` account when run as root). Patroni is installed into
/opt/pgha-bench/patroni-venv when missing (see patroni_env.py).

    python bench/bootstrap.py --runs 3 --out docs/BENCHMARKS.md

Everything started is stopped by PID (SIGTERM, then SIGKILL after a bounded wait), every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SRC = os.path.join(REPO, "src")
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import patroni_env  # noqa: E402

SECTION = "## Bootstrap: time to a streaming 3-node cluster, agent RSS and idle CPU"

MATCHED = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3}             # the fastest Patroni accepts (min ttl 20, ...)
PATRONI_DEFAULT_VALUES = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}

# name -> (system, timing given to it (None: the system's own defaults, nothing set: for pgha, what `pgha up`
# writes, pgha.local.cluster.DEFAULT_TIMING; for Patroni, 30 / 10 / 10), label)
CONFIGS: dict[str, tuple[str, dict[str, int] | None, str]] = {
    "pgha-default": ("pgha", None, "pgha's defaults (not set)"),
    "pgha-matched": ("pgha", MATCHED, "matched"),
    "patroni-matched": ("patroni", MATCHED, "matched"),
    "pgha-patroni-defaults": ("pgha", PATRONI_DEFAULT_VALUES, "Patroni's default values, set explicitly"),
    "patroni-default": ("patroni", None, "Patroni's defaults (not set)"),
}


def say(line: str) -> None:
    print(line, flush=True)


class Stop(Exception):
    pass


def _on_term(signum, frame):  # noqa: ARG001
    raise Stop(f"signal {signum}")


# --- pgha -----------------------------------------------------------------------------------------------------
PGHA_SRC: str | None = None   # where pgha is imported from (a snapshot of src/ taken at the start), or installed


def snapshot_src(workdir: str) -> tuple[str, str]:
    """Copy this checkout's src/pgha to WORKDIR/pgha-src, so every run measures the same code even while
    src/ is being edited. Returns (the directory to import from, a short sha256 of its .py files)."""
    import hashlib
    dest = os.path.join(workdir, "pgha-src")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(os.path.join(SRC, "pgha"), os.path.join(dest, "pgha"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.chmod(dest, 0o755)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(os.path.join(dest, "pgha"))):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, dest).encode() + b"\0")
                with open(path, "rb") as f:
                    h.update(f.read() + b"\0")
    return dest, h.hexdigest()[:12]


def use_pgha_from(path: str | None) -> None:
    """Import pgha from ``path`` (and hand it to the agents through PYTHONPATH), or as installed when None."""
    global PGHA_SRC
    PGHA_SRC = path
    if path:
        sys.path.insert(0, path)
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = path + (os.pathsep + old if old else "")


def import_pgha():
    try:
        import pgha
        from pgha.local.cluster import LocalCluster
        from pgha.local.layout import SCOPE, Layout, read_state
        for mod in ("pgha.postgres.control", "pgha.config"):  # what LocalCluster.down() imports lazily
            try:
                __import__(mod)
            except ImportError:
                pass
    except ImportError as e:
        raise SystemExit(f"cannot import pgha ({e}): run scripts/install.sh and use .venv/bin/python, "
                         "or install pgha's dependencies (psycopg, PyYAML, click, requests)") from None
    if PGHA_SRC and not os.path.abspath(pgha.__file__).startswith(PGHA_SRC + os.sep):
        raise SystemExit(f"pgha was imported from {pgha.__file__}, not from {PGHA_SRC}")
    return pgha, LocalCluster, Layout, SCOPE, read_state


def run_pgha(root: str, nodes: int, base_port: int, timing: dict[str, int] | None, timeout: float, idle: float,
             log: list[str]) -> dict[str, Any]:
    _, LocalCluster, Layout, SCOPE, read_state = import_pgha()
    layout = Layout(root, nodes, base_port)
    cluster = LocalCluster(layout, say=lambda line: log.append(line))
    outcome: dict[str, Any] = {}

    def up() -> None:
        try:
            cluster.up(timeout=timeout, timing=dict(timing) if timing else None)
            outcome["up_returned"] = time.monotonic() - t0
        except BaseException as e:  # noqa: BLE001 (reported, the run fails)
            outcome["error"] = f"{type(e).__name__}: {e}"

    result: dict[str, Any] = {}
    known: list[int] = []   # agents' and etcd's PIDs, read from state.json while it exists: a fallback for down()
    t0 = time.monotonic()
    thread = threading.Thread(target=up, name="pgha-up", daemon=True)
    thread.start()
    try:
        ms = benchlib.poll_until_streaming(layout.etcd_port, "/service", SCOPE, nodes, t0, t0 + timeout,
                                           alive=lambda: thread.is_alive() or "error" not in outcome,
                                           say=say)
        result.update(leader_s=ms.leader, running_s=ms.running, streaming_s=ms.streaming, last=ms.last)
        thread.join(timeout=max(1.0, t0 + timeout + 5 - time.monotonic()))
        result["up_returned_s"] = outcome.get("up_returned")
        if ms.streaming is None:
            result["error"] = outcome.get("error") or f"not streaming within {timeout:.0f}s ({ms.last})"
            result["logs"] = {f"node{i}": benchlib.tail(os.path.join(layout.node_dir(i), "agent.log"), 25)
                              for i in range(nodes)}
            return result
        state = read_state(layout)
        pids = {n: int(p) for n, p in state.get("agents", {}).items()}
        known.extend(list(pids.values()) + ([int(state["etcd_pid"])] if state.get("etcd_pid") else []))
        say(f"    streaming after {ms.streaming:.2f}s; idle window {idle:.0f}s over agents {pids}")
        result["agents"] = benchlib.idle_window(pids, idle)
        return result
    finally:
        try:
            cluster.down()
        except Exception as e:  # noqa: BLE001
            say(f"    pgha down failed: {e}; stopping the PIDs recorded at start-up instead: {known}")
            benchlib.stop_pids(known[:-1], timeout=90)   # agents (each stops its PostgreSQL), then etcd
            benchlib.stop_pids(known[-1:], timeout=20)
        if thread.is_alive():  # interrupted while up() still runs: let it end, then stop what it started
            thread.join(timeout=timeout)
            cluster.down()


# --- Patroni ----------------------------------------------------------------------------------------------------
def run_patroni(root: str, nodes: int, base_port: int, timing: dict[str, int] | None, timeout: float, idle: float,
                account: patroni_env.RunAs) -> dict[str, Any]:
    cluster = patroni_env.PatroniCluster(root, nodes, base_port, timing, account, say=say)
    cluster.write_files()
    result: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        proc = cluster.start_etcd()
        benchlib.wait_etcd_healthy(cluster.etcd_port, proc, timeout=30)
        cluster.start_agents()
        ms = benchlib.poll_until_streaming(cluster.etcd_port, cluster.namespace, cluster.scope, nodes, t0,
                                           t0 + timeout, alive=cluster.agents_alive, say=say)
        result.update(leader_s=ms.leader, running_s=ms.running, streaming_s=ms.streaming, last=ms.last)
        if ms.streaming is None:
            dead = [n for n, p in cluster.agents.items() if p.poll() is not None]
            result["error"] = (f"not streaming within {timeout:.0f}s ({ms.last})" if not dead
                               else f"Patroni exited: {', '.join(dead)} ({ms.last})")
            result["logs"] = {cluster.name(i): benchlib.tail(cluster.log(i), 25) for i in range(nodes)}
            return result
        pids = cluster.agent_pids()
        say(f"    streaming after {ms.streaming:.2f}s; idle window {idle:.0f}s over agents {pids}")
        result["agents"] = benchlib.idle_window(pids, idle)
        return result
    finally:
        cluster.stop()


# --- summary --------------------------------------------------------------------------------------------------
def spread(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def pgha_default_timing() -> dict[str, int]:
    from pgha.local.cluster import DEFAULT_TIMING
    return dict(DEFAULT_TIMING)


def timing_text(timing: dict[str, int] | None, system: str = "patroni") -> str:
    t = timing or (pgha_default_timing() if system == "pgha" else PATRONI_DEFAULT_VALUES)
    return f"{t['ttl']} / {t['loop_wait']} / {t['retry_timeout']}"


def machine_facts(account: patroni_env.RunAs, src_hash: str | None) -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            return (res.stdout or res.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "unknown"

    mem = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pgha, *_ = import_pgha()
    commit = first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        dirty = ""
    facts = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "postgresql": first_line([os.path.join(patroni_env.BIN_DIR, "postgres"), "--version"]),
        "etcd": first_line([benchlib.etcd_binary(), "--version"]),
        "pgha": f"{pgha.__version__} (commit {commit}{', with uncommitted changes under src/' if dirty else ''}"
                f"{f'; src/ snapshot sha256 {src_hash}' if src_hash else ''}), Python {platform.python_version()}",
    }
    with open("/proc/loadavg") as f:
        facts["load_before"] = " ".join(f.read().split()[:3])
    pv = patroni_env.versions(account)
    facts["patroni"] = (f"{pv.get('patroni')} (Python {pv.get('patroni_python', '?')}, "
                        f"psycopg {pv.get('patroni_psycopg', '?')}, etcd3 API)")
    return facts


def render(results: list[dict[str, Any]], configs: list[str], facts: dict[str, str], args, command: str) -> str:
    lines = [SECTION, ""]
    lines += [f"Produced by `{command}` (from the repository root), {facts['date']}.", ""]
    lines += ["Machine: "
              f"`nproc` {facts['nproc']} ({facts['cpu']}), {facts['memory']} memory, Linux {facts['kernel']}, "
              f"loopback only. {facts['postgresql']}; {facts['etcd']} (one member); "
              f"Patroni {facts['patroni']}; pgha {facts['pgha']}. Load average (1/5/15 min) before the "
              f"run {facts['load_before']}, after it {facts['load_after']}.", ""]
    lines += [
        f"What: a {args.nodes}-node cluster from a clean directory (fresh initdb, data checksums), the same "
        "PostgreSQL settings for both (shared_buffers 64MB, use_slots, use_pg_rewind, wal_log_hints, the same "
        "pg_hba), all on 127.0.0.1. **Streaming** is the time from etcd's start until the DCS shows the leader "
        f"key and {args.nodes - 1} members with `replication_state: streaming` (polled every 0.1 s from etcd; "
        "**leader** is when the leader key first appeared, **all running** when a leader and all members showed "
        "`state: running`, before the replicas report streaming). Patroni: configs written, then the clock starts, "
        "etcd started and waited healthy, the Patroni processes started together, as the `postgres` account. "
        "pgha: the clock starts right before `LocalCluster(...).up(timing=...)` (what `pgha up` runs), which "
        "writes its node configs, starts etcd, waits for it and starts the agents (as root; PostgreSQL as "
        f"`postgres`). **RSS** is the agent process's VmRSS at the end of a {args.idle:.0f} s idle window that "
        "starts as soon as the cluster streams (peak: its VmHWM); **idle CPU** is its utime+stime over that "
        "window divided by the window's wall time (100 % = one core). The agent is the pgha agent / the Patroni "
        "process, not PostgreSQL; an agent's own child processes other than PostgreSQL (pgha's fencer, which "
        "runs beside the leader's agent) are measured apart, in the last column (summed per agent). RSS and CPU "
        "pool all agents of all runs of a row. Runs are interleaved across rows;"
        f" before each, the script waits (up to {args.quiet_wait:.0f} s) for the machine to be under "
        f"{args.quiet_below:.0f} % busy, and records how busy it was (a run that still had to start above that "
        "is counted as *under load*; it is in the figures all the same). Figures: median (min–max).", ""]
    lines += ["| system | timing: ttl / loop_wait / retry_timeout | runs ok | leader, s | all running, s | "
              f"**{args.nodes} nodes streaming, s** | agent RSS, MB | agent peak RSS, MB | agent idle CPU, % | "
              "agents' helper processes: RSS, MB / idle CPU, % |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in configs:
        system, timing, label = CONFIGS[name]
        rows = [r for r in results if r["config"] == name]
        ok = [r for r in rows if r.get("agents")]
        loaded = sum(1 for r in rows if r.get("busy_before_pct", 0) >= args.quiet_below)
        agents = [a for r in ok for a in r["agents"].values()]
        lines.append(
            f"| {'Patroni' if system == 'patroni' else 'pgha'} | {timing_text(timing, system)} ({label}) | "
            f"{len(ok)}/{len(rows)}{f' ({loaded} under load)' if loaded else ''} | "
            f"{spread([r.get('leader_s') for r in ok], '{:.2f}')} | "
            f"{spread([r.get('running_s') for r in ok], '{:.2f}')} | "
            f"**{spread([r.get('streaming_s') for r in ok], '{:.2f}')}** | "
            f"{spread([a['rss_mb'] for a in agents], '{:.1f}')} | "
            f"{spread([a['rss_peak_mb'] for a in agents], '{:.1f}')} | "
            f"{spread([a['cpu_pct'] for a in agents], '{:.2f}')} | {helpers_text(agents)} |")
    lines += ["", "Each run, in the order run (per agent: RSS MB / idle CPU %):", ""]
    lines += ["| run | row | machine busy before, % | leader, s | all running, s | streaming, s | agents |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        system, timing, label = CONFIGS[r["config"]]
        busy = r.get("busy_before_pct", 0)
        head = (f"| {r['run']} | {system}, {label} | {busy:.0f}"
                f"{' (under load)' if busy >= args.quiet_below else ''} |")
        if r.get("agents"):
            per = ", ".join(f"{n} {a['rss_mb']:.1f} / {a['cpu_pct']:.2f}" for n, a in sorted(r["agents"].items()))
            times = " | ".join("-" if r.get(k) is None else f"{r[k]:.2f}" for k in ("leader_s", "running_s",
                                                                                    "streaming_s"))
            lines.append(f"{head} {times} | {per} |")
        else:
            err = str(r.get("error", "failed")).replace("|", "/").replace("\n", " ")[:200]
            lines.append(f"{head} - | - | failed | {err} |")
    lines.append("")
    return "\n".join(lines)


def helpers_text(agents: list[dict[str, Any]]) -> str:
    """The agents' own helper processes, over the agents that had any (pgha's fencer runs on the leader only)."""
    with_helpers = [a for a in agents if a.get("helpers")]
    if not with_helpers:
        return "none"
    rss = spread([a["helpers_rss_mb"] for a in with_helpers], "{:.1f}")
    cpu = spread([a["helpers_cpu_pct"] for a in with_helpers], "{:.2f}")
    return f"on {len(with_helpers)} of {len(agents)} agents: {rss} / {cpu}"


def write_section(path: str, section: str) -> None:
    benchlib.write_section(path, SECTION, section)

# --- main -----------------------------------------------------------------------------------------------------
def pick_base_port(first: int, seq: int, nodes: int) -> int:
    """A base port whose ports (P+i, P+100+i, P+200, P+201) are all free; rotates so runs do not reuse ports."""
    for k in range(16):
        base = first + ((seq + k) % 16) * 400
        ports = [base + i for i in range(nodes)] + [base + 100 + i for i in range(nodes)] + [base + 200, base + 201]
        if not benchlib.ports_free(ports):
            return base
    raise SystemExit(f"no free port range found from {first} (16 tried)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="repetitions of each configuration (default 3)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--idle", type=float, default=30.0, help="idle window in seconds (default 30)")
    ap.add_argument("--timeout", type=float, default=180.0, help="deadline for one cluster to stream (s)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, from: {', '.join(CONFIGS)} (default: all)")
    ap.add_argument("--base-port", type=int, default=21000)
    ap.add_argument("--quiet-below", type=float, default=15.0,
                    help="before each run, wait until the machine is under this CPU busy %% (default 15)")
    ap.add_argument("--quiet-wait", type=float, default=600.0,
                    help="... but no longer than this many seconds (default 600); a run that had to start above "
                         "it is marked 'under load'")
    ap.add_argument("--workdir", default="/tmp/pgha-bench", help="runs happen in WORKDIR/<config>-<run>")
    ap.add_argument("--keep-failed", action="store_true", help="keep the directory of a failed run")
    ap.add_argument("--pgha-from", choices=("snapshot", "installed"), default="snapshot",
                    help="snapshot: copy this checkout's src/ at the start and run that (default); "
                         "installed: the pgha the interpreter imports")
    ap.add_argument("--out", help="markdown file to write our section into (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write every run's raw figures here")
    args = ap.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        ap.error(f"unknown configs: {unknown}; choose from {list(CONFIGS)}")
    if args.runs < 1 or args.nodes < 2:
        ap.error("--runs >= 1 and --nodes >= 2")
    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]) \
        if argv is None else "bootstrap.main(" + repr(argv) + ")"

    signal.signal(signal.SIGTERM, _on_term)
    account = patroni_env.RunAs()
    os.makedirs(args.workdir, mode=0o755, exist_ok=True)
    os.chmod(args.workdir, 0o755)
    src_hash = None
    if args.pgha_from == "snapshot":
        path, src_hash = snapshot_src(args.workdir)
        use_pgha_from(path)
        say(f"pgha: running a snapshot of {SRC} taken now, in {path} (sha256 of its .py files {src_hash})")
    if any(CONFIGS[c][0] == "patroni" for c in configs):
        patroni_env.ensure_patroni(account, say=say)
    if any(CONFIGS[c][0] == "pgha" for c in configs):
        import_pgha()
    facts = machine_facts(account, src_hash)
    say("machine: " + json.dumps(facts))

    results: list[dict[str, Any]] = []
    seq = 0
    try:
        for run in range(1, args.runs + 1):
            for name in configs:
                system, timing, label = CONFIGS[name]
                root = os.path.join(args.workdir, f"{name}-{run}")
                if os.path.exists(root):
                    shutil.rmtree(root)
                base = pick_base_port(args.base_port, seq, args.nodes)
                seq += 1
                say(f"run {run}/{args.runs}: {system}, {label} (ttl/loop_wait/retry_timeout "
                    f"{timing_text(timing, system)}), dir {root}, base port {base}")
                busy = benchlib.wait_quiet(args.quiet_below, args.quiet_wait, say=say)
                log: list[str] = []
                started = time.monotonic()
                try:
                    if system == "pgha":
                        res = run_pgha(root, args.nodes, base, timing, args.timeout, args.idle, log)
                    else:
                        res = run_patroni(root, args.nodes, base, timing, args.timeout, args.idle, account)
                except Stop:
                    raise
                except Exception as e:  # noqa: BLE001 (a failed run is reported, the others go on)
                    res = {"error": f"{type(e).__name__}: {e}"}
                res.update(config=name, system=system, run=run, timing=timing, wall_s=time.monotonic() - started,
                           busy_before_pct=busy)
                results.append(res)
                if res.get("agents"):
                    a = list(res["agents"].values())
                    rss = ", ".join(f"{x['rss_mb']:.1f}" for x in a)
                    cpu = ", ".join(f"{x['cpu_pct']:.2f}" for x in a)
                    say(f"  -> streaming {res['streaming_s']:.2f}s (leader {res['leader_s']:.2f}s); "
                        f"RSS {rss} MB; CPU {cpu} %")
                    shutil.rmtree(root, ignore_errors=True)
                else:
                    say(f"  -> FAILED: {res.get('error')}")
                    for node, text in (res.get("logs") or {}).items():
                        say(f"  --- {node} log (last lines) ---\n{text.rstrip()}")
                    if log:
                        say("  --- pgha up said ---\n  " + "\n  ".join(log[-15:]))
                    if args.keep_failed:
                        say(f"  kept {root}")
                    else:
                        shutil.rmtree(root, ignore_errors=True)
    except (Stop, KeyboardInterrupt) as e:
        say(f"interrupted ({e or 'Ctrl-C'}); everything started has been stopped; no file written")
        return 130

    if PGHA_SRC and not (args.keep_failed and not all(r.get("agents") for r in results)):
        shutil.rmtree(PGHA_SRC, ignore_errors=True)
    with open("/proc/loadavg") as f:
        facts["load_after"] = " ".join(f.read().split()[:3])
    section = render(results, configs, facts, args, command)
    print("\n" + section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "command": command, "results": results}, f, indent=2)
    if args.out:
        write_section(args.out, section)
        say(f"wrote the section to {args.out}")
    return 0 if all(r.get("agents") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
