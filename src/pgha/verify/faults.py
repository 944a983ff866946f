"""The verifier's fault menu: each fault acts on the cluster through a ``Target`` and then waits for the cluster
to heal (the stopped agent restarted, the frozen one resumed, a leader again with streaming replicas).

Rules
1. A fault records the wall-clock instant it acted (``injected_at``) and the instant its own recovery was done
   (``healed_at``); an error is reported, never raised, and the faults after it still run.
2. Every wait is bounded by the context's deadline (the end of the run); a signal that stops a process is always
   undone (SIGCONT in ``finally``).
3. Random choices (the switchover candidate, the restart order) come from the seeded ``rng``.
4. The partition faults need network namespaces (`pgha up --netns`): a target without the ``netns`` capability
   refuses them before the run starts, with one clear message. A target that has it (partition.py's
   ``NetnsTarget``) implements ``partition(kind, ctx)``: cut, mark, hold past the lease, heal, wait healthy.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import time
from dataclasses import dataclass
from typing import Callable

from pgha.verify.target import Target, TargetError
from pgha.verify.workload import APP_NAME

NETNS_MISSING = ("needs `pgha up --netns` (network namespaces): give -c DIR/pgha.yml of a cluster started with it, "
                 "as root")
_STOPPED: set[int] = set()  # PIDs this process has SIGSTOPped and not yet resumed (rule 2)


def resume_all() -> None:
    """SIGCONT every process a fault stopped and has not resumed yet (an interrupted run); runs at exit too."""
    for pid in list(_STOPPED):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        _STOPPED.discard(pid)


atexit.register(resume_all)


class FaultError(Exception):
    pass


@dataclass
class FaultContext:
    target: Target
    rng: random.Random
    deadline: float  # time.monotonic()
    log: Callable[[str], None] = lambda line: None
    injected_at: float | None = None
    note: str = ""
    dcs_outage: float | None = None  # kill-dcs-member's hold, when given (a benchmark holds it equal for all)

    def mark(self, note: str = "") -> None:
        if self.injected_at is None:
            self.injected_at = time.time()
        if note:
            self.note = f"{self.note}; {note}" if self.note else note

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(self, condition: Callable[[], bool], what: str, interval: float = 0.2) -> None:
        """Rule 2: poll ``condition`` until it holds; FaultError naming ``what`` at the deadline."""
        for _ in range(int(self.remaining() / interval) + 2):
            if condition():
                return
            if time.monotonic() >= self.deadline:
                break
            time.sleep(interval)
        raise FaultError(f"timed out waiting for {what}")

    def hold(self, seconds: float) -> None:
        time.sleep(min(seconds, self.remaining()))


@dataclass(frozen=True)
class Outcome:
    injected_at: float | None
    healed_at: float | None
    note: str
    error: str


@dataclass(frozen=True)
class Fault:
    name: str
    needs: frozenset[str]
    help: str
    act: Callable[[FaultContext], None]


# --- helpers -----------------------------------------------------------------------------------------------
def _leader(ctx: FaultContext) -> str:
    found: list[str] = []

    def has_leader() -> bool:
        leader = ctx.target.leader()
        if leader:
            found.append(leader)
        return bool(leader)
    ctx.wait(has_leader, "the cluster to have a leader")
    return found[-1]


def _kill(pid: int | None, sig: int, what: str) -> None:
    if not pid:
        raise FaultError(f"{what} is not running")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise FaultError(f"{what} (pid {pid}) is gone") from None


def _gone(pid: int) -> Callable[[], bool]:
    from pgha.procutil import pid_alive
    return lambda: not pid_alive(pid)


def _heal(ctx: FaultContext) -> None:
    ctx.wait(ctx.target.healthy, "one leader and streaming replicas again")


def _new_leader(ctx: FaultContext, old: str) -> None:
    ctx.wait(lambda: ctx.target.leader() not in (None, old), f"a leader other than {old}")


# --- the faults --------------------------------------------------------------------------------------------
def none(ctx: FaultContext) -> None:
    ctx.mark("no fault: the workload alone")


def kill_leader(ctx: FaultContext) -> None:
    leader = _leader(ctx)
    agent, postmaster = ctx.target.agent_pid(leader), ctx.target.postmaster_pid(leader)
    _kill(agent, signal.SIGKILL, f"the agent of {leader}")
    if postmaster:
        try:
            os.kill(postmaster, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ctx.mark(f"SIGKILL {leader}'s agent and postmaster")
    _new_leader(ctx, leader)
    ctx.target.start_agent(leader, ctx.remaining())
    _heal(ctx)


def freeze_leader(ctx: FaultContext) -> None:
    leader = _leader(ctx)
    agent = ctx.target.agent_pid(leader)
    hold = ctx.target.ttl() + 2.0
    _kill(agent, signal.SIGSTOP, f"the agent of {leader}")
    _STOPPED.add(agent)  # type: ignore[arg-type]
    try:
        ctx.mark(f"SIGSTOP {leader}'s agent for {hold:.0f}s (ttl + 2)")
        ctx.hold(hold)
    finally:
        resume_all()
    _heal(ctx)


def crash_postgres(ctx: FaultContext) -> None:
    leader = _leader(ctx)
    old = ctx.target.postmaster_pid(leader)
    _kill(old, signal.SIGKILL, f"the postmaster of {leader}")
    ctx.mark(f"SIGKILL {leader}'s postmaster")
    # the DCS still shows the old state for a moment: first a new postmaster on that node, then healthy
    ctx.wait(lambda: ctx.target.postmaster_pid(leader) not in (None, old), f"{leader}'s PostgreSQL to restart")
    _heal(ctx)


def stop_leader(ctx: FaultContext) -> None:
    leader = _leader(ctx)
    agent = ctx.target.agent_pid(leader)
    _kill(agent, signal.SIGTERM, f"the agent of {leader}")
    ctx.mark(f"SIGTERM {leader}'s agent")
    ctx.wait(_gone(agent), f"{leader}'s agent to exit")
    ctx.target.start_agent(leader, ctx.remaining())
    _heal(ctx)


def switchover(ctx: FaultContext) -> None:
    import requests
    leader = _leader(ctx)
    replicas = ctx.target.streaming_replicas()
    if not replicas:
        raise FaultError("no streaming replica to switch over to")
    candidate = ctx.rng.choice(replicas)
    url = ctx.target.api_url(leader).rsplit("/", 1)[0] + "/switchover"
    ctx.mark(f"POST /switchover {leader} -> {candidate}")
    try:
        r = requests.post(url, data=json.dumps({"leader": leader, "candidate": candidate}),
                          auth=ctx.target.api_auth(), timeout=(3.0, max(1.0, min(60.0, ctx.remaining()))))
    except requests.RequestException as e:
        raise FaultError(f"POST {url}: {type(e).__name__}") from None
    if r.status_code != 200:
        raise FaultError(f"POST {url} answered {r.status_code}: {r.text.strip()[:200]}")
    _heal(ctx)


def terminate_backends(ctx: FaultContext) -> None:
    import psycopg
    leader = _leader(ctx)
    try:
        with psycopg.connect(ctx.target.node_conninfo(leader), connect_timeout=3, autocommit=True) as conn:
            ended = conn.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                                 " WHERE application_name = %s AND pid <> pg_backend_pid()",
                                 (APP_NAME,)).fetchone()[0]
    except psycopg.Error as e:
        raise FaultError(f"{leader}: {str(e).strip()[:200]}") from None
    ctx.mark(f"pg_terminate_backend on {leader}: {ended} client backends")


def restart_all(ctx: FaultContext) -> None:
    names = [m.name for m in ctx.target.members()]
    order = ctx.rng.sample(names, len(names))
    ctx.mark("restart in order " + ", ".join(order))
    for name in order:
        agent = ctx.target.agent_pid(name)
        _kill(agent, signal.SIGTERM, f"the agent of {name}")
        ctx.wait(_gone(agent), f"{name}'s agent to exit")
        ctx.target.start_agent(name, ctx.remaining())
        _heal(ctx)


def kill_dcs_member(ctx: FaultContext) -> None:
    pids = ctx.target.dcs_pids()
    if not pids:
        raise FaultError("no DCS process is running")
    pid = ctx.rng.choice(pids)
    # read before: the DCS is gone during the hold
    hold, why = (ctx.dcs_outage, "given") if ctx.dcs_outage is not None else (ctx.target.ttl(), "ttl")
    _kill(pid, signal.SIGKILL, "the DCS member")
    ctx.mark(f"SIGKILL the DCS member (pid {pid}), restarted after {hold:.0f}s ({why})")
    ctx.wait(_gone(pid), "the DCS member to exit")
    ctx.hold(hold)
    ctx.target.start_dcs(ctx.remaining())
    _heal(ctx)


def _partition(kind: str) -> Callable[[FaultContext], None]:
    def act(ctx: FaultContext) -> None:
        partition = getattr(ctx.target, "partition", None)
        if partition is None:
            raise FaultError(NETNS_MISSING)
        partition(kind, ctx)  # the netns target's own: cut, hold past the lease, heal (rule 4)
    return act


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("none", frozenset(), "no fault: the workload alone (a baseline)", none),
    Fault("kill-leader", frozenset({"processes"}), "kill -9 the leader node: its agent and its postmaster",
          kill_leader),
    Fault("freeze-leader", frozenset({"processes"}), "SIGSTOP the leader's agent for ttl + 2 s, then SIGCONT",
          freeze_leader),
    Fault("crash-postgres", frozenset({"processes"}), "kill -9 the leader's postmaster (the agent stays)",
          crash_postgres),
    Fault("stop-leader", frozenset({"processes"}), "SIGTERM the leader's agent, start it again once it exited",
          stop_leader),
    Fault("switchover", frozenset({"api"}), "POST /switchover to a streaming replica (seeded choice)", switchover),
    Fault("terminate-backends", frozenset({"sql"}), "pg_terminate_backend of the clients' backends on the leader",
          terminate_backends),
    Fault("restart-all", frozenset({"processes"}), "restart every node's agent, one by one, in seeded order",
          restart_all),
    Fault("kill-dcs-member", frozenset({"processes"}), "kill -9 the DCS process, start it again after ttl",
          kill_dcs_member),
    Fault("partition-leader-dcs", frozenset({"netns"}), "cut the leader off the DCS", _partition("leader-dcs")),
    Fault("partition-leader-replicas", frozenset({"netns"}), "cut the leader off the replicas",
          _partition("leader-replicas")),
    Fault("isolate-leader", frozenset({"netns"}), "cut the leader off everything", _partition("isolate")),
)}


def check_menu(names: list[str], target: Target | None) -> None:
    """Before the run: every fault exists and the target can serve it (FaultError with the reason)."""
    have = target.capabilities if target is not None else frozenset()
    for name in names:
        fault = FAULTS.get(name)
        if fault is None:
            raise FaultError(f"unknown fault {name!r}; the menu: {', '.join(FAULTS)}")
        missing = fault.needs - have
        if "netns" in missing:
            raise FaultError(f"{name}: {NETNS_MISSING}")
        if missing and target is None:
            raise FaultError(f"{name} needs a cluster: give -c DIR/pgha.yml of a `pgha up` cluster")
        if missing:
            raise FaultError(f"{name} needs {', '.join(sorted(missing))}, which a {target.kind} target does not "
                             "offer (a `pgha up` cluster's DIR/pgha.yml offers every fault)")


def run_fault(name: str, ctx: FaultContext) -> Outcome:
    """Rule 1: act, recover, and say when each happened; errors become the outcome's ``error``."""
    error = ""
    try:
        FAULTS[name].act(ctx)
    except (FaultError, TargetError, OSError) as e:
        error = str(e) or type(e).__name__
    except Exception as e:  # a fault must never take the run down with it
        error = f"{type(e).__name__}: {e}"
    healed = time.time() if not error else None
    return Outcome(ctx.injected_at, healed, ctx.note, error)
