#!/usr/bin/env python3
"""Synchronous replication benchmark (issue #7): acknowledged commits lost across many leader faults, per
synchronous_mode, measured by `pgha verify` on a real local cluster (`pgha up`'s LocalCluster), on 127.0.0.1 (or
in the cluster's own network namespaces with --netns).

For each mode (off, on, quorum) a fresh 3-node cluster is bootstrapped with that mode in bootstrap.dcs; then
1. a fault run: `pgha verify` with --faults leader faults cycling through kill-leader, freeze-leader,
   crash-postgres (and partition-leader-dcs with --netns), one --window seconds each, 4 clients through HAProxy;
2. a latency run: `pgha verify --fault none` for --latency-seconds, clients as fast as they can (--rate 0).
Per mode: faults injected, acknowledged commits, lost acknowledged commits, in-doubt commits, the balance
invariant, overlapping writers, unavailability per fault kind (median / max), transaction latency p50 / p99.

    python bench/sync_loss.py --faults 52 --out docs/BENCHMARKS.md

Everything started is stopped by PID (`pgha down`), every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

from pgha.local.cluster import LocalCluster  # noqa: E402
from pgha.local.layout import Layout  # noqa: E402

SECTION = "## Synchronous replication: acknowledged commits lost across leader faults"
TIMING = {"ttl": 4, "loop_wait": 1, "retry_timeout": 1}
FAULT_CYCLE = ["kill-leader", "freeze-leader", "crash-postgres"]


def say(line: str) -> None:
    print(time.strftime("%H:%M:%S"), line, flush=True)


def verify(layout: Layout, faults: list[str], seconds: float, out: str, rate: float, timeout: float,
           dsn: str | None = None) -> dict:
    """One `pgha verify` run (its JSON report); through ``dsn`` when given, else the cluster's router."""
    argv = [sys.executable, "-m", "pgha", "-c", layout.ctl_config, "verify", "--duration", f"{seconds:.0f}",
            "--json", out, "--clients", "4", "--rate", str(rate), "--seed", "1"] + (["--dsn", dsn] if dsn else [])
    for fault in faults:
        argv += ["--fault", fault]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if not os.path.exists(out):
        raise RuntimeError(f"pgha verify wrote no report (exit {proc.returncode}): {proc.stderr[-2000:]}")
    print(proc.stdout[-3000:])
    with open(out) as f:
        return json.load(f)


def run_mode(mode: str, args, root: str) -> dict[str, Any]:
    layout = Layout(os.path.join(root, mode), 3, args.base_port + {"off": 0, "on": 1000, "quorum": 2000}[mode])
    cluster = LocalCluster(layout, say=lambda line: None, netns=args.netns)
    faults = [FAULT_CYCLE[i % len(FAULT_CYCLE)] for i in range(args.faults)]
    if args.netns:
        faults = [(FAULT_CYCLE + ["partition-leader-dcs"])[i % 4] for i in range(args.faults)]
    try:
        say(f"{mode}: bootstrapping a 3-node cluster with synchronous_mode {mode}")
        cluster.up(timeout=300, timing={**TIMING, "synchronous_mode": mode})
        say(f"{mode}: {len(faults)} leader faults, {args.window:.0f}s each")
        report = verify(layout, faults, len(faults) * args.window, os.path.join(root, f"{mode}-faults.json"),
                        rate=50, timeout=len(faults) * args.window + 900)
        say(f"{mode}: latency run, {args.latency_seconds:.0f}s as fast as possible")
        quiet = verify(layout, ["none"], args.latency_seconds, os.path.join(root, f"{mode}-latency.json"),
                       rate=0, timeout=args.latency_seconds + 300)
    finally:
        cluster.down()
    return {"mode": mode, "report": report, "latency": quiet}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    r = result["report"]
    injected = [f for f in r["faults"] if not f.get("error")]
    by_kind: dict[str, list[float]] = {}
    for f in injected:
        by_kind.setdefault(f["fault"], []).append(f["unavailability_s"])
    return {
        "mode": result["mode"], "faults": len(r["faults"]), "injected": len(injected), "acked": r["acked"],
        "lost_acked": r["lost_acked"], "in_doubt": r["in_doubt"], "invariant_ok": r["invariant_ok"],
        "overlapping": sum(len(f.get("overlapping_writers") or []) for f in r["faults"]),
        "unavail": {k: (statistics.median(v), max(v)) for k, v in sorted(by_kind.items())},
        "latency": result["latency"].get("latency_ms", {}),
        "tps": result["latency"]["acked"] / max(1e-9, result["latency"]["duration_s"]),
    }


def render(rows: list[dict[str, Any]], args) -> str:
    lines = [SECTION, "", f"Command: `python bench/sync_loss.py --faults {args.faults} --window {args.window:.0f}"
             f"{' --netns' if args.netns else ''} --out docs/BENCHMARKS.md` ({time.strftime('%Y-%m-%d')}, this "
             "machine: 2 cores; PostgreSQL 15, etcd, HAProxy + `pgha router`, 3 nodes, pgha's default timing).", "",
             "| synchronous_mode | leader faults injected | acknowledged | lost acknowledged | in doubt | "
             "invariant | overlapping writers | unavailability s, median / max per fault | latency ms p50 / p99 "
             "(tx/s, 4 clients) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        unavail = "; ".join(f"{k} {m:.2f} / {x:.2f}" for k, (m, x) in s["unavail"].items())
        lat = s["latency"]
        lines.append(f"| {s['mode']} | {s['injected']} of {s['faults']} | {s['acked']} | {s['lost_acked']} | "
                     f"{s['in_doubt']} | {'ok' if s['invariant_ok'] else 'BROKEN'} | {s['overlapping']} | {unavail} | "
                     f"{lat.get('p50', '?')} / {lat.get('p99', '?')} ({s['tps']:.0f}) |")
    lines += ["", "Lost acknowledged: commits a client saw succeed that the final primary does not have. In doubt: "
              "commits that reported an error but are present (counted apart). Unavailability: from the last "
              "commit before the fault to the first after it.", ""]
    return "\n".join(lines)


def write_section(path: str, text: str) -> None:
    benchlib.write_section(path, SECTION, text)

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=52, help="leader faults per mode (default 52)")
    ap.add_argument("--window", type=float, default=14.0, help="seconds of workload per fault (default 14)")
    ap.add_argument("--modes", default="off,on,quorum")
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--netns", action="store_true", help="run the nodes in network namespaces and add "
                    "partition-leader-dcs to the fault cycle")
    ap.add_argument("--base-port", type=int, default=41000)
    ap.add_argument("--workdir", default="/tmp/pgha-bench-sync")
    ap.add_argument("--out", help="markdown file to write the section into (e.g. docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write the raw reports here")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("off", "on", "quorum")]
    if bad or not modes:
        ap.error(f"--modes: expected a comma-separated list of off, on, quorum; got {args.modes!r}")
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir, mode=0o755)
    os.chmod(args.workdir, 0o755)  # PostgreSQL runs as postgres and must reach its data directories
    results = [run_mode(m, args, args.workdir) for m in modes]
    rows = [summarize(r) for r in results]
    text = render(rows, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.out:
        write_section(args.out, text)
    return 0 if all(s["lost_acked"] == 0 for s in rows if s["mode"] != "off") else 1


if __name__ == "__main__":
    sys.exit(main())
