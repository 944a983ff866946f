#!/usr/bin/env python3
"""Switchover benchmark (issue #4): the write gap seen through HAProxy for a planned switchover and for node
death, pgha beside Patroni 4.1.5 in the same run, on this machine, on 127.0.0.1 only.

Each system's 3-node cluster sits behind a real HAProxy with the same listen blocks (pgha.router.haproxy_config:
`option httpchk OPTIONS /primary`, `http-check expect status 200`, `default-server inter 1s fall 2 rise 1
on-marked-down shutdown-sessions`). pgha runs as `pgha up` runs it (LocalCluster: its HAProxy plus `pgha router`,
which switches HAProxy through its runtime API when the leader key moves); Patroni gets the same HAProxy
configuration and no router (the health checks alone route).

Faults on the current leader:
  s  planned switchover: POST /switchover {"leader": <leader>, "candidate": <a streaming replica>} to the
     leader's REST API;
  a  node death: SIGKILL the leader's agent and its postmaster, back to back.

A writer thread inserts one row per autocommit transaction through HAProxy's rw port (connect_timeout=1,
statement_timeout 1s), reconnecting at once after an error on a session and 20 ms after a failed connect; each
INSERT returns inet_server_port(), so every commit is timed and attributed to a node. Per run: the write gap
(the first commit on another node minus the last commit before it), the fault to that first commit, the client
errors after the fault, and acknowledged rows missing on the new primary.

    python bench/switchover.py --runs 5 --out docs/BENCHMARKS.md

Everything started is stopped by PID (SIGTERM, then SIGKILL after a bounded wait), every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import bootstrap  # noqa: E402  (pgha snapshot/import, machine facts, spread)
import failover_lib as fl  # noqa: E402
import patroni_env  # noqa: E402
import switchover_lib as sl  # noqa: E402

SECTION = "## Switchover and node death: the write gap through HAProxy"
PATRONI_FASTEST = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3}   # Patroni 4.1.5's minimums (config.py)
# name -> (system, timing given (None: the system's own defaults, nothing set), label)
ROWS: dict[str, tuple[str, dict[str, int] | None, str]] = {
    "pgha-default": ("pgha", None, "4 / 1 / 1, pgha's defaults (not set); HAProxy + `pgha router`"),
    "pgha-pgbouncer": ("pgha", None, "4 / 1 / 1, pgha's defaults; clients through PgBouncer (`pgha up --pgbouncer`: "
                      "`pgha pgbouncer` repoints it, PAUSE/RESUME around a switchover)"),
    "patroni-fastest": ("patroni", PATRONI_FASTEST, "20 / 1 / 3, Patroni's fastest accepted; HAProxy checks only"),
    "patroni-default": ("patroni", None, "30 / 10 / 10, Patroni's defaults (not set); HAProxy checks only"),
}
FAULTS = {"s": "planned switchover (POST /switchover)", "a": "node death (SIGKILL agent + postmaster)"}


def say(line: str) -> None:
    print(time.strftime("%H:%M:%S ") + line, flush=True)


class Stop(Exception):
    pass


def _on_term(signum, frame):  # noqa: ARG001
    raise Stop(f"signal {signum}")


def pick_base_port(first: int, seq: int, nodes: int) -> int:
    """A base port whose ports (P+i, P+100+i, P+200, P+201, P+300..302) are all free; rotates between clusters."""
    for k in range(16):
        base = first + ((seq + k) % 16) * 400
        ports = ([base + i for i in range(nodes)] + [base + 100 + i for i in range(nodes)]
                 + [base + 200, base + 201, base + 300, base + 301, base + 302, base + 303])
        if not benchlib.ports_free(ports):
            return base
    raise SystemExit(f"no free port range found from {first} (16 tried)")


def make_system(row: str, root: str, nodes: int, base: int, account) -> fl.System:
    kind, timing, _ = ROWS[row]
    if kind == "pgha":
        return fl.PghaSystem(root, nodes, base, timing, say=say, pgbouncer=row == "pgha-pgbouncer")
    return sl.PatroniBehindHaproxy(root, nodes, base, timing, account, say=say)


def extra_logs(system: fl.System) -> dict[str, str]:
    """HAProxy's log for both; the router's for pgha."""
    if system.kind == "pgha":
        return {"router.log": system.layout.path("router.log"), "haproxy.log": system.layout.path("haproxy.log")}
    return {"haproxy.log": system.haproxy.log}


# --- the section ------------------------------------------------------------------------------------------
def f2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


STEPS = [  # (key, what, where it is read)
    ("received", "the old leader's REST API logs the request", "agent log: received switchover request"),
    ("acts", "its loop acts on it (checkpoint, fast stop)", "agent log: switchover to"),
    ("old_last", "last commit on the old leader", "writer"),
    ("released", "the leader key leaves the old leader", "router log: leader changed: OLD ->"),
    ("promoting", "the candidate takes the key and promotes", "agent log: taking the lock and promoting"),
    ("rw_up", "the router marks rw/NEW up", "router log: rw: NEW up (new leader)"),
    ("first", "first commit on the new leader", "writer"),
]


def _stamp(line: str) -> float | None:
    import datetime as dt
    try:
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def pgha_steps(logdir: str, res: sl.Result) -> dict[str, float | None]:
    """Seconds from the POST to each step of a pgha switchover, read from the agents' and the router's logs (wall
    clock) and the writer's timeline; plus the longest connect attempt inside the gap ("stall")."""
    import glob
    import re
    stem = os.path.join(logdir, f"{res.row}-{res.fault}-{res.run}")
    marks = {"received": "received switchover request", "acts": "INFO: switchover to",
             "promoting": "taking the lock and promoting", "released": f"leader changed: {res.leader_before} -> ",
             "rw_up": f"rw: {res.leader_after} up (new leader)"}
    out: dict[str, float | None] = {k: None for k, _, _ in STEPS}
    for path in sorted(glob.glob(stem + "-node*.log")) + [stem + "-router.log"]:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    t = _stamp(line)
                    for key, text in marks.items():
                        if t is not None and out[key] is None and text in line and t >= res.fault_wall - 0.5:
                            out[key] = t - res.fault_wall
        except OSError:
            pass
    out["old_last"], out["first"] = res.old_last_s, res.first_s
    stall, started = 0.0, None
    try:
        with open(stem + "-writer.log") as f:
            for line in f:
                m = re.match(r"\S+ +([-+][\d.]+)s (connecting|connected|ERROR connect)", line)
                if not m:
                    continue
                t = float(m.group(1))
                if m.group(2) == "connecting":
                    started = t
                elif started is not None and res.old_last_s is not None and started >= res.old_last_s:
                    stall = max(stall, t - started)
                    started = None
    except OSError:
        pass
    out["stall"] = stall
    return out


def render(results: list[sl.Result], facts: dict[str, str], args, command: str, notes: list[str],
           steps: dict[str, dict[str, float | None]]) -> str:
    rows = [r for r in ROWS if any(x.row == r for x in results)]
    faults = [f for f in FAULTS if any(x.fault == f for x in results)]
    L = [SECTION, "", f"Produced by `{command}` (from the repository root), {facts['date']}.", ""]
    L += ["Machine: "
          f"`nproc` {facts['nproc']} ({facts['cpu']}), {facts['memory']} memory, Linux {facts['kernel']}, "
          f"loopback only. {facts['postgresql']}; {facts['etcd']} (one member); Patroni {facts['patroni']}; "
          f"pgha {facts['pgha']}; {facts.get('haproxy', 'HAProxy')}. Load average (1/5/15 min) before the run "
          f"{facts['load_before']}, after it {facts['load_after']}.", ""]
    L += [
        f"What: a {args.nodes}-node cluster of each system on 127.0.0.1 (the same PostgreSQL settings, as in the "
        "failover benchmark), each behind a real HAProxy with the same `listen rw` block, rendered by "
        "`pgha.router.haproxy_config` (`option httpchk OPTIONS /primary`, `http-check expect status 200`, "
        "`default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions`). pgha runs as `pgha up` runs "
        "it: its HAProxy plus `pgha router`, which moves HAProxy through its runtime API when the leader key moves. "
        "Patroni gets the same HAProxy configuration and no router: its health checks alone route. Faults on the "
        "current leader: **(s) planned switchover**: `POST /switchover {\"leader\": <leader>, \"candidate\": "
        "<a streaming replica>}` to the leader's REST API; **(a) node death**: SIGKILL to the leader's agent and "
        "its postmaster, back to back. One writer thread inserts one row per autocommit transaction through "
        "HAProxy's rw port (`connect_timeout=1`, which psycopg, like libpq, raises to its minimum of 2 s; "
        "`statement_timeout=1s`), reconnecting at once after an error on a session and 20 ms after a failed connect; each INSERT returns `inet_server_port()`, so every commit is "
        "timed and attributed to a node. **Write gap**: the first commit on another node than the old leader "
        "minus the last commit before it (during a switchover the old leader keeps committing until it stops; "
        "the gap is the time no write could commit). **Fault → first**: from the POST being sent / the SIGKILL "
        "to that first commit. **Errors**: client errors after the fault, failed connects through HAProxy + "
        "statements failed on an open session (each failed connect is retried after 20 ms, so their number "
        "grows with the time no server is up behind rw). **Lost**: acknowledged rows not on the primary "
        "afterwards. Between runs the cluster heals (a killed node is restarted: `pgha up` / the Patroni "
        f"process; then one leader and {args.nodes - 1} streaming replicas, and HAProxy's rw routing to the "
        "leader alone). Faults alternate (s a s a ...) within a row; before each run the script waits up to "
        f"{args.quiet_wait:.0f} s for the machine to be under {args.quiet_below:.0f} % busy. Figures: median "
        "(min–max) in seconds.", ""]
    if notes:
        L += ["Notes on this run: " + " ".join(notes), ""]
    head = "| system | timing: ttl / loop_wait / retry_timeout; routing |"
    for f in faults:
        name = FAULTS[f].split(" (")[0]
        head += f" **({f}) {name}: write gap**, s | ({f}) fault → first commit, s | ({f}) client errors per run " \
                f"(connect + session) | ({f}) lost acked rows |"
    L += [head, "|---|---|" + "---|---|---|---|" * len(faults)]
    for row in rows:
        kind, _, label = ROWS[row]
        cells = []
        for f in faults:
            rs = [r for r in results if r.row == row and r.fault == f]
            ok = [r for r in rs if r.gap_s is not None]
            gap = f"**{bootstrap.spread([r.gap_s for r in ok], '{:.2f}')}** ({len(ok)}/{len(rs)} runs)"
            first = bootstrap.spread([r.first_s for r in ok], "{:.2f}")
            errs = ", ".join(f"{r.errors_connect}+{r.errors_session}" for r in rs) or "-"
            lost = ", ".join("?" if r.missing is None else str(r.missing) for r in rs) or "-"
            cells += [gap, first, errs, lost]
        L.append(f"| {'pgha' if kind == 'pgha' else 'Patroni 4.1.5'} | {label} | " + " | ".join(cells) + " |")
    L += ["", "Target (issue #4): a switchover's write gap of 1 s or less; Patroni on this machine: about 2.9 s.", ""]
    busy = [r for r in results if r.busy_before_pct >= args.quiet_below]
    if busy:
        L += [f"Machine load: {len(busy)} of {len(results)} runs started with the machine at or above "
              f"{args.quiet_below:.0f} % busy (other work on this {facts['nproc']}-core machine) after the bounded "
              "wait; they are in the figures all the same (busy figure of each run below).", ""]
    if steps:
        L += _steps_table(steps)
    L += ["Each run, in the order run:", "",
          "| row | fault | run | busy before, % | leader → first new writer | write gap, s | fault → first, s | "
          "old leader's last commit after the fault, s | errors (connect + session) | POST: code, s | "
          "acked / lost | heal, s | notes |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        post = "-" if r.post_status is None and r.post_s is None else f"{r.post_status}, {f2(r.post_s)}"
        note = "; ".join(x for x in [r.error, "rebuilt" if r.rebuilt else "", "; ".join(r.error_kinds[:2])] if x)
        note = note.replace("|", "/").replace("\n", " ")[:220]
        L.append(f"| {r.row} | {r.fault} | {r.run} | {r.busy_before_pct:.0f} | {r.leader_before} → "
                 f"{r.leader_after or '-'} | {f2(r.gap_s)} | {f2(r.first_s)} | {f2(r.old_last_s)} | "
                 f"{r.errors_connect} + {r.errors_session} | {post} | {r.acked} / "
                 f"{'?' if r.missing is None else r.missing} | {f2(r.heal_s)} | {note} |")
    L.append("")
    return "\n".join(L)


def _steps_table(steps: dict[str, dict[str, float | None]]) -> list[str]:
    runs = list(steps.values())
    L = ["Where pgha's switchover time goes: seconds from the POST, per step, median (min–max) over the "
         f"{len(runs)} pgha switchover runs (agents' and router's log lines, wall clock, against the writer's "
         "timeline):", "", "| step | read from | s after the POST |", "|---|---|---|"]
    for key, what, where in STEPS:
        L.append(f"| {what} | {where} | {bootstrap.spread([r.get(key) for r in runs], '{:.3f}')} |")
    L.append("| longest connect attempt inside the gap (HAProxy holding a connect to the stopped old leader) | "
             "writer | " + bootstrap.spread([r.get("stall") for r in runs], "{:.3f}") + " s long |")
    return L + [""]


def write_section(path: str, section: str) -> None:
    benchlib.write_section(path, SECTION, section)

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each fault on each row (default 5)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    ap.add_argument("--faults", default="s,a", help="comma-separated, from: s (switchover), a (node death)")
    ap.add_argument("--fault-timeout", type=float, default=60.0, help="deadline for the first new commit (s)")
    ap.add_argument("--heal-timeout", type=float, default=180.0)
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--base-port", type=int, default=24000,
                    help="first base port (default 24000: its 16 blocks of 400 stay below Linux's ephemeral range, "
                         "32768 and up, where an outgoing connection can hold a port HAProxy must bind)")
    ap.add_argument("--quiet-below", type=float, default=50.0,
                    help="before each run, wait until the machine is under this CPU busy %% (default 50)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="... but no longer than this (s, default 30)")
    ap.add_argument("--workdir", default="/tmp/pgha-bench-switchover")
    ap.add_argument("--note", action="append", default=[], help="a sentence for the section's notes")
    ap.add_argument("--out", help="markdown file to write our section into (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write every run's raw figures here")
    ap.add_argument("--from-json", help="do not run: render the section again from a --json file and write it "
                                        "to --out (with any --note given now)")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        orig = ap.parse_args(shlex.split(data["command"])[2:])
        results = [sl.Result(**r) for r in data["results"]]
        section = render(results, data["facts"], orig, data["command"], orig.note + args.note,
                         data.get("steps", {}))
        if args.note:
            section = section.replace("(from the repository root)", "(from the repository root); the notes were "
                                      "added afterwards from its logs with `--from-json`", 1)
        print(section)
        if args.out:
            write_section(args.out, section)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    if not rows or any(r not in ROWS for r in rows) or any(f not in FAULTS for f in faults):
        ap.error(f"rows from {list(ROWS)}, faults from {list(FAULTS)}")
    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]) \
        if argv is None else "switchover.main(" + repr(argv) + ")"

    signal.signal(signal.SIGTERM, _on_term)
    account = patroni_env.RunAs()
    os.makedirs(args.workdir, mode=0o755, exist_ok=True)
    os.chmod(args.workdir, 0o755)
    logdir = os.path.join(args.workdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    path, src_hash = bootstrap.snapshot_src(args.workdir)
    bootstrap.use_pgha_from(path)
    say(f"pgha: running a snapshot of src/ in {path} (sha256 of its .py files {src_hash})")
    if any(ROWS[r][0] == "patroni" for r in rows):
        patroni_env.ensure_patroni(account, say=say)
    bootstrap.import_pgha()
    facts = bootstrap.machine_facts(account, src_hash)
    try:
        from pgha.router.process import haproxy_binary
        out = subprocess.run([haproxy_binary() or "haproxy", "-v"], capture_output=True, text=True, timeout=30)
        facts["haproxy"] = " ".join(out.stdout.split()[:3])
    except (OSError, subprocess.SubprocessError):
        facts["haproxy"] = "HAProxy (version unknown)"
    say("machine: " + json.dumps(facts))

    results: list[sl.Result] = []
    steps: dict[str, dict[str, float | None]] = {}
    seq = 0
    system: fl.System | None = None
    try:
        for row in rows:
            kind = ROWS[row][0]
            gen = 0

            def fresh() -> fl.System:
                nonlocal seq, gen
                base = pick_base_port(args.base_port, seq, args.nodes)
                seq += 1
                gen += 1
                root = os.path.join(args.workdir, f"{row}-{gen}")
                fl.remove_tree(root)
                s = make_system(row, root, args.nodes, base, account)
                say(f"{row}: starting a {args.nodes}-node cluster behind HAProxy in {root}, base port {base}")
                t = time.monotonic()
                try:
                    s.start(args.start_timeout)
                    fl.ensure_table(fl.conninfo(s.ports, s.password))
                    sl.wait_routed(s, 30)
                except BaseException:
                    s.stop()   # what it started, by PID
                    raise
                say(f"{row}: streaming and routed after {time.monotonic() - t:.1f}s")
                return s

            system = fresh()
            for run in range(1, args.runs + 1):
                for fault in faults:
                    say(f"{row} run {run}/{args.runs} fault ({fault}) {FAULTS[fault]}")
                    try:
                        res = sl.one_run(system, row, fault, run, args, logdir, say,
                                         lambda: extra_logs(system))
                    except Stop:
                        raise
                    except Exception as e:  # noqa: BLE001
                        res = sl.Result(system=kind, row=row, fault=fault, run=run,
                                        error=f"{type(e).__name__}: {e}")
                    if kind == "pgha" and fault == "s" and res.gap_s is not None:
                        steps[f"{row}-{fault}-{run}"] = pgha_steps(logdir, res)
                    say(f"  -> gap {f2(res.gap_s)}s, fault->first {f2(res.first_s)}s "
                        f"({res.leader_before} -> {res.leader_after}); errors {res.errors_connect} connect + "
                        f"{res.errors_session} session {res.error_kinds[:3]}; POST {res.post_status} "
                        f"{f2(res.post_s)}s; acked {res.acked} lost {res.missing}; heal "
                        f"{f2(res.heal_s)}s{'; ERROR ' + res.error if res.error else ''}")
                    if res.heal_s is None:
                        say(f"  rebuilding {row} from scratch")
                        system.stop()
                        system = fresh()
                        res.rebuilt = True
                    results.append(res)
            say(f"{row}: stopping the cluster")
            system.stop()
            system = None
    except (Stop, KeyboardInterrupt) as e:
        say(f"interrupted ({e or 'Ctrl-C'}); stopping what was started; no file written")
        if system is not None:
            system.stop()
            system = None
        return 130
    finally:
        if system is not None:
            system.stop()

    shutil.rmtree(path, ignore_errors=True)
    for name in os.listdir(args.workdir):   # data directories; logs/ stays for reading
        if name != "logs":
            fl.remove_tree(os.path.join(args.workdir, name))
    with open("/proc/loadavg") as f:
        facts["load_after"] = " ".join(f.read().split()[:3])
    section = render(results, facts, args, command, args.note, steps)
    print("\n" + section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "command": command, "results": [asdict(r) for r in results],
                       "steps": steps}, f, indent=2)
    if args.out:
        write_section(args.out, section)
        say(f"wrote the section to {args.out}; run logs are in {logdir}")
    return 0 if all(r.gap_s is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
