"""`pgha sim`: the deterministic simulator (pgha.sim) from the command line.

    pgha sim --schedules 10000 --seed 1          # many seeded random fault schedules, across all CPUs
    pgha sim --replay 1000076                     # one schedule again, with its readable transcript
    pgha sim --schedules 2000 --sync-mode quorum  # every schedule with synchronous_mode: quorum
    pgha sim --script tests/sim/scenarios/a_node_death.txt [--rewrite]

A failing run prints, for each failing schedule, the invariant that broke and the one command that replays it;
the first ``--show`` of them also with their transcripts. Exit status 1 when any schedule failed.

``--sync-mode`` (default ``mixed``: each schedule's seed picks off, on or quorum, sometimes strict) sets the
dynamic configuration's ``synchronous_mode``; the summary gives, per mode, the schedules run and the acknowledged
writes the final leader lacks (asynchronous replication loses some; with on or quorum any loss already failed
the ``acked-writes`` invariant).
"""

from __future__ import annotations

import sys
import time

import click


def _replay_command(seed: int, watchdog: bool, sync_mode: str = "mixed") -> str:
    return (f"pgha sim --replay {seed}" + ("" if watchdog else " --no-watchdog")
            + ("" if sync_mode == "mixed" else f" --sync-mode {sync_mode}"))


def _print_outcome(outcome, watchdog: bool, sync_mode: str = "mixed") -> None:
    for line in outcome.lines or ():
        click.echo(line)
    for v in outcome.failures:
        click.echo(f"FAILED {v.invariant} at {v.time:.3f}: {v.message}")
    for v in outcome.expected:
        click.echo(f"known gap {v.invariant} at {v.time:.3f}: {v.message}")
    click.echo(f"replay: {_replay_command(outcome.seed, watchdog, sync_mode)}")


def _replay(seed: int, watchdog: bool, sync_mode: str = "mixed") -> int:
    from pgha.sim import runner
    outcome = runner.run_seed(seed, watchdog=watchdog, transcript=True, sync_mode=sync_mode)
    _print_outcome(outcome, watchdog, sync_mode)
    return 0 if outcome.ok else 1


def _script(path: str, rewrite: bool) -> int:
    from pgha.sim.script import run_script
    with open(path, encoding="utf-8") as f:
        text = f.read()
    actual, _ = run_script(text)
    if rewrite:
        with open(path, "w", encoding="utf-8") as f:
            f.write(actual)
        click.echo(f"rewrote {path}")
        return 0
    click.echo(actual, nl=False)
    return 0 if actual == text else 1


def _modes(summary) -> None:
    click.echo("  per synchronous_mode (acknowledged writes the final leader lacks; on/quorum must lose none):")
    for name in ("off", "on", "quorum"):
        m = summary.modes.get(name)
        if m is None:
            continue
        strict = f" ({m.strict} strict)" if m.strict else ""
        click.echo(f"    {name:<7} {m.schedules} schedules{strict}, {m.failed} failed, {m.acked_writes} writes "
                   f"acknowledged, {m.lost_writes} lost")


def _many(count: int, seed: int, workers: int, watchdog: bool, show: int, gate: str = "all",
          sync_mode: str = "mixed") -> int:
    from pgha.sim import runner
    started = time.monotonic()
    summary = runner.run_many(count, seed, workers, watchdog, sync_mode)
    elapsed = time.monotonic() - started
    click.echo(f"pgha sim: {summary.schedules} schedules (seed {seed}, watchdog {'on' if watchdog else 'off'}, "
               f"sync-mode {sync_mode}) in {elapsed:.1f}s; {summary.sim_time:.0f}s simulated, {summary.steps} steps")
    passed = summary.schedules - len(summary.failed) - len(summary.with_expected)
    click.echo(f"  passed: {passed}")
    if summary.with_expected:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary.expected.items()))
        click.echo(f"  known gaps only (not failures): {len(summary.with_expected)} schedules "
                   f"(fault kinds: {kinds})")
    click.echo(f"  acknowledged writes lost to failovers (asynchronous replication): {summary.lost_writes}")
    _modes(summary)
    click.echo(f"  failed: {len(summary.failed)}")
    for outcome in summary.failed:
        first = outcome.failures[0]
        click.echo(f"    {outcome.seed} [{','.join(outcome.kinds)}] sync={outcome.mode} {first.invariant}: "
                   f"{first.message}")
        click.echo(f"      replay: {_replay_command(outcome.seed, watchdog, sync_mode)}")
    for outcome in summary.failed[:show]:
        click.echo("")
        click.echo(f"=== transcript of schedule {outcome.seed} ===")
        _print_outcome(runner.run_seed(outcome.seed, watchdog=watchdog, transcript=True, sync_mode=sync_mode),
                       watchdog, sync_mode)
    if gate == "safety":
        unsafe = [o for o in summary.failed if any(v.invariant != "converge" for v in o.failures)]
        click.echo(f"  gate: safety invariants only; {len(summary.failed) - len(unsafe)} schedule(s) failed only "
                   f"the convergence check (listed above, not gating this run)")
        return 1 if unsafe else 0
    return 1 if summary.failed else 0


@click.command("sim")
@click.option("--schedules", "-n", type=int, default=1000, show_default=True, help="random fault schedules to run")
@click.option("--seed", "-s", type=int, default=1, show_default=True, help="base seed of the schedules")
@click.option("--replay", type=int, metavar="SEED", help="run one schedule again (the seed printed) with its transcript")
@click.option("--workers", "-w", type=int, default=0, help="worker processes (default: one per CPU)")
@click.option("--no-watchdog", is_flag=True, help="nodes have no watchdog (a frozen agent cannot be fenced)")
@click.option("--show", type=int, default=3, show_default=True, help="transcripts printed for the first failures")
@click.option("--script", type=click.Path(exists=True, dir_okay=False), help="run a scenario script (datadriven)")
@click.option("--rewrite", is_flag=True, help="with --script: write the actual transcript into the file")
@click.option("--gate", type=click.Choice(["all", "safety"]), default="all", show_default=True,
              help="which failures make the exit status 1: every invariant, or only the safety ones")
@click.option("--sync-mode", type=click.Choice(["off", "on", "quorum", "mixed"]), default="mixed", show_default=True,
              help="synchronous_mode of the schedules (mixed: each seed picks off, on or quorum)")
def sim(schedules: int, seed: int, replay: int | None, workers: int, no_watchdog: bool, show: int,
        script: str | None, rewrite: bool, gate: str, sync_mode: str) -> None:
    """Deterministic simulation: real agents, fake clock, DCS and PostgreSQL, seeded faults, checked invariants."""
    watchdog = not no_watchdog
    if script is not None:
        sys.exit(_script(script, rewrite))
    if replay is not None:
        sys.exit(_replay(replay, watchdog, sync_mode))
    sys.exit(_many(schedules, seed, workers, watchdog, show, gate, sync_mode))
