#!/usr/bin/env python3
"""Failover benchmark: time from a fault on the leader to the first committed write, pgha beside Patroni 4.1.5 in
the same run, on this machine, on 127.0.0.1 only.

Three faults on a 3-node cluster, injected on the current leader:
  a  node death: SIGKILL the leader's agent and its postmaster, back to back;
  b  PostgreSQL crash: SIGKILL the leader's postmaster only (the agent stays);
  c  graceful stop: SIGTERM the leader's agent (pgha) / Patroni process.

A writer thread inserts one row per transaction (autocommit) through a libpq multi-host string naming all three
nodes with ``target_session_attrs=read-write``, ``connect_timeout=1`` and ``statement_timeout=1s``; after any
error it reconnects (a bounded loop, 50 ms between failed connects). Every commit is timed. The figure is the
first commit through a connection opened after the fault, minus the fault's time. Afterwards the rows of the run
on the node that accepts writes are counted against those the writer saw committed (acknowledged).

Between runs the cluster is healed (the stopped agent / Patroni process restarted; wait for one leader and two
streaming replicas), rebuilt from scratch only if that fails.

Rows: pgha with its defaults (nothing set: ttl 4, loop_wait 1, retry_timeout 1); Patroni at the fastest it
accepts (ttl 20, loop_wait 1, retry_timeout 3); Patroni with its defaults (nothing set: 30 / 10 / 10). Then (d):
pgbench (-c 4 -j 2) against pgha's leader for --load-seconds, checking the leader never changes.

    python bench/failover.py --runs 5 --out docs/BENCHMARKS.md

Everything started is stopped by PID (SIGTERM, then SIGKILL after a bounded wait), every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import bootstrap  # noqa: E402  (pgha snapshot/import, machine facts, spread, port picking)
import failover_lib as fl  # noqa: E402
import patroni_env  # noqa: E402

SECTION = "## Failover: time from the fault to the first committed write"

PATRONI_FASTEST = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3}   # Patroni 4.1.5's minimums (config.py)

# name -> (system, timing given (None: the system's own defaults, nothing set), label)
ROWS: dict[str, tuple[str, dict[str, int] | None, str]] = {
    "pgha-default": ("pgha", None, "pgha's defaults (not set): 4 / 1 / 1"),
    "patroni-fastest": ("patroni", PATRONI_FASTEST, "Patroni's fastest accepted: 20 / 1 / 3"),
    "patroni-default": ("patroni", None, "Patroni's defaults (not set): 30 / 10 / 10"),
    # issue #7: node death in synchronous mode, beside async and beside Patroni's synchronous_mode
    "pgha-sync": ("pgha", {"ttl": 4, "loop_wait": 1, "retry_timeout": 1, "synchronous_mode": "on"},
                  "pgha's defaults, synchronous_mode on"),
    "patroni-sync": ("patroni", {**PATRONI_FASTEST, "synchronous_mode": True},
                     "Patroni's fastest, synchronous_mode on"),
}
FAULTS = {
    "a": "node death (SIGKILL agent + postmaster)",
    "b": "PostgreSQL crash (SIGKILL postmaster)",
    "c": "graceful stop (SIGTERM agent)",
}
TARGETS = {"a": "≤ 5", "b": "≤ 2", "c": "≤ 1"}
PATRONI_REFERENCE = {"a": "≈ 26 (≈ 20 at ttl 20)", "b": "6–9", "c": "≈ 3.5"}
PGBENCH = os.path.join(patroni_env.BIN_DIR, "pgbench")


def say(line: str) -> None:
    print(time.strftime("%H:%M:%S ") + line, flush=True)


class Stop(Exception):
    pass


def _on_term(signum, frame):  # noqa: ARG001
    raise Stop(f"signal {signum}")


# --- one run ------------------------------------------------------------------------------------------------
def one_run(system: fl.System, row: str, fault: str, run: int, args, logdir: str) -> fl.RunResult:
    res = fl.RunResult(system=system.kind, row=row, fault=fault, run=run)
    res.busy_before_pct = benchlib.wait_quiet(args.quiet_below, args.quiet_wait, say=say)
    leader = system.leader()
    if leader is None:
        raise RuntimeError("no leader before the fault")
    res.leader_before = f"node{leader}"
    tag = f"{row}-{fault}-{run}-{int(time.time())}"
    info = fl.conninfo(system.ports, system.password)
    writer = fl.Writer(info, tag, max_seconds=args.fault_timeout + 120)
    writer.start()
    try:
        # steady: at least 1 s of commits through a connection to the leader
        deadline = time.monotonic() + 30
        for _ in range(400):
            commits, conns, _ = writer.snapshot()
            if (conns and conns[-1].port == system.pg_port(leader) and len(commits) >= 20
                    and commits[-1].t - commits[0].t >= 1.0):
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the writer did not settle on the leader node{leader} within 30s "
                                   f"(port {writer.current_port()}, {len(commits)} commits)")
            time.sleep(0.1)
        offsets = system.log_offsets()
        t_fault, what = fl.inject(system, fault, leader)
        say(f"    fault {fault} on node{leader} (agent {what.agent_pid}, postmaster {what.postmaster_pid})")
        found = None
        deadline = t_fault + args.fault_timeout
        for _ in range(int(args.fault_timeout / 0.02) + 2):
            found = writer.first_commit_after(t_fault)
            if found is not None or time.monotonic() >= deadline or not writer.is_alive():
                break
            time.sleep(0.02)
        time.sleep(1.0)   # a little more writing on the new leader
        writer.stop()
        commits, conns, errors = writer.snapshot()
        old = [c for c in conns if c.opened <= t_fault]
        old_serial = old[-1].serial if old else None
        res.late_old_conn_commits = sum(1 for c in commits if c.t > t_fault and c.conn == old_serial)
        after_errors = [(t, e) for t, e in errors if t > t_fault]
        if after_errors:
            res.broke_s = after_errors[0][0] - t_fault
        res.errors_seen = sorted({re.sub(r"\d+", "N", e)[:120] for _, e in after_errors})[:6]
        if found is None:
            res.error = f"no commit within {args.fault_timeout:.0f}s of the fault"
        else:
            commit, conn = found
            res.figure_s = commit.t - t_fault
            idx = system.ports.index(conn.port) if conn.port in system.ports else -1
            res.writer_node_after = f"node{idx}"
        # acknowledged rows against the rows on the node that accepts writes now
        acked = {c.k for c in commits}
        res.acked = len(acked)
        try:
            present, port = fl.rows_present(info, tag, timeout=60)
            res.present = len(present & acked)
            missing = sorted(acked - present)
            res.missing = len(missing)
            at = {c.k: c.t for c in commits}
            res.missing_before_fault = sum(1 for k in missing if at[k] <= t_fault)
            res.missing_ks = missing[:20]
            res.leader_after = f"node{system.ports.index(port)}" if port in system.ports else str(port)
        except Exception as e:  # noqa: BLE001
            res.error = (res.error + "; " if res.error else "") + f"counting rows: {e}"
    finally:
        writer.stop()
    # heal
    t_heal = time.monotonic()
    try:
        system.heal(args.heal_timeout)
        res.heal_s = time.monotonic() - t_heal
    except Exception as e:  # noqa: BLE001 (the caller rebuilds)
        res.error = (res.error + "; " if res.error else "") + f"heal failed: {e}"
    for i, text in system.log_since(offsets).items():
        with open(os.path.join(logdir, f"{row}-{fault}-{run}-node{i}.log"), "w") as f:
            f.write(text)
    return res


# --- (d) no failover under load ---------------------------------------------------------------------------------
def pgbench_load(system: fl.PghaSystem, seconds: int, scale: int, logdir: str) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds, "scale": scale}
    system.heal(180)
    leader = system.leader()
    if leader is None:
        raise RuntimeError("no leader before pgbench")
    out["leader_before"] = f"node{leader}"
    st = system.cluster_state()
    out["timeline_before"] = st.members.get(f"node{leader}", {}).get("timeline") if st else None
    agents = {i: system.agent_pid(i) for i in range(system.nodes)}
    env = dict(os.environ, PGPASSWORD=system.password, PGCONNECT_TIMEOUT="5")
    base = ["-h", fl.HOST, "-p", str(system.pg_port(leader)), "-U", "postgres"]
    say(f"  (d) pgbench -i -s {scale} on node{leader}")
    init = subprocess.run([PGBENCH, "-i", "-q", "-s", str(scale), *base, "postgres"], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)
    if init.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {init.stderr[-500:]}")
    system.wait_streaming(60)
    offsets = system.log_offsets()
    busy_before = benchlib.machine_busy(1.0)
    cpu0 = benchlib._cpu_times()
    say(f"  (d) pgbench -c 4 -j 2 -T {seconds} against node{leader}, watching the leader key every 0.25 s")
    proc = subprocess.Popen([PGBENCH, "-c", "4", "-j", "2", "-T", str(seconds), "-P", "10", *base, "postgres"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    leaders_seen: dict[str, int] = {}
    no_leader_samples = 0
    unreadable = 0
    samples = 0
    t0 = time.monotonic()
    try:
        for _ in range(int((seconds + 60) / 0.25) + 2):
            if proc.poll() is not None or time.monotonic() - t0 > seconds + 60:
                break
            st = system.cluster_state()
            samples += 1
            if st is None:
                unreadable += 1
            elif st.leader is None:
                no_leader_samples += 1
            else:
                leaders_seen[st.leader] = leaders_seen.get(st.leader, 0) + 1
            time.sleep(0.25)
        try:
            text, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            benchlib.stop_pids([proc.pid], timeout=10)
            text, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            benchlib.stop_pids([proc.pid], timeout=10)
    cpu1 = benchlib._cpu_times()
    out["machine_busy_pct"] = 100.0 * (1 - (cpu1[1] - cpu0[1]) / max(1, cpu1[0] - cpu0[0]))
    out["busy_before_pct"] = busy_before
    out["wall_s"] = time.monotonic() - t0
    out["pgbench_rc"] = proc.returncode
    m = re.search(r"tps = ([\d.]+)", text or "")
    out["tps"] = float(m.group(1)) if m else None
    m = re.search(r"number of failed transactions: (\d+)", text or "")
    out["failed_tx"] = int(m.group(1)) if m else None
    m = re.search(r"number of transactions actually processed: (\d+)", text or "")
    out["transactions"] = int(m.group(1)) if m else None
    out["pgbench_tail"] = "\n".join((text or "").strip().splitlines()[-8:])
    st = system.cluster_state()
    out["leader_after"] = st.leader if st else None
    out["timeline_after"] = st.members.get(st.leader, {}).get("timeline") if st and st.leader else None
    out["leaders_seen"] = leaders_seen
    out["no_leader_samples"] = no_leader_samples
    out["unreadable_samples"] = unreadable
    out["samples"] = samples
    out["agents_restarted"] = [f"node{i}" for i, p in agents.items() if system.agent_pid(i) != p
                               or not benchlib.pid_alive(p)]
    out["leader_changed"] = (set(leaders_seen) != {out["leader_before"]} or no_leader_samples > 0
                             or out["leader_after"] != out["leader_before"]
                             or out["timeline_after"] != out["timeline_before"])
    logs = system.log_since(offsets)
    for i, t in logs.items():
        with open(os.path.join(logdir, f"load-node{i}.log"), "w") as f:
            f.write(t)
    return out


# --- summary ----------------------------------------------------------------------------------------------------
def fmt_spread(values: list[float]) -> str:
    return bootstrap.spread(values, "{:.2f}")


def render(results: list[fl.RunResult], load: dict[str, Any] | None, rows: list[str], faults: list[str],
           facts: dict[str, str], args, command: str, notes: list[str]) -> str:
    L = [SECTION, ""]
    L += [f"Produced by `{command}` (from the repository root), {facts['date']}.", ""]
    L += ["Machine: "
          f"`nproc` {facts['nproc']} ({facts['cpu']}), {facts['memory']} memory, Linux {facts['kernel']}, "
          f"loopback only. {facts['postgresql']}; {facts['etcd']} (one member); "
          f"Patroni {facts['patroni']}; pgha {facts['pgha']}. Load average (1/5/15 min) before the "
          f"run {facts['load_before']}, after it {facts['load_after']}.", ""]
    L += [
        f"What: a {args.nodes}-node cluster on 127.0.0.1 (the same PostgreSQL settings for both, as in the bootstrap "
        "benchmark: asynchronous streaming replication, use_slots, use_pg_rewind). A fault is injected on the "
        "current leader: **(a) node death**: SIGKILL to the leader's agent and to its postmaster, back to back; "
        "**(b) PostgreSQL crash**: SIGKILL to the postmaster only, the agent stays; **(c) graceful stop**: "
        "SIGTERM to the leader's agent (pgha) / Patroni process. A writer thread inserts one row per transaction "
        "(autocommit) through a libpq multi-host string naming the three nodes with "
        "`target_session_attrs=read-write`, `connect_timeout=1` and `statement_timeout=1s`, and reconnects after "
        "any error (50 ms between failed connects). **The figure is the time from the fault to the first commit "
        "through a connection opened after the fault** (a backend whose postmaster has just died may still "
        "commit the statement it is running; such commits on the pre-fault connection are counted apart, "
        "*late commits*). **Lost** counts rows whose commit the writer saw acknowledged but which are not on the "
        "node that accepts writes afterwards (read about a second after the first new commit); in brackets, how "
        "many of those were acknowledged before the fault (the others are late commits: a backend orphaned by the "
        "postmaster's SIGKILL committed locally, which a real node death could not have done). Between runs the "
        "cluster is healed (the stopped agent / Patroni process restarted, then wait until the DCS shows one "
        f"leader and {args.nodes - 1} streaming replicas and the leader's pg_stat_replication agrees) rather than "
        "rebuilt. Each system runs with its own defaults; "
        "Patroni also at the fastest timing it accepts (4.1.5 raises ttl below 20, loop_wait below 1 and "
        "retry_timeout below 3). Faults are interleaved (a b c a b c ...) within each row; before each run the "
        f"script waits up to {args.quiet_wait:.0f} s for the machine to be under {args.quiet_below:.0f} % busy "
        "and records how busy it was. Figures: median (min–max) in seconds.", ""]
    if notes:
        L += ["Notes on this run: " + " ".join(notes), ""]
    head = "| system | timing: ttl / loop_wait / retry_timeout | " + " | ".join(
        f"**({f}) {FAULTS[f].split(' (')[0]}**, s | ({f}) lost acked rows, per run" for f in faults) + " |"
    L += [head, "|---|---|" + "---|---|" * len(faults)]
    for row in rows:
        system, timing, label = ROWS[row]
        cells = []
        for f in faults:
            rs = [r for r in results if r.row == row and r.fault == f]
            ok = [r.figure_s for r in rs if r.figure_s is not None]
            failed = len(rs) - len(ok)
            fig = f"**{fmt_spread(ok)}** ({len(ok)}/{len(rs)} runs)" if rs else "-"
            if failed:
                fig += f", {failed} without a commit"
            lost_txt = ", ".join("?" if r.missing is None else
                                 (f"{r.missing} ({r.missing_before_fault})" if r.missing else "0") for r in rs) or "-"
            cells += [fig, lost_txt]
        L.append(f"| {'pgha' if system == 'pgha' else 'Patroni 4.1.5'} | {label.split(': ')[-1]}, "
                 f"{label.split(':')[0]} | " + " | ".join(cells) + " |")
    lost_runs = [r for r in results if r.missing]
    before = sum(r.missing_before_fault or 0 for r in lost_runs)
    if lost_runs:
        L += ["", f"Lost rows: {len(lost_runs)} run(s) lost {sum(r.missing for r in lost_runs)} acknowledged "
              f"row(s) in all; {before} of them had been acknowledged before the fault"
              + (" (every lost row was a late commit on the connection to the killed node)." if before == 0
                 else ".")]
    else:
        L += ["", "Lost rows: none in any run."]
    loaded = [r for r in results if r.busy_before_pct >= args.quiet_below]
    if loaded:
        L += ["", f"Machine load: {len(loaded)} of {len(results)} runs started with the machine at or above "
              f"{args.quiet_below:.0f} % busy (other work on this {os.cpu_count()}-core machine) after the bounded "
              "wait; they are in the figures all the same, and the busy figure of each "
              "run is in the table below."]
    L += ["", "pgha's targets: (a) " + TARGETS["a"] + " s, (b) " + TARGETS["b"] + " s, (c) " + TARGETS["c"]
          + " s. Earlier figures for Patroni on this machine: (a) " + PATRONI_REFERENCE["a"] + " s, (b) "
          + PATRONI_REFERENCE["b"] + " s, (c) " + PATRONI_REFERENCE["c"] + " s.", ""]
    if load is not None:
        L += [f"**(d) No failover under load** (pgha, its defaults): `pgbench -c 4 -j 2 -T {load['seconds']}` "
              f"(scale {load['scale']}) against the leader, **{load['seconds']} s"
              + (", the 10 minutes the issue asks for" if load["seconds"] >= 600 else
                 ", not the 10 minutes the issue asks for") + "**, while the DCS's leader key was read every 0.25 s."]
        if "error" in load:
            L += [f"It did not complete: {load['error']}", ""]
        else:
            L += [
                f"Leader changed: **{'YES' if load['leader_changed'] else 'no'}** (leader {load['leader_before']} "
                f"before, {load['leader_after']} after; timeline {load['timeline_before']} → "
                f"{load['timeline_after']}; {load['samples']} samples, leaders seen "
                f"{', '.join(f'{k} ×{v}' for k, v in sorted(load['leaders_seen'].items()))}, "
                f"{load['no_leader_samples']} without a leader key, {load['unreadable_samples']} unreadable). "
                f"Agents restarted: {', '.join(load['agents_restarted']) or 'none'}. pgbench: exit "
                f"{load['pgbench_rc']}, {load['transactions']} transactions, tps {load['tps']}, failed "
                f"transactions {load['failed_tx']}; the machine was {load['machine_busy_pct']:.0f} % busy "
                f"(both cores) during it.", ""]
    L += ["Each run, in the order run (time to first new commit; when the old connection broke; late commits on "
          "the old connection; leader before → the node written to after; acknowledged / lost rows; heal time):",
          "", "| row | fault | run | machine busy before, % | first commit, s | old conn broke, s | late commits | "
          "leader → new writer | acked / lost | heal, s | notes |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        fig = "-" if r.figure_s is None else f"{r.figure_s:.2f}"
        broke = "-" if r.broke_s is None else f"{r.broke_s:.2f}"
        heal = "-" if r.heal_s is None else f"{r.heal_s:.1f}"
        lost = "?" if r.missing is None else (f"{r.missing} ({r.missing_before_fault} before the fault)"
                                              if r.missing else "0")
        note = (r.error + ("; rebuilt" if r.rebuilt else "")).replace("|", "/").replace("\n", " ")[:160]
        L.append(f"| {r.row} | {r.fault} | {r.run} | {r.busy_before_pct:.0f} | {fig} | {broke} | "
                 f"{r.late_old_conn_commits} | {r.leader_before} → {r.writer_node_after or '-'} | "
                 f"{r.acked} / {lost} | {heal} | {note} |")
    L.append("")
    return "\n".join(L)


def write_section(path: str, section: str) -> None:
    benchlib.write_section(path, SECTION, section)

# --- main -------------------------------------------------------------------------------------------------------
def make_system(row: str, root: str, nodes: int, base: int, account) -> fl.System:
    system, timing, _ = ROWS[row]
    if system == "pgha":
        return fl.PghaSystem(root, nodes, base, timing, say=say)
    return fl.PatroniSystem(root, nodes, base, timing, account, say=say)


def rerender(ap: argparse.ArgumentParser, args) -> int:
    with open(args.from_json) as f:
        data = json.load(f)
    command = data["command"]
    orig = ap.parse_args(shlex.split(command)[2:])      # the settings the figures were produced with
    results = [fl.RunResult(**r) for r in data["results"]]
    rows = [r.strip() for r in orig.rows.split(",") if r.strip()]
    faults = [f.strip() for f in orig.faults.split(",") if f.strip()]
    section = render(results, data.get("load"), rows, faults, data["facts"], orig, command, args.note or orig.note)
    print(section)
    if args.out:
        write_section(args.out, section)
        say(f"wrote the section to {args.out} (figures from {args.from_json})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each fault on each row (default 5)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rows", default="pgha-default,patroni-fastest,patroni-default", help=f"comma-separated, from: {', '.join(ROWS)}")
    ap.add_argument("--faults", default="a,b,c", help="comma-separated, from: a, b, c")
    ap.add_argument("--load-seconds", type=int, default=120,
                    help="(d): pgbench against pgha's leader for this long; 0 skips it (default 120)")
    ap.add_argument("--load-scale", type=int, default=5, help="(d): pgbench -i scale (default 5)")
    ap.add_argument("--fault-timeout", type=float, default=120.0, help="deadline for the first new commit (s)")
    ap.add_argument("--heal-timeout", type=float, default=180.0, help="deadline for healing after a run (s)")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--base-port", type=int, default=33000)
    ap.add_argument("--quiet-below", type=float, default=50.0,
                    help="before each run, wait until the machine is under this CPU busy %% (default 50)")
    ap.add_argument("--quiet-wait", type=float, default=10.0, help="... but no longer than this (s, default 10)")
    ap.add_argument("--workdir", default="/tmp/pgha-bench-failover")
    ap.add_argument("--pgha-from", choices=("snapshot", "installed"), default="snapshot")
    ap.add_argument("--note", action="append", default=[], help="a sentence for the section's notes")
    ap.add_argument("--out", help="markdown file to write our section into (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write every run's raw figures here")
    ap.add_argument("--from-json", help="do not run: render the section again from a --json file of an earlier "
                                        "run (its command, facts and figures) and write it to --out")
    args = ap.parse_args(argv)
    if args.from_json:
        return rerender(ap, args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    if any(r not in ROWS for r in rows) or any(f not in FAULTS for f in faults) or not rows:
        ap.error(f"rows from {list(ROWS)}, faults from {list(FAULTS)}")
    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]) \
        if argv is None else "failover.main(" + repr(argv) + ")"

    signal.signal(signal.SIGTERM, _on_term)
    account = patroni_env.RunAs()
    os.makedirs(args.workdir, mode=0o755, exist_ok=True)
    os.chmod(args.workdir, 0o755)
    logdir = os.path.join(args.workdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    src_hash = None
    if args.pgha_from == "snapshot":
        path, src_hash = bootstrap.snapshot_src(args.workdir)
        bootstrap.use_pgha_from(path)
        say(f"pgha: running a snapshot of src/ in {path} (sha256 of its .py files {src_hash})")
    if any(ROWS[r][0] == "patroni" for r in rows):
        patroni_env.ensure_patroni(account, say=say)
    bootstrap.import_pgha()
    facts = bootstrap.machine_facts(account, src_hash)
    say("machine: " + json.dumps(facts))

    results: list[fl.RunResult] = []
    load: dict[str, Any] | None = None
    notes = list(args.note)
    seq = 0
    system: fl.System | None = None
    try:
        for row in rows:
            kind = ROWS[row][0]
            gen = 0

            def fresh() -> fl.System:
                nonlocal seq, gen
                base = bootstrap.pick_base_port(args.base_port, seq, args.nodes)
                seq += 1
                gen += 1
                root = os.path.join(args.workdir, f"{row}-{gen}")
                fl.remove_tree(root)
                s = make_system(row, root, args.nodes, base, account)
                say(f"{row}: starting a {args.nodes}-node cluster in {root}, base port {base}")
                t = time.monotonic()
                s.start(args.start_timeout)
                say(f"{row}: streaming after {time.monotonic() - t:.1f}s")
                fl.ensure_table(fl.conninfo(s.ports, s.password))
                return s

            system = fresh()
            for run in range(1, args.runs + 1):
                for fault in faults:
                    say(f"{row} run {run}/{args.runs} fault ({fault}) {FAULTS[fault]}")
                    try:
                        res = one_run(system, row, fault, run, args, logdir)
                    except Stop:
                        raise
                    except Exception as e:  # noqa: BLE001
                        res = fl.RunResult(system=kind, row=row, fault=fault, run=run, error=f"{type(e).__name__}: {e}")
                    fig = "-" if res.figure_s is None else f"{res.figure_s:.2f}s"
                    say(f"  -> first commit {fig} ({res.leader_before} -> {res.writer_node_after}); "
                        f"broke {res.broke_s and round(res.broke_s, 2)}s; late {res.late_old_conn_commits}; "
                        f"acked {res.acked} lost {res.missing}; heal {res.heal_s and round(res.heal_s, 1)}s"
                        f"{'; ERROR ' + res.error if res.error else ''}")
                    if res.error and (res.heal_s is None):
                        say(f"  rebuilding {row} from scratch")
                        for i in range(system.nodes):
                            say(f"  --- node{i} log (last lines) ---\n" + benchlib.tail(system.log_path(i), 12))
                        system.stop()
                        system = fresh()
                        res.rebuilt = True
                    results.append(res)
            if kind == "pgha" and args.load_seconds > 0:
                try:
                    load = pgbench_load(system, args.load_seconds, args.load_scale, logdir)
                    say(f"  (d) leader changed: {load['leader_changed']}; {json.dumps(load)[:600]}")
                except Stop:
                    raise
                except Exception as e:  # noqa: BLE001
                    load = {"seconds": args.load_seconds, "scale": args.load_scale,
                            "error": f"{type(e).__name__}: {e}"}
                    say(f"  (d) failed: {load['error']}")
            say(f"{row}: stopping the cluster")
            system.stop()
            system = None
    except (Stop, KeyboardInterrupt) as e:
        say(f"interrupted ({e or 'Ctrl-C'}); stopping what was started; no file written")
        if system is not None:
            system.stop()
        return 130
    finally:
        if system is not None:
            system.stop()

    if bootstrap.PGHA_SRC:
        shutil.rmtree(bootstrap.PGHA_SRC, ignore_errors=True)
    for name in os.listdir(args.workdir):   # data directories; logs/ stays for reading
        if name != "logs":
            fl.remove_tree(os.path.join(args.workdir, name))
    with open("/proc/loadavg") as f:
        facts["load_after"] = " ".join(f.read().split()[:3])
    section = render(results, load, rows, faults, facts, args, command, notes)
    print("\n" + section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "command": command, "results": [asdict(r) for r in results],
                       "load": load}, f, indent=2)
    if args.out:
        write_section(args.out, section)
        say(f"wrote the section to {args.out}; run logs are in {logdir}")
    return 0 if all(r.figure_s is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
