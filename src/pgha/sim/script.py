"""Hand-written scenario scripts with their expected transcripts, in etcd raft's ``testdata`` (datadriven) style.

A script is a list of blocks separated by blank lines; each block is optional ``#`` comment lines, one command,
a ``----`` line, and the command's expected output (the transcript lines it produced)::

    # a. the leader's machine dies
    setup seed=1 ttl=6
    ----
    schedule 1: 3 nodes, ttl=6 ...

    kill leader
    ----
      20.000 --   FAULT kill n1

Commands
- ``setup [seed=N] [nodes=N] [ttl=N] [watchdog=on|off] [rewind=on|off] [nofailover=n3] [sync=off|on|quorum]
  [strict=on|off] [sync_nodes=N] [sync_lag=BYTES]``: first; starts agents. ``sync`` is the dynamic config's
  synchronous_mode, ``strict`` its synchronous_mode_strict, ``sync_nodes`` its synchronous_node_count,
  ``sync_lag`` its maximum_lag_on_syncnode.
- ``run <seconds>s``: let the world run.
- ``<fault> <target> [latency=<s>] [for=<s>]``: a fault of faults.py (kill, pgcrash, freeze, cutoff, outage,
  slow, stop, restart, stall, lag) on a node, ``leader``, ``replica`` or ``*``; with ``for=`` it heals by itself
  (for ``pgcrash``, ``for=`` is how long starting PostgreSQL keeps failing; default 0). ``switchover leader
  [to=<member>]`` writes the operator's request (to that member, or the healthiest replica).
- ``heal <fault> <target>``: undo that fault (a killed or stopped node comes back); ``heal all``: everything.
- ``converge``: run until converged for a while, or until the bound (3*ttl + 30 s) reports what is left.
- ``check converged`` / ``check leader`` / ``status``: print the state; ``check`` lines never fail the script,
  the comparison of the whole transcript does.
- ``check writes``: client writes acknowledged so far, those still waiting for synchronous standbys, and the
  acknowledged ones the leader's WAL lacks; ``check sync``: the ``sync`` key and the SSN in force on the
  primaries.

Rules
1. Every command's output is the transcript lines it produced, then its own result lines.
2. ``rewrite`` (env ``PGHA_SIM_REWRITE=1`` in the tests) writes the actual output back into the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from pgha.sim import faults, runner
from pgha.sim.faults import Fault, Schedule
from pgha.sim.invariants import convergence_problems
from pgha.sim.world import SimParams, World


class ScriptError(Exception):
    pass


@dataclass
class Block:
    comments: list[str]
    command: str
    output: list[str]


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        comments: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
            if lines[i].startswith("#"):
                comments.append(lines[i])
            i += 1
        if i >= len(lines):
            break
        command, i = lines[i].strip(), i + 1
        if i >= len(lines) or lines[i].strip() != "----":
            raise ScriptError(f"line {i + 1}: expected ---- after the command {command!r}")
        i += 1
        output: list[str] = []
        while i < len(lines) and lines[i].strip():
            output.append(lines[i])
            i += 1
        blocks.append(Block(comments, command, output))
    return blocks


def render(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        parts.append("\n".join(b.comments + [b.command, "----"] + (b.output or ["ok"])))
    return "\n\n".join(parts) + "\n"


class Session:
    """One script's world, fed command by command."""

    def __init__(self) -> None:
        self.world: World | None = None
        self.heals: dict[tuple[str, str], Callable[[], None]] = {}
        self._seen = 0

    def run(self, command: str) -> list[str]:
        words = command.split()
        if not words:
            raise ScriptError("empty command")
        verb, args = words[0], words[1:]
        if verb == "setup":
            return self._setup(args) + self._new_lines()
        if self.world is None:
            raise ScriptError("the first command must be setup")
        out = self._dispatch(verb, args)
        return self._new_lines() + out

    def _new_lines(self) -> list[str]:
        assert self.world is not None and self.world.lines is not None
        lines = self.world.lines[self._seen:]
        self._seen = len(self.world.lines)
        return lines

    def _setup(self, args: list[str]) -> list[str]:
        opts = _options(args)
        on = {"on": True, "off": False}
        mode = opts.get("sync", "off")
        if mode not in ("off", "on", "quorum"):
            raise ScriptError(f"sync={mode}: expected off, on or quorum")
        params = SimParams(nodes=int(opts.get("nodes", 3)), ttl=int(opts.get("ttl", 6)),
                           watchdog=on[opts.get("watchdog", "on")], use_pg_rewind=on[opts.get("rewind", "on")],
                           nofailover=tuple(n for n in opts.get("nofailover", "").split(",") if n),
                           synchronous_mode=mode, synchronous_mode_strict=on[opts.get("strict", "off")],
                           synchronous_node_count=int(opts.get("sync_nodes", 1)),
                           maximum_lag_on_syncnode=int(opts.get("sync_lag", -1)))
        seed = int(opts.get("seed", 1))
        self.world = World(params, seed, transcript=True)
        for node in self.world.nodes.values():
            node.start_agent()
        return Schedule(seed, params, ()).describe()

    def _dispatch(self, verb: str, args: list[str]) -> list[str]:
        world = self.world
        assert world is not None
        with runner.quiet():
            world.start_recording()
            try:
                return self._command(world, verb, args)
            finally:
                world.stop_recording()

    def _command(self, world: World, verb: str, args: list[str]) -> list[str]:
        if verb == "run":
            world.run_until(world.now + _seconds(args[0]))
            return []
        if verb == "converge":
            ok = runner.converge(world)
            return self._new_lines() + [f"converged: {'yes' if ok else 'no'}"]
        if verb == "check":
            return self._check(world, args)
        if verb == "status":
            return [world.describe()]
        if verb == "heal":
            return self._heal(world, args)
        if verb in faults.ALL_KINDS:
            return self._fault(world, verb, args)
        raise ScriptError(f"unknown command {verb!r}")

    def _fault(self, world: World, kind: str, args: list[str]) -> list[str]:
        if not args:
            raise ScriptError(f"{kind} needs a target")
        opts = _options(args[1:])
        duration = _seconds(opts["for"]) if "for" in opts else (0.0 if kind == "pgcrash" else math.inf)
        latency = _seconds(opts.get("latency", "0s"))
        fault = Fault(kind, args[0], world.now, duration, latency, opts.get("to", ""))
        targets = ",".join(n.name for n in faults.resolve(world, args[0]))
        heal = faults.apply(world, fault)
        if kind == "pgcrash":
            pass  # nothing to heal: it only keeps PostgreSQL from starting for ``for=`` seconds
        elif duration != math.inf:
            world.schedule(world.now + duration, heal)
        else:
            self.heals[(kind, args[0] if args[0] == "*" else targets)] = heal
        return []

    def _heal(self, world: World, args: list[str]) -> list[str]:
        if args == ["all"]:
            world.note(None, "HEAL everything left")
            faults.heal_all(world)
            return []
        heal = self.heals.pop((args[0], args[1]), None) if len(args) == 2 else None
        if heal is None:
            raise ScriptError(f"nothing to heal for {' '.join(args)!r} (known: {sorted(self.heals)})")
        heal()
        return []

    def _check(self, world: World, args: list[str]) -> list[str]:
        what = args[0] if args else "converged"
        if what == "leader":
            return [f"leader: {world.leader_holder() or 'none'}"]
        if what == "writes":
            waiting = ", ".join(f"{n.name} {len(n.pg.pending)}" for n in world.nodes.values() if n.pg.pending)
            return [f"writes: {len(world.writes)} acknowledged, {world.pending_writes()} waiting"
                    + (f" ({waiting})" if waiting else "") + f", {world.lost_writes()} acknowledged lost"]
        if what == "sync":
            entry = world.store.get(world.keys.key("sync"))
            lines = [f"sync key: {entry.value if entry is not None else '-'}"]
            for node in world.nodes.values():
                if node.pg.accepting_writes:
                    lines.append(f"{node.name} synchronous_standby_names: '{node.pg.sync_standby_names}'")
            return lines
        if what == "converged":
            problems = convergence_problems(world)
            if not problems:
                return [f"converged: leader {world.leader_holder()}, all others streaming from it"]
            return [f"not converged: {node}: {problem}" + (" (known gap)" if expected else "")
                    for node, problem, expected in problems]
        raise ScriptError(f"unknown check {what!r}")


def _options(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ScriptError(f"expected key=value, got {arg!r}")
        out[key] = value
    return out


def _seconds(text: str) -> float:
    return float(text[:-1] if text.endswith("s") else text)


def run_script(text: str) -> tuple[str, list[Block]]:
    """Run a script; returns (the script with the actual outputs, the blocks as parsed)."""
    blocks = parse(text)
    session = Session()
    actual = [Block(b.comments, b.command, session.run(b.command)) for b in blocks]
    return render(actual), blocks
