"""The verifier benchmark's scenario and row tables and its Markdown rendering (bench/verify_bench.py runs it):
what each scenario does and which systems and timings the rows are, then the per-scenario table (median and
spread per system, the pgha/Patroni ratio) and the per-run table, from plain ``verify_lib.RunResult`` values.
No I/O here.
"""

from __future__ import annotations

import statistics

import bootstrap  # (spread)
import patroni_netns as pn
import verify_lib as vl

SECTION = "## The verifier on both systems: write-unavailability and lost commits per fault"
PATRONI_FASTEST = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3}   # Patroni 4.1.5's minimums (config.py)
PATRONI_DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
PGHA_DEFAULTS = {"ttl": 4, "loop_wait": 1, "retry_timeout": 1}       # for the windows only (LocalCluster's own)
# name -> (system, timing given (None: the system's own defaults, nothing set), label)
ROWS: dict[str, tuple[str, dict[str, int] | None, str]] = {
    "pgha-default": ("pgha", None, "4 / 1 / 1, pgha's defaults (not set); HAProxy + `pgha router`"),
    "patroni-fastest": ("patroni", PATRONI_FASTEST, "20 / 1 / 3, Patroni's fastest accepted; HAProxy checks only"),
    "patroni-default": ("patroni", None, "30 / 10 / 10, Patroni's defaults (not set); HAProxy checks only"),
    "pgha-netns": ("pgha", None, "4 / 1 / 1, pgha's defaults; `pgha up --netns`, HAProxy + `pgha router`"),
    "patroni-netns": ("patroni", PATRONI_FASTEST, "20 / 1 / 3, Patroni's fastest; in namespaces, HAProxy checks only"),
}
NETNS_ROWS = "pgha-netns,patroni-netns"   # --netns: each node, and etcd, in a network namespace (patroni_netns.py)
DEFAULT_ROWS = "pgha-default,patroni-fastest"
# scenario -> (waits for the lease: its window grows with the slowest row's ttl, what it does)
SCENARIOS: dict[str, tuple[bool, str]] = {
    "kill-leader": (True, "node death: SIGKILL the leader's agent and postmaster; restart the agent once another "
                          "node leads"),
    "crash-postgres": (False, "SIGKILL the leader's postmaster, the agent stays"),
    "stop-leader": (False, "SIGTERM the leader's agent (graceful); restart it once it exited"),
    "freeze-leader": (True, "SIGSTOP the leader's agent for ttl + 2 s, then SIGCONT"),
    "switchover": (False, "POST /switchover to the leader's REST API, candidate a streaming replica (seeded)"),
    "kill-dcs-member": (True, "SIGKILL etcd (the only member), start it again after {outage:g} s (--dcs-outage), "
                              "the same for every row"),
    "terminate-backends": (False, "pg_terminate_backend of the verifier's client backends on the leader"),
    "restart-all": (True, "SIGTERM every node's agent, one by one in seeded order, each started again and the "
                          "cluster healthy before the next"),
    "partition-leader-dcs": (True, "cut the leader off etcd (blackhole routes both ways) for ttl + 2 s, then heal"),
    "partition-leader-replicas": (True, "cut the leader off every other node for ttl + 2 s, then heal"),
    "isolate-leader": (True, "the leader's link down (off etcd, its peers and HAProxy) for ttl + 2 s, then up"),
}
PARTITIONS = "partition-leader-dcs,partition-leader-replicas,isolate-leader"
EXTRA_SECTION = "## The verifier on both systems: client backends terminated, rolling restart"
NETNS_SECTION = "## The verifier on both systems: network partitions"
DCS_SECTION = "## The verifier on both systems: the DCS member killed"
DEFAULT_SCENARIOS = "kill-leader,crash-postgres,stop-leader,freeze-leader,switchover"
LEAD = 2.0        # the verifier acts min(2 s, window / 2) into the window
SHORT_WINDOW = 30.0


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
    heading = heading_for(args)
    where = "network namespaces on this one machine (below)" if heading == NETNS_SECTION else "loopback only"
    L = [heading, "", f"Produced by `{command}` (from the repository root), {facts['date']}.", ""]
    L += ["Machine: "
          f"`nproc` {facts['nproc']} ({facts['cpu']}), {facts['memory']} memory, Linux {facts['kernel']}, "
          f"{where}. {facts['postgresql']}; {facts['etcd']} (one member); Patroni {facts['patroni']}; "
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
    if L[0] == NETNS_SECTION:
        L += [pn.SECTION_NOTE, ""]
    L += ["Scenarios and windows (the same for every system): " + "; ".join(
        f"**{s}** ({windows.get(s, 0):.0f} s): {SCENARIOS[s][1].format(outage=args.dcs_outage)}"
        for s in scenarios) + ".", ""]
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


def heading_for(args) -> str:
    """Its own section for the netns rows, for runs of terminate-backends / restart-all alone, and for runs of
    kill-dcs-member alone (the main section holds the --runs 5 table of the default scenarios)."""
    if getattr(args, "netns", False) or "-netns" in args.rows:
        return NETNS_SECTION
    asked = set(args.scenarios.split(","))
    if asked <= {"terminate-backends", "restart-all"}:
        return EXTRA_SECTION
    if asked == {"kill-dcs-member"}:
        return DCS_SECTION
    return SECTION
