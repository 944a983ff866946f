"""One simulated machine: the real ``Agent`` (real executor, real ``decide()``) over the fakes of world.py.

A node owns its fake PostgreSQL (whose data outlives agents) and at most one agent *incarnation* (an ``Agent``
with its own ``SimDcs`` session, ``SimJobs`` and, with the watchdog on, ``SimFencer``). Killing the agent and
starting it again builds a new incarnation on the same data, as a process restart does; the killed agent's fencer
lives on until its deadline, as the real fencer process does.

Rules
1. The agent is driven only through ``Agent.tick()`` and ``Agent._next_wait()``: never ``run()`` (which sleeps on
   the wall clock). The few lines of ``run()`` around the loop are mirrored here: ``dcs.set_ttl`` and
   ``refuse_duplicate_name()`` at start; after a shutdown tick or ``AgentExit``, ``node.close()``,
   ``fencer.close()`` and ``dcs.close(revoke=True)`` (``_exit``). An unexpected exception from ``tick()`` is a
   failure (the real loop would log it and go on).
2. A tick is atomic at the world's time: the DCS and the other nodes see its effects at that time. The agent's
   own clock runs on inside the tick by the time its DCS calls took (``SimDcs.cost``), so its call deadlines and
   its observation time are a real agent's; the next tick comes that much later.
3. Agent states: ``running`` (ticks), ``frozen`` (no ticks; PostgreSQL and jobs go on), ``down`` (no agent).
4. The REST API other agents ask in a leader race (``Agent.ask_peers``, world.ask_peers) answers what its agent
   published at the end of its last tick (``published``), as the real API serves the last published status; it
   is part of the agent process, so a frozen or dead agent does not answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgha.agent.executor import AgentExit
from pgha.agent.loop import Agent
from pgha.config.schema import Auth, Bootstrap, Config, Etcd, Postgresql, RestApi
from pgha.core.dynamic import freeze
from pgha.core.model import PgRole
from pgha.dcs.memory import MemoryDcs
from pgha.sim.fakepg import FakePostgres
from pgha.sim.jobs import SimJobs
from pgha.sim.simdcs import SimDcs
from pgha.sim.watchdog import SimFencer

if TYPE_CHECKING:
    from pgha.sim.world import World

RESTART_DELAY = 5.0  # systemd's RestartSec after the agent refused to start or exited with an error
WATCH_DELAY = (0.005, 0.05)  # a leader-key change reaches an agent's watch this much later (seeded jitter)


def node_config(name: str, scope: str, dcs: dict[str, Any], tags: dict[str, Any]) -> Config:
    pg = Postgresql(listen=f"{name}:5432", listen_addresses=name, port=5432, connect_address=f"{name}:5432",
                    data_dir=f"/sim/{name}/data", superuser=Auth("postgres"), replication=Auth("replicator"))
    return Config(scope=scope, name=name, namespace="/service",
                  restapi=RestApi(listen=f"{name}:8008", connect_address=f"{name}:8008"),
                  etcd=Etcd(hosts=(("sim-dcs", 2379),)), bootstrap=Bootstrap(dcs=freeze(dcs)), postgresql=pg,
                  tags=freeze(tags))


class SimNode:
    def __init__(self, world: "World", name: str, cfg: Config, watchdog: bool) -> None:
        self.world = world
        self.name = name
        self.cfg = cfg
        self.nofailover = bool(cfg.tags.get("nofailover"))
        self.watchdog = watchdog
        self.offset = 0.0  # moves the agent's clock on by the DCS time its last tick spent, for _next_wait
        self.pg = FakePostgres(name, cfg.postgresql.connect_address, world, lambda: world.now, self.local_now,
                               lambda: self.fencer.deadline if self.fencer else None)
        self.agent: Agent | None = None
        self.dcs: SimDcs | None = None
        self.jobs: SimJobs | None = None
        self.fencer: SimFencer | None = None  # the current agent's
        self.fencers: list[SimFencer] = []  # every fencer still running on this machine (a killed agent's too)
        self.state = "down"
        self.next_tick: float | None = None
        self.busy_until = 0.0
        self.latency = 0.0  # DCS latency this node sees (slow DCS fault)
        self.cut = 0  # how many cut-off faults hold this node away from the DCS
        self.stall = 0  # how many stall faults hold its replication
        self.lag = 0  # how many lag faults slow it down (connected, receiving nothing)
        self.in_tick = False
        # (wal position, timeline, role) the agent's REST API serves, from its last tick; None: no status yet
        self.published: tuple[int | None, int | None, str | None] | None = None

    def local_now(self) -> float:
        """The node's own time: inside a tick, the world's time plus what the tick has spent waiting on DCS calls
        so far (the agent's clock, so its deadlines and its observation time are those a real agent would see);
        right after a tick, plus the whole tick's cost (``offset``, for ``_next_wait``)."""
        if self.in_tick and self.dcs is not None:
            return self.world.now + self.dcs.cost
        return self.world.now + self.offset

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start_agent(self) -> None:
        if self.state != "down":
            return
        world = self.world
        inner = MemoryDcs(world.store, self.cfg.namespace, self.cfg.scope, world.params.ttl, agent_id=self.name)
        self.dcs = SimDcs(inner, lambda: self.latency, world.coin, world.later)
        self.jobs = SimJobs(self.local_now, world.schedule, world.job_duration, self.wake)
        self.fencer = SimFencer(self) if self.watchdog else None
        if self.fencer is not None:
            self.fencers.append(self.fencer)
        self.agent = Agent(self.cfg, self.dcs, self.pg, clock=self.local_now, jobs=self.jobs, fencer=self.fencer)
        self.agent.ask_peers = world.ask_peers
        self.published = None
        self.dcs.set_ttl(int(self.agent.settings.ttl))
        try:
            self.agent.refuse_duplicate_name()
        except AgentExit as e:
            world.note(self, f"agent refused to start: {e}")
            self._exit()
            world.schedule(world.now + RESTART_DELAY, self.start_agent)
            return
        self.state, self.next_tick = "running", world.now
        world.note(self, "agent started")

    def _gone(self) -> None:
        if self.jobs is not None:
            self.jobs.cancel()
        self.agent, self.jobs, self.fencer, self.state, self.next_tick = None, None, None, "down", None
        self.published = None
        self.fencers = [f for f in self.fencers if f.alive]

    def _exit(self) -> None:
        """What ``Agent.run()`` does once its loop ends (shutdown or AgentExit): close PostgreSQL's handle, tell
        the fencer to exit, revoke the lease."""
        assert self.agent is not None and self.dcs is not None
        self.agent.node.close()
        if self.fencer is not None:
            self.fencer.close()
        self.dcs.close(revoke=True)
        self._gone()

    def kill(self) -> None:
        """Node death: agent, fencer and PostgreSQL killed, the machine off."""
        for fencer in self.fencers:
            fencer.machine_off()
        self._gone()
        self.pg.crash("kill")

    def kill_agent(self) -> None:
        """The agent process killed (SIGKILL); PostgreSQL runs on, and so does its fencer, armed as it was."""
        self._gone()

    def freeze(self) -> None:
        if self.state == "running":
            self.state, self.next_tick = "frozen", None

    def thaw(self) -> None:
        if self.state == "frozen":
            self.state, self.next_tick = "running", max(self.world.now, self.busy_until)

    def request_stop(self) -> bool:
        """SIGTERM: the next tick shuts down. False when there is no running agent to ask."""
        if self.state != "running" or self.agent is None:
            return False
        self.agent.shutdown.set()
        # SIGTERM only sets a flag: the loop sees it once the tick in progress (still waiting on a slow DCS, or
        # stopping PostgreSQL) is over, never in the middle of it.
        self.next_tick = max(self.world.now, self.busy_until)
        return True

    def wake(self) -> None:
        """A background job ended (JobRunner's on_done)."""
        if self.state == "running" and self.next_tick is not None:
            self.next_tick = min(self.next_tick, max(self.world.now, self.busy_until))

    def watch(self) -> None:
        """After a leader-key change: a sleeping agent's watch reports it (with a little seeded jitter)."""
        if self.state == "running" and self.dcs is not None and self.dcs.wait_for_leader_change(0):
            soon = max(self.world.now + round(self.world.rng.uniform(*WATCH_DELAY), 3), self.busy_until)
            if self.next_tick is None or soon < self.next_tick:
                self.next_tick = soon

    # --- one tick -------------------------------------------------------------------------------------------
    def publish(self) -> None:
        """The status the agent's REST API serves until its next tick (rule 4): PostgreSQL as it is now (what
        ``local_state()`` says of it: a replica's position is what it received)."""
        pg = self.pg
        if not pg.running or pg.role is None or pg.data is None:
            self.published = (None, None, None)
        else:
            self.published = (pg.lsn, pg.timeline, "primary" if pg.role is PgRole.PRIMARY else "replica")

    def tick(self) -> None:
        agent, dcs, world = self.agent, self.dcs, self.world
        assert agent is not None and dcs is not None
        dcs.cost, self.in_tick = 0.0, True
        try:
            obs = agent.tick()
        except AgentExit as e:
            self.in_tick = False
            world.record_tick(self, agent, dcs.cost)  # the previous decision is not printed again
            world.note(self, f"agent exit: {e}")
            self._exit()
            world.schedule(world.now + RESTART_DELAY, self.start_agent)
            return
        except Exception as e:  # the real loop logs and goes on; here it is a bug to report
            world.violation("agent-error", f"{self.name}: tick raised {type(e).__name__}: {e}")
            obs = None
        self.in_tick = False
        self.publish()
        cost = dcs.cost
        world.record_tick(self, agent, cost)
        if obs is not None and obs.shutdown_requested:
            self._exit()
            world.note(self, "agent stopped")
            return
        self.busy_until = world.now + cost
        self.offset = cost
        wait = agent._next_wait() if obs is not None else min(1.0, agent.settings.loop_wait)
        self.offset = 0.0
        self.next_tick = world.now + cost + wait
