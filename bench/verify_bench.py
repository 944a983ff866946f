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
crash-postgres, stop-leader (graceful), freeze-leader (SIGSTOP for ttl + 2 s), switchover; kill-dcs-member on
request. Each repetition is one verifier run (pgha.verify.runner.Verifier: 4 clients at 50 transfers/s each
through HAProxy's rw port) with one fault acting 2 s into a window of the same length for every system; then the
cluster is healed (the stopped agent restarted, one leader and N-1 streaming replicas, HAProxy routing rw to the
leader alone), and rebuilt only when that fails. pgha is reached through pgha.verify.target.LocalTarget, Patroni
through bench/verify_lib.py's PatroniTarget (a CtlTarget that supplies PIDs and restarts).

    python bench/verify_bench.py --runs 5 --out docs/BENCHMARKS.md --json /tmp/verify-bench.json

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
import statistics
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
import verify_lib as vl  # noqa: E402

SECTION = "## The verifier on both systems: write-unavailability and lost commits per fault"
PATRONI_FASTEST = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3}   # Patroni 4.1.5's minimums (config.py)
PATRONI_DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
PGHA_DEFAULTS = {"ttl": 4, "loop_wait": 1, "retry_timeout": 1}       # for the windows only (LocalCluster's own)
# name -> (system, timing given (None: the system's own defaults, nothing set), label)
ROWS: dict[str, tuple[str, dict[str, int] | None, str]] = {
    "pgha-default": ("pgha", None, "4 / 1 / 1, pgha's defaults (not set); HAProxy + `pgha router`"),
    "patroni-fastest": ("patroni", PATRONI_FASTEST, "20 / 1 / 3, Patroni's fastest accepted; HAProxy checks only"),
    "patroni-default": ("patroni", None, "30 / 10 / 10, Patroni's defaults (not set); HAProxy checks only"),
}
DEFAULT_ROWS = "pgha-default,patroni-fastest"
# scenario -> (waits for the lease: its window grows with the slowest row's ttl, what it does)
SCENARIOS: dict[str, tuple[bool, str]] = {
    "kill-leader": (True, "node death: SIGKILL the leader's agent and postmaster; restart the agent once another "
                          "node leads"),
    "crash-postgres": (False, "SIGKILL the leader's postmaster, the agent stays"),
    "stop-leader": (False, "SIGTERM the leader's agent (graceful); restart it once it exited"),
    "freeze-leader": (True, "SIGSTOP the leader's agent for ttl + 2 s, then SIGCONT"),
    "switchover": (False, "POST /switchover to the leader's REST API, candidate a streaming replica (seeded)"),
    "kill-dcs-member": (True, "SIGKILL etcd (the only member), start it again after ttl"),
}
DEFAULT_SCENARIOS = "kill-leader,crash-postgres,stop-leader,freeze-leader,switchover"
LEAD = 2.0        # the verifier acts min(2 s, window / 2) into the window
SHORT_WINDOW = 30.0


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
    if kind == "pgha":
        return fl.PghaSystem(root, nodes, base, timing, say=say)
    return sl.PatroniBehindHaproxy(root, nodes, base, timing, account, say=say)


# --- the section ------------------------------------------------------------------------------------------
def f2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def count_spread(values: list[int | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    m = f"{med:.0f}" if med == int(med) else f"{med:.1f}"
    return m if len(vals) == 1 else f"{m} ({min(vals)}–{max(vals)})"


def system_name(row: str) -> str:
    return "pgha" if ROWS[row][0] == "pgha" else "Patroni 4.1.5"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if b == 0:
        return "-" if a == 0 else "∞"
    return f"{a / b:.2f}"


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def render(results: list[vl.RunResult], facts: dict[str, str], args, command: str, notes: list[str],
           windows: dict[str, float]) -> str:
    rows = [r for r in ROWS if any(x.row == r for x in results)]
    scenarios = [s for s in SCENARIOS if any(x.scenario == s for x in results)]
    L = [SECTION, "", f"Produced by `{command}` (from the repository root), {facts['date']}.", ""]
    L += ["Machine: "
          f"`nproc` {facts['nproc']} ({facts['cpu']}), {facts['memory']} memory, Linux {facts['kernel']}, "
          f"loopback only. {facts['postgresql']}; {facts['etcd']} (one member); Patroni {facts['patroni']}; "
          f"pgha {facts['pgha']}; {facts.get('haproxy', 'HAProxy')}. Load average (1/5/15 min) before the run "
          f"{facts['load_before']}, after it {facts.get('load_after', '?')}.", ""]
    L += [
        f"What: `pgha verify`'s bank workload and fault menu (docs/verify.md), run programmatically "
        "(`pgha.verify.runner.Verifier`) against a "
        f"{args.nodes}-node cluster of each system, one system after the other, on one local etcd each, with the "
        "same PostgreSQL settings, each behind a real HAProxy with the same `listen` blocks (rendered by "
        "`pgha.router.haproxy_config`: `option httpchk OPTIONS /primary`, `http-check expect status 200`, "
        "`default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions`). pgha runs as `pgha up` runs "
        "it (its HAProxy plus `pgha router`; the verifier's `LocalTarget`); Patroni gets the same HAProxy "
        "configuration and no router (its health checks alone route; the verifier reaches it through "
        "`PatroniTarget` in bench/verify_lib.py, which reads the same DCS keys and supplies the Patroni processes' "
        f"and postmasters' PIDs and restarts). {args.clients} clients at {args.rate:g} transfers/s each, through "
        "HAProxy's rw port (the verifier's `connect_timeout=2`, `statement_timeout=3s`; reconnect 0.1 s after an "
        "error). Each repetition is one verifier run with one fault, acting "
        f"{LEAD:g} s into a window of the same length for every system (below), then the cluster healed (the "
        f"stopped agent restarted; one leader and {args.nodes - 1} streaming replicas; HAProxy's rw routing to the "
        "leader alone), rebuilt only when that fails. Repetitions alternate over the scenarios; the seed of "
        f"repetition k is {'k' if args.seed == 1 else f'{args.seed} + k − 1'} for both systems (transfers and "
        "switchover candidate). Before each "
        f"run the script waits up to {args.quiet_wait:.0f} s for the machine to be under {args.quiet_below:.0f} % "
        "busy.", "",
        "Figures, per run, from the verifier's report (src/pgha/verify/report.py): **write-unavailability**: the "
        "longest interval without any acknowledged commit (all clients together) that ends after the fault acted "
        f"(pauses under {args.min_gap:g} s count as 0; a gap still open at the window's end counts up to it and "
        "marks the run *not recovered*); **failed tx**: attempts without an acknowledgement; **lost**: "
        "acknowledged commits absent from the final primary's ledger; **in doubt**: reported failed yet "
        "committed. **Safety**: runs where the balances summed up, the ledger matched them and no two writers "
        "(node, timeline) overlapped. Median (min–max) over the runs; the ratio is pgha's median "
        "unavailability over that row's.", ""]
    L += ["Scenarios and windows (the same for every system): " + "; ".join(
        f"**{s}** ({windows.get(s, 0):.0f} s): {SCENARIOS[s][1]}" for s in scenarios) + ".", ""]
    if notes:
        L += ["Notes on this run: " + " ".join(notes), ""]
    L += ["| scenario | system | timing: ttl / loop_wait / retry_timeout; routing | runs (recovered) | "
          "**write-unavailability, s** | failed tx | lost acked commits | in doubt | safety ok | "
          "pgha / this row, median unavailability |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in scenarios:
        pgha_rows = [r for r in rows if ROWS[r][0] == "pgha"]
        pgha_med = median([x.unavailability_s for x in results if x.scenario == s and x.row in pgha_rows[:1]])
        for row in rows:
            rs = [x for x in results if x.row == row and x.scenario == s]
            ok = [x for x in rs if x.unavailability_s is not None]
            rec = sum(1 for x in ok if x.recovered)
            safe = sum(1 for x in ok if x.invariant_ok and x.ledger_matches_balances is not False
                       and not x.overlapping_writers)
            med = median([x.unavailability_s for x in ok])
            rat = "—" if ROWS[row][0] == "pgha" else f"**{ratio(pgha_med, med)}**"
            L.append(f"| {s} | {system_name(row)} | {ROWS[row][2]} | {len(ok)}/{len(rs)} ({rec}) | "
                     f"**{bootstrap.spread([x.unavailability_s for x in ok], '{:.2f}')}** | "
                     f"{count_spread([x.failed_tx for x in ok])} | {count_spread([x.lost_acked for x in ok])} | "
                     f"{count_spread([x.in_doubt for x in ok])} | {safe}/{len(ok)} | {rat} |")
    L.append("")
    busy = [r for r in results if r.busy_before_pct >= args.quiet_below]
    if busy:
        L += [f"Machine load: {len(busy)} of {len(results)} runs started with the machine at or above "
              f"{args.quiet_below:.0f} % busy (other work on this {facts['nproc']}-core machine) after the bounded "
              "wait; they are in the figures all the same (busy figure of each run below).", ""]
    L += ["Each run, in the order run (gap: from the last commit before to the first after, s from the fault; "
          "lost: of which acknowledged before the fault; healed: the fault's own recovery, s after it acted; "
          "heal: the bench's heal after the run):", "",
          "| row | scenario | run | busy before, % | leader before → DCS leaders seen | unavailability, s "
          "(gap) | failed (unknown) | lost (before) | in doubt | acked | safety | writers | healed, s | "
          "heal, s | notes |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        gap = f"{f2(r.gap_from_s)} → {f2(r.gap_to_s)}" if r.gap_from_s is not None or r.gap_to_s is not None \
            else "-"
        unav = "-" if r.unavailability_s is None else \
            f"{r.unavailability_s:.2f}{'' if r.recovered else ' (not recovered)'} ({gap})"
        safety = "-" if r.invariant_ok is None else (
            "ok" if r.invariant_ok and r.ledger_matches_balances is not False and not r.overlapping_writers
            else f"invariant {'ok' if r.invariant_ok else 'BROKEN'}, ledger "
                 f"{'ok' if r.ledger_matches_balances is not False else 'BROKEN'}, overlaps {r.overlapping_writers}")
        note = "; ".join(x for x in [r.error, r.fault_error if r.fault_error not in r.error else "",
                                     "rebuilt" if r.rebuilt else ""] if x)
        note = note.replace("|", "/").replace("\n", " ")[:220]
        n = lambda v: "-" if v is None else str(v)  # noqa: E731
        L.append(f"| {r.row} | {r.scenario} | {r.run} | {r.busy_before_pct:.0f} | {r.leader_before} → "
                 f"{', '.join(r.leaders_seen) or '-'} | {unav} | {n(r.failed_tx)} ({n(r.unknown_outcome)}) | "
                 f"{n(r.lost_acked)} ({n(r.lost_acked_before_fault)}) | {n(r.in_doubt)} | {n(r.acked)} | {safety} | "
                 f"{', '.join(r.writers) or '-'} | {f2(r.healed_after_s)} | {f2(r.heal_s)} | {note} |")
    L.append("")
    return "\n".join(L)


def write_section(path: str, section: str) -> None:
    benchlib.write_section(path, SECTION, section)

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
    ap.add_argument("--runs", type=int, default=5, help="repetitions of each scenario on each row (default 5)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma-separated, from: {', '.join(ROWS)} "
                                                         f"(default {DEFAULT_ROWS})")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                    help=f"comma-separated verifier faults, from: {', '.join(SCENARIOS)} (default {DEFAULT_SCENARIOS})")
    ap.add_argument("--window", action="append", default=[], metavar="NAME=SECONDS",
                    help="a scenario's window (the same for every row); default 30 s, and lead + the slowest row's "
                         "ttl + loop_wait + 20 s, rounded up to 5 s, for kill-leader, freeze-leader, kill-dcs-member")
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
    orig = ap.parse_args(shlex.split(data["command"])[2:])
    results = vl.load_results(data["results"])
    section = render(results, data["facts"], orig, data["command"], orig.note + args.note, data["windows"])
    if args.note:
        section = section.replace("(from the repository root)", "(from the repository root); the notes were "
                                  "added afterwards with `--from-json`", 1)
    print(section)
    if args.out:
        write_section(args.out, section)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.from_json:
        return rerender(ap, args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not rows or not scenarios or any(r not in ROWS for r in rows) or any(s not in SCENARIOS for s in scenarios):
        ap.error(f"rows from {list(ROWS)}, scenarios from {list(SCENARIOS)}")
    if args.runs < 1:
        ap.error("--runs: at least 1")
    windows = windows_for(rows, scenarios, parse_windows(ap, args.window))
    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]) \
        if argv is None else "verify_bench.main(" + repr(argv) + ")"

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
        check_menu(scenarios, _capabilities_probe())
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
                base = vl.pick_base_port(args.base_port, seq, args.nodes)
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
            json.dump({"facts": facts, "command": command, "windows": windows,
                       "results": [asdict(r) for r in results]}, f, indent=2)
    if args.out:
        write_section(args.out, section)
        say(f"wrote the section to {args.out}; run logs are in {logdir}")
    return 0 if all(r.unavailability_s is not None and not r.error for r in results) else 1


def _capabilities_probe():
    """A stand-in target with every capability the bench's two targets have, to check the scenario names against
    the verifier's menu before anything starts (unknown names and netns faults are refused there)."""
    from pgha.verify.target import Target

    class Probe(Target):
        kind = "bench"
        capabilities = frozenset({"api", "sql", "processes"})
    return Probe()


if __name__ == "__main__":
    sys.exit(main())
