#!/usr/bin/env python3
"""Zero-error switchover through PgBouncer (issue #8 point 2), measured with the verifier: `pgha verify`'s bank
clients through PgBouncer (transaction pooling, `pgha up --pgbouncer`) across --switchovers planned switchovers,
then the same count through HAProxy's rw port on the same cluster, for comparison. On 127.0.0.1 only.

Per route: switchovers injected, failed transactions (all switchovers together and the most in one), lost
acknowledged commits, in-doubt commits, the balance invariant, write-unavailability per switchover (median / max)
and the longest stall: the slowest acknowledged transaction, which through PgBouncer is the time a client waited
in PAUSE.

    python bench/pgbouncer_verify.py --switchovers 20 --out docs/BENCHMARKS.md

Everything started is stopped by PID (`pgha down`), every wait is bounded. Exit status 1 when a transaction
failed through PgBouncer or an acknowledged commit was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from sync_loss import say, verify  # noqa: E402  (one `pgha verify` run, its JSON report)

from pgha.local.cluster import LocalCluster  # noqa: E402
from pgha.local.layout import Layout  # noqa: E402

SECTION = "## The verifier through PgBouncer: failed transactions across planned switchovers"


def dsn(layout: Layout, port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/postgres?passfile={layout.client_pgpass}"


def summarize(route: str, r: dict[str, Any]) -> dict[str, Any]:
    done = [f for f in r["faults"] if f.get("injected_at") is not None and not f.get("error")]
    unavail = [f["unavailability_s"] for f in done]
    return {"route": route, "switchovers": len(done), "asked": len(r["faults"]), "acked": r["acked"],
            "failed": sum(f["failed_tx"] for f in r["faults"]),
            "worst": max((f["failed_tx"] for f in r["faults"]), default=0),
            "lost": r["lost_acked"], "in_doubt": r["in_doubt"], "invariant_ok": r["invariant_ok"],
            "unavail": (statistics.median(unavail), max(unavail)) if unavail else None,
            "latency": r.get("latency_ms", {})}


def render(rows: list[dict[str, Any]], args) -> str:
    lines = [SECTION, "", f"Command: `python bench/pgbouncer_verify.py --switchovers {args.switchovers} --window "
             f"{args.window:.0f} --out docs/BENCHMARKS.md` ({time.strftime('%Y-%m-%d')}, this machine: 2 cores; "
             "`pgha up --pgbouncer`: 3 nodes, PostgreSQL 15, etcd, PgBouncer 1.18 in transaction pooling with "
             "`pgha pgbouncer`, HAProxy + `pgha router`; the verifier's 4 clients at 50 transfers/s each, one "
             f"switchover every {args.window:.0f} s).", "",
             "| route | switchovers | acknowledged | failed transactions (most in one switchover) | lost "
             "acknowledged | in doubt | invariant | unavailability s, median / max | longest stall ms | "
             "latency ms p50 / p99 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        un = f"{s['unavail'][0]:.2f} / {s['unavail'][1]:.2f}" if s["unavail"] else "-"
        lat = s["latency"]
        lines.append(f"| {s['route']} | {s['switchovers']} of {s['asked']} | {s['acked']} | {s['failed']} "
                     f"({s['worst']}) | {s['lost']} | {s['in_doubt']} | {'ok' if s['invariant_ok'] else 'BROKEN'} | "
                     f"{un} | {lat.get('max', '-')} | {lat.get('p50', '-')} / {lat.get('p99', '-')} |")
    lines += ["", "Through PgBouncer, `pgha pgbouncer` PAUSEs it when the leader is asked to step down and RESUMEs "
              "it on the new leader, so a transaction waits instead of failing; the longest stall is the slowest "
              "acknowledged transaction of the run. Through HAProxy, transactions in flight on the old leader fail "
              "and the clients reconnect. Unavailability: from the last commit before the switchover to the first "
              "after it.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switchovers", type=int, default=20, help="switchovers per route (default 20)")
    ap.add_argument("--window", type=float, default=8.0, help="seconds of workload per switchover (default 8)")
    ap.add_argument("--base-port", type=int, default=44000)
    ap.add_argument("--workdir", default="/tmp/pgha-bench-pgbouncer")
    ap.add_argument("--out", help="markdown file to write the section into (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write the raw reports here")
    args = ap.parse_args(argv)
    if not 1 <= args.switchovers <= 500 or not 4 <= args.window <= 600:
        ap.error("--switchovers: expected 1..500; --window: expected 4..600 seconds")
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir, mode=0o755)
    os.chmod(args.workdir, 0o755)  # PostgreSQL runs as postgres and must reach its data directories
    layout = Layout(args.workdir, 3, args.base_port)
    cluster = LocalCluster(layout, say=lambda line: None, pgbouncer=True)
    faults = ["switchover"] * args.switchovers
    seconds = args.switchovers * args.window
    reports: dict[str, Any] = {}
    try:
        say("bootstrapping a 3-node cluster with PgBouncer")
        cluster.up(timeout=300)
        for route, port in (("PgBouncer", layout.pgbouncer_port), ("HAProxy", layout.rw_port)):
            say(f"{route}: {args.switchovers} switchovers, {args.window:.0f}s each")
            reports[route] = verify(layout, faults, seconds, os.path.join(args.workdir, f"{route}.json"), rate=50,
                                    timeout=seconds + 600, dsn=dsn(layout, port))
    finally:
        cluster.down()
    rows = [summarize(route, r) for route, r in reports.items()]
    text = render(rows, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    if args.out:
        benchlib.write_section(args.out, SECTION, text)
    bouncer = rows[0]
    return 0 if bouncer["failed"] == 0 and all(s["lost"] == 0 for s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
