#!/usr/bin/env python3
"""The simulator's CI gate, timed (issue #3: at least 10,000 schedules in CI in under 3 minutes): runs exactly the
command scripts/test.sh runs, `pgha sim --schedules 10000 --seed 1 --workers 2 --gate all`, --repeat times, and
records the wall-clock time of each run with the gate's outcome (schedules, failures, acknowledged writes lost
per synchronous mode).

    python bench/sim_speed.py --repeat 3 --out docs/BENCHMARKS.md

Exit status 1 when a run failed its gate. Nothing is started but the simulator itself (no network, no files but
--out).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

SECTION = "## The simulator: 10,000 schedules, as CI runs them"
GATE = ["-m", "pgha", "sim", "--schedules", "10000", "--seed", "1", "--workers", "2", "--gate", "all", "--show", "1"]


def one_run(timeout: float) -> tuple[float, int, str]:
    """(wall seconds, exit status, the sim's summary text)."""
    python = os.path.join(REPO, ".venv", "bin", "python")
    start = time.monotonic()
    proc = subprocess.run([python if os.path.exists(python) else sys.executable] + GATE, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - start, proc.returncode, proc.stdout + proc.stderr


def modes(summary: str) -> list[str]:
    """The per-mode lines of the sim's summary ("off 3365 schedules, 0 failed, ... lost")."""
    return [line.strip() for line in summary.splitlines() if re.match(r"\s+(off|on|quorum)\s+\d+ schedules", line)]


def render(runs: list[tuple[float, int, str]]) -> str:
    seconds = [r[0] for r in runs]
    last = runs[-1][2]
    lines = [SECTION, "", f"Command: `python bench/sim_speed.py --repeat {len(runs)} --out docs/BENCHMARKS.md` "
             f"({time.strftime('%Y-%m-%d')}, this machine: {os.cpu_count()} cores), which runs scripts/test.sh's "
             f"gate `python {' '.join(GATE)}`.", "",
             "| runs | wall-clock s, median (min-max) | gate |", "|---|---|---|",
             f"| {len(runs)} | {statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | "
             f"{'passed every time' if all(r[1] == 0 for r in runs) else 'FAILED'} |", "",
             "The last run's outcome per synchronous mode (acknowledged writes the final leader lacks; on and quorum "
             "must lose none):", ""]
    lines += [f"    {line}" for line in modes(last)] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of the gate (default 3)")
    ap.add_argument("--out", help="markdown file to write the section into (e.g. docs/BENCHMARKS.md)")
    args = ap.parse_args(argv)
    if not 1 <= args.repeat <= 20:
        ap.error("--repeat: expected 1..20")
    runs = []
    for k in range(args.repeat):
        runs.append(one_run(timeout=1800))
        print(f"run {k + 1}: {runs[-1][0]:.1f}s, exit {runs[-1][1]}", flush=True)
    text = render(runs)
    print(text)
    if args.out:
        benchlib.write_section(args.out, SECTION, text)
    return 0 if all(r[1] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
