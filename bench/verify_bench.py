#!/usr/bin/env python3
"""Verifier benchmark (issue #6 point 3): `pgha verify`'s bank workload and faults against pgha and against
Patroni 4.1.5, one after the other in the same run, on this machine, on 127.0.0.1 only.

Rows (systems), each a 3-node cluster with the same PostgreSQL settings, on one local etcd, behind a real HAProxy
with the same `listen` blocks (pgha.router.haproxy_config):
  pgha-default     pgha as `pgha up` runs it (its defaults, ttl 4 / loop_wait 1 / retry_timeout 1; its HAProxy +
                   `pgha router`);
  patroni-fastest  Patroni 4.1.5 at the fastest timing it accepts (20 / 1 / 3), HAProxy's health checks alone;
  patroni-default  Patroni with its defaults (30 / 10 / 10): off unless asked for (--rows), slow.

Scenarios: the verifier's faults (src/pgha/verify/faults.py), on the current leader: kill-leader (node death),
crash-postgres, stop-leader (graceful), freeze-leader (SIGSTOP for ttl + 2 s), switchover; kill-dcs-member,
terminate-backends and restart-all on request (the last two alone: their own section). Each repetition is one verifier run (pgha.verify.runner.Verifier: 4 clients at 50 transfers/s each
through HAProxy's rw port) with one fault acting 2 s into a window of the same length for every system; then the
cluster is healed (the stopped agent restarted, one leader and N-1 streaming replicas, HAProxy routing rw to the
leader alone), and rebuilt only when that fails. pgha is reached through pgha.verify.target.LocalTarget, Patroni
through bench/verify_lib.py's PatroniTarget (a CtlTarget that supplies PIDs and restarts).

    python bench/verify_bench.py --runs 5 --out docs/BENCHMARKS.md --json /tmp/verify-bench.json
    python bench/verify_bench.py --netns --runs 5 --out docs/BENCHMARKS.md     # the partitions, as root

--netns: rows pgha-netns and patroni-netns, each node and etcd in a network namespace (bench/patroni_netns.py),
the verifier inside the cluster's hub; scenarios partition-leader-dcs, partition-leader-replicas, isolate-leader
(pgha.verify.partition.partition_leader for both systems); its own section.

Per scenario and system: median and spread (min-max) of write-unavailability, failed transactions, lost
acknowledged commits and in-doubt transactions, and the pgha/Patroni ratio of the median unavailability.
Everything started is stopped by PID (SIGTERM, then SIGKILL after a bounded wait), every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import asdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import bootstrap  # noqa: E402  (pgha snapshot/import, spread)
import failover_lib as fl  # noqa: E402
import patroni_env  # noqa: E402
import switchover_lib as sl  # noqa: E402
import patroni_netns as pn  # noqa: E402
import verify_lib as vl  # noqa: E402

from verify_render import (  # noqa: E402  (the scenario and row tables, and the Markdown)
    DEFAULT_ROWS, DEFAULT_SCENARIOS, LEAD, NETNS_ROWS, PARTITIONS, PATRONI_DEFAULTS, PGHA_DEFAULTS, ROWS, SCENARIOS,
    SHORT_WINDOW, f2, render)


def say(line: str) -> None:
    print(time.strftime("%H:%M:%S ") + line, flush=True)


class Stop(BaseException):
    """SIGTERM: not an Exception, so that no per-run handler swallows it."""


def _on_term(signum, frame):  # noqa: ARG001
    raise Stop(f"signal {signum}")


def row_timing(row: str) -> dict[str, int]:
    kind, timing, _ = ROWS[row]
    return timing or (PGHA_DEFAULTS if kind == "pgha" else PATRONI_DEFAULTS)


def windows_for(rows: list[str], scenarios: list[str], given: dict[str, float]) -> dict[str, float]:
    """One window per scenario, the same for every row: 30 s, or, for the faults that wait out the lease, the
    lead + the slowest row's ttl + loop_wait + 20 s, rounded up to 5 s (45 s with Patroni at 20 / 1 / 3)."""
    ttl = max(row_timing(r)["ttl"] + row_timing(r)["loop_wait"] for r in rows)
    out = {}
    for s in scenarios:
        lease = SCENARIOS[s][0]
        out[s] = given.get(s, max(SHORT_WINDOW, 5 * math.ceil((LEAD + ttl + 20) / 5)) if lease else SHORT_WINDOW)
    return out


def make_system(row: str, root: str, nodes: int, base: int, account) -> fl.System:
    kind, timing, _ = ROWS[row]
    if row.endswith("-netns"):
        return pn.make_system(kind, root, nodes, base, timing, account, say)
    if kind == "pgha":
        return fl.PghaSystem(root, nodes, base, timing, say=say)
    return sl.PatroniBehindHaproxy(root, nodes, base, timing, account, say=say)


# --- the section ------------------------------------------------------------------------------------------
def write_section(path: str, section: str) -> None:
    benchlib.write_section(path, section.splitlines()[0], section)

# --- main -------------------------------------------------------------------------------------------------------
def parse_windows(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in SCENARIOS or not 10 <= seconds <= 3600:
            ap.error(f"--window NAME=SECONDS: NAME from {list(SCENARIOS)}, 10 <= SECONDS <= 3600 (got {item!r})")
        out[name] = seconds
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="every section, one after the other: the default scenarios, "
                    "terminate-backends + restart-all, kill-dcs-member, then --netns's partitions (not with "
                    "--netns, --rows or --scenarios; --json FILE becomes FILE.1 ... FILE.4)")
    ap.add_argument("--netns", action="store_true", help=f"rows {NETNS_ROWS} (each node and etcd in a network "
                    f"namespace; as root), scenarios {PARTITIONS} unless given; its own section")
    ap.add_argument("--runs", type=int, default=5, help="repetitions of each scenario on each row (default 5)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rows", default=None, help=f"comma-separated, from: {', '.join(ROWS)} "
                                                         f"(default {DEFAULT_ROWS})")
    ap.add_argument("--scenarios", default=None,
                    help=f"comma-separated verifier faults, from: {', '.join(SCENARIOS)} (default {DEFAULT_SCENARIOS})")
    ap.add_argument("--window", action="append", default=[], metavar="NAME=SECONDS",
                    help="a scenario's window (the same for every row); default 30 s, and lead + the slowest row's "
                         "ttl + loop_wait + 20 s, rounded up to 5 s, for kill-leader, freeze-leader, kill-dcs-member")
    ap.add_argument("--dcs-outage", type=float, default=10.0,
                    help="kill-dcs-member: seconds etcd stays down, the same for every row (default 10: longer "
                         "than pgha's ttl, shorter than Patroni's)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rate", type=float, default=50.0, help="transfers per second per client (default 50)")
    ap.add_argument("--min-gap", type=float, default=0.2, help="pauses shorter than this are not unavailability")
    ap.add_argument("--seed", type=int, default=1, help="repetition k uses seed + k - 1, on every row")
    ap.add_argument("--heal-timeout", type=float, default=180.0, help="deadline for healing after a run (s)")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--base-port", type=int, default=26000,
                    help="first base port (default 26000: its 16 blocks of 400 stay below the ephemeral range)")
    ap.add_argument("--quiet-below", type=float, default=50.0,
                    help="before each run, wait until the machine is under this CPU busy %% (default 50)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="... but no longer than this (s, default 30)")
    ap.add_argument("--workdir", default="/tmp/pgha-bench-verify")
    ap.add_argument("--pgha-from", choices=("snapshot", "installed"), default="snapshot")
    ap.add_argument("--no-git", action="store_true", help="do not read the commit for the machine facts")
    ap.add_argument("--note", action="append", default=[], help="a sentence for the section's notes")
    ap.add_argument("--out", help="markdown file to write our section into (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write every run's raw figures here")
    ap.add_argument("--from-json", help="do not run: render the section again from a --json file and write it "
                                        "to --out (with any --note given now)")
    return ap


def rerender(ap: argparse.ArgumentParser, args) -> int:
    with open(args.from_json) as f:
        data = json.load(f)
    orig = ap.parse_args(data.get("argv") or shlex.split(data["command"])[2:])   # argv: what --all ran
    orig.rows = orig.rows or (NETNS_ROWS if orig.netns else DEFAULT_ROWS)
    orig.scenarios = orig.scenarios or (PARTITIONS if orig.netns else DEFAULT_SCENARIOS)
    results = vl.load_results(data["results"])
    section = render(results, data["facts"], orig, data["command"], orig.note + args.note, data["windows"])
    if args.note:
        section = section.replace("(from the repository root)", "(from the repository root); the notes were "
                                  "added afterwards with `--from-json`", 1)
    print(section)
    if args.out:
        write_section(args.out, section)
    return 0


# --all: each section's own arguments, in the order run
ALL_GROUPS: list[list[str]] = [[], ["--scenarios", "terminate-backends,restart-all"],
                               ["--scenarios", "kill-dcs-member"], ["--netns"]]


def run_all(ap: argparse.ArgumentParser, argv: list[str], args) -> int:
    """The four sections from one command: each group runs as its own invocation (its own clusters and section),
    and every section names the one command that produced them all."""
    if args.netns or args.rows or args.scenarios or args.from_json:
        ap.error("--all runs every section itself: not with --netns, --rows, --scenarios or --from-json")
    rest = [a for a in argv if a != "--all"]
    worst = 0
    for k, group in enumerate(ALL_GROUPS, 1):
        sub = rest + group + (["--json", f"{args.json}.{k}"] if args.json else [])   # the last --json wins
        say(f"--all: section {k}/{len(ALL_GROUPS)}: {' '.join(group) or 'the default scenarios'}")
        rc = main(sub, command=display_command(argv))
        if rc == 130:   # interrupted: the sections not run yet are not started
            return rc
        worst = max(worst, rc)
    return worst


def display_command(argv: list[str]) -> str:
    return shlex.join(["python", os.path.relpath(os.path.abspath(__file__), REPO)] + argv)


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    if args.all:
        return run_all(ap, given, args)
    args.rows = args.rows or (NETNS_ROWS if args.netns else DEFAULT_ROWS)
    args.scenarios = args.scenarios or (PARTITIONS if args.netns else DEFAULT_SCENARIOS)
    if args.from_json:
        return rerender(ap, args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not rows or not scenarios or any(r not in ROWS for r in rows) or any(s not in SCENARIOS for s in scenarios):
        ap.error(f"rows from {list(ROWS)}, scenarios from {list(SCENARIOS)}")
    if args.runs < 1:
        ap.error("--runs: at least 1")
    windows = windows_for(rows, scenarios, parse_windows(ap, args.window))
    if command is None:
        command = display_command(sys.argv[1:]) if argv is None else "verify_bench.main(" + repr(argv) + ")"

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
    from pgha.verify.faults import FaultError, check_menu, resume_all
    try:
        check_menu(scenarios, _capabilities_probe(all(r.endswith("-netns") for r in rows)))
    except FaultError as e:
        ap.error(str(e))
    facts = vl.machine_facts(account, src_hash, git=not args.no_git)
    say("machine: " + json.dumps(facts))
    total = sum(windows.values()) * args.runs * len(rows)
    say(f"windows: {json.dumps(windows)}; {args.runs} runs x {len(scenarios)} scenarios x {len(rows)} rows: "
        f"{total / 60:.0f} min of windows, plus healing and starting")

    results: list[vl.RunResult] = []
    seq = 0
    system: fl.System | None = None
    try:
        for row in rows:
            kind = ROWS[row][0]
            gen = 0

            def fresh() -> fl.System:
                nonlocal seq, gen
                base = (pn.pick_base_port if row.endswith("-netns") else vl.pick_base_port)(args.base_port, seq,
                                                                                           args.nodes)
                seq += 1
                gen += 1
                root = os.path.join(args.workdir, f"{row}-{gen}")
                fl.remove_tree(root)
                s = make_system(row, root, args.nodes, base, account)
                say(f"{row}: starting a {args.nodes}-node cluster behind HAProxy in {root}, base port {base}")
                t = time.monotonic()
                try:
                    s.start(args.start_timeout)
                    sl.wait_routed(s, 30)
                except BaseException:
                    s.stop()   # what it started, by PID
                    raise
                say(f"{row}: streaming and routed after {time.monotonic() - t:.1f}s")
                return s

            system = fresh()
            for run in range(1, args.runs + 1):
                for scenario in scenarios:
                    say(f"{row} run {run}/{args.runs} {scenario} (window {windows[scenario]:.0f}s)")
                    seed = args.seed + run - 1
                    try:
                        with pn.hub_of(system):   # a netns cluster: the verifier runs in its hub
                            res = vl.one_run(system, row, scenario, run, windows[scenario], seed, args, logdir, say)
                    except Exception as e:  # noqa: BLE001 (Stop is not an Exception)
                        res = vl.RunResult(system=kind, row=row, scenario=scenario, run=run,
                                           window_s=windows[scenario], seed=seed, error=f"{type(e).__name__}: {e}")
                    say(f"  -> unavailability {f2(res.unavailability_s)}s (gap {f2(res.longest_gap_s)}s, recovered "
                        f"{res.recovered}); failed {res.failed_tx}, lost {res.lost_acked}, in doubt {res.in_doubt},"
                        f" acked {res.acked}; invariant {res.invariant_ok}, overlaps {res.overlapping_writers}; "
                        f"leaders {res.leader_before} -> {res.leaders_seen}; healed {f2(res.healed_after_s)}s, heal "
                        f"{f2(res.heal_s)}s{'; ERROR ' + res.error if res.error else ''}")
                    if res.heal_s is None:
                        say(f"  rebuilding {row} from scratch")
                        for i in range(system.nodes):
                            say(f"  --- node{i} log (last lines) ---\n" + benchlib.tail(system.log_path(i), 12))
                        system.stop()
                        system = None
                        system = fresh()
                        res.rebuilt = True
                    results.append(res)
            say(f"{row}: stopping the cluster")
            system.stop()
            system = None
    except (Stop, KeyboardInterrupt) as e:
        say(f"interrupted ({e or 'Ctrl-C'}); stopping what was started; no file written")
        resume_all()
        if system is not None:
            system.stop()
            system = None
        return 130
    finally:
        resume_all()
        if system is not None:
            system.stop()

    if bootstrap.PGHA_SRC:
        shutil.rmtree(bootstrap.PGHA_SRC, ignore_errors=True)
    for name in os.listdir(args.workdir):   # data directories; logs/ stays for reading
        if name != "logs":
            fl.remove_tree(os.path.join(args.workdir, name))
    with open("/proc/loadavg") as f:
        facts["load_after"] = " ".join(f.read().split()[:3])
    section = render(results, facts, args, command, args.note, windows)
    print("\n" + section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "command": command, "argv": given, "windows": windows,
                       "results": [asdict(r) for r in results]}, f, indent=2)
    if args.out:
        write_section(args.out, section)
        say(f"wrote the section to {args.out}; run logs are in {logdir}")
    return 0 if all(r.unavailability_s is not None and not r.error for r in results) else 1


def _capabilities_probe(netns: bool = False):
    """A stand-in target with every capability the bench's two targets have, to check the scenario names against
    the verifier's menu before anything starts (unknown names and netns faults are refused there)."""
    from pgha.verify.target import Target

    class Probe(Target):
        kind = "bench"
        capabilities = frozenset({"api", "sql", "processes"} | ({"netns"} if netns else set()))
    return Probe()


if __name__ == "__main__":
    sys.exit(main())
