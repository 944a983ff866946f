"""The HA loop: observe, decide, act, publish; one thread owns every decision.

Each tick: renew our DCS lease (so our member key stays alive and, for the leader, the lock) and read the cluster,
probe PostgreSQL, build an Observation, call ``decide()``, run its actions, publish our member key, log one line
saying what was decided and why. Then wait until the next tick: ``loop_wait`` at most, earlier when the leader
key changes (DCS watch), a background job ends, or -- for a primary -- in time to fence before its lease could
run out.

Rules
1. Only this loop acts on PostgreSQL or writes the DCS; other threads (jobs, the watch, later the REST API) only
   report.
2. Every DCS call carries a deadline that ends before the lease's fence point, so a hung DCS cannot keep the
   loop from fencing.
3. The lease's validity is measured from the *send* time of the last accepted renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from dataclasses import replace
from typing import Any, Callable

from pgha.agent.executor import AgentExit, Executor
from pgha.agent.intents import Intents
from pgha.agent.jobs import JobRunner
from pgha.agent.member import member_data
from pgha.core.decide import decide
from pgha.core.dynamic import DynamicConfig, unsafe_commit_warning
from pgha.core.model import ClusterView, LeaseState, LocalState, Observation, PgRole, RequestKind
from pgha.core.settings import Memory, Settings
from pgha.ports import Dcs, DcsError, PostgresPort

log = logging.getLogger("pgha")

_QUIET = {"RefreshLeader", "SyncSlots"}


class Agent:
    def __init__(self, cfg: Any, dcs: Dcs, node: PostgresPort, clock: Callable[[], float] = time.monotonic,
                 jobs: JobRunner | None = None, fencer: Any = None, watchdog: Any = None,
                 board: Any = None) -> None:
        self.cfg = cfg
        self.dcs = dcs
        self.clock = clock
        self.node = node
        self.wake = threading.Event()
        self.jobs = jobs or JobRunner(clock, on_done=self.wake.set)
        self.executor = Executor(cfg.name, dcs, self.node, self.jobs, cfg.bootstrap, self._hba, self._call_timeout)
        self.memory = Memory()
        self.lease = LeaseState()
        self.shutdown = threading.Event()
        self.dynamic, _ = DynamicConfig.from_dict(cfg.bootstrap.dcs)
        self._dynamic_source: Any = None  # the DCS config ``dynamic`` was last read from
        self.watchdog = watchdog  # watchdog.Watchdog: the machine's watchdog device, while leading
        self.settings = self._settings()
        self.last_decision = None
        self.fencer = fencer  # fencer.Fencer: stops PostgreSQL if this loop misses its lease deadline
        self.decisions: deque[list[str]] = deque(maxlen=10)
        self.board = board  # api.status.StatusBoard the REST API reads; None: no API (the simulator)
        self.api_scheme = "http"
        self.ask_peers: Callable | None = None  # agent/peers.ask_all in a real agent; None in the simulator
        self.dcs_last_seen: float | None = None
        self.holder_until: float = 0.0  # Patroni's "lock holder": the lock was seen ours less than ttl ago
        self.intents = Intents()  # operator requests from the REST API, waiting for a decision
        self.executor.intents = self.intents
        self.executor.reload = self.reload
        self.executor.clock = clock
        self.executor.on_renewed = self._renewed
        self.config_path: str | None = None  # the YAML file `pgha run` read; re-read on reload
        self.confirm_failsafe: Callable | None = None  # agent/failsafe.confirm bound to our API's auth; None: off
        self.failsafe_members: dict[str, str] | None = None  # the failsafe key, as last read from the DCS
        self.failsafe_active = False
        self.last_cluster: ClusterView | None = None

    # --- configuration --------------------------------------------------------------------------------
    def _settings(self) -> Settings:
        ttl, loop_wait, retry_timeout = self.dynamic.effective_timing()
        tags = self.cfg.tags or {}
        prio = tags.get("failover_priority")
        nofailover = bool(tags.get("nofailover")) or (isinstance(prio, int) and prio <= 0)
        if self.watchdog is not None and not self.watchdog.may_lead(ttl, loop_wait):
            nofailover = True  # watchdog mode "required" and the device cannot guard a leader

        pg = self.cfg.postgresql
        use_pg_rewind = pg.use_pg_rewind if pg.use_pg_rewind is not None else self.dynamic.use_pg_rewind
        return Settings(name=self.cfg.name, ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout,
                        maximum_lag_on_failover=self.dynamic.maximum_lag_on_failover, nofailover=nofailover,
                        failover_priority=prio if isinstance(prio, int) and not isinstance(prio, bool) else 1,
                        use_slots=self.dynamic.use_slots, use_pg_rewind=bool(use_pg_rewind),
                        remove_data_directory_on_rewind_failure=pg.remove_data_directory_on_rewind_failure,
                        remove_data_directory_on_diverged_timelines=pg.remove_data_directory_on_diverged_timelines,
                        primary_start_timeout=self.dynamic.primary_start_timeout,
                        failsafe_mode=self.dynamic.failsafe_mode,
                        synchronous_mode=self.dynamic.synchronous_mode,
                        synchronous_mode_strict=self.dynamic.synchronous_mode_strict,
                        synchronous_node_count=self.dynamic.synchronous_node_count,
                        maximum_lag_on_syncnode=self.dynamic.maximum_lag_on_syncnode,
                        fence_margin=min(2.0, ttl * 0.25))

    def _apply_dynamic(self, cluster: ClusterView | None) -> None:
        if cluster is None or cluster.config is None or cluster.config == self._dynamic_source:
            return  # the same configuration as last time: nothing to re-read (this runs every tick)
        self._dynamic_source = cluster.config
        dynamic, errors = DynamicConfig.from_dict(cluster.config)
        if dynamic == self.dynamic:
            return
        for error in errors:
            log.warning("DCS config: %s (keeping the default)", error)
        reload = self.node.dynamic_parameters != dynamic.parameters and self.last_decision is not None
        self.dynamic = dynamic
        self.settings = self._settings()
        self.dcs.set_ttl(int(self.settings.ttl))
        self.node.dynamic_parameters = dynamic.parameters
        self.node.use_slots = dynamic.use_slots
        if reload:  # PostgreSQL parameters changed in the DCS config: apply them like a reload request
            self.intents.enqueue(RequestKind.RELOAD)
        warning = unsafe_commit_warning(self.dynamic, self.cfg.postgresql.parameters)
        if warning:
            log.warning("%s", warning)

    def reload(self) -> None:
        """Re-read the YAML file (when there is one) and apply PostgreSQL's configuration (POST /reload)."""
        if self.config_path is not None:
            from pgha.config import ConfigError, load_config
            try:
                cfg, _ = load_config(self.config_path)
            except ConfigError as e:
                log.error("reload: %s; keeping the configuration in use", e)
                return
            if (cfg.postgresql.data_dir, cfg.postgresql.port) != (self.cfg.postgresql.data_dir,
                                                                   self.cfg.postgresql.port):
                log.warning("reload: data_dir and port changes need the agent restarted; the rest is applied")
                cfg = replace(cfg, postgresql=replace(cfg.postgresql, data_dir=self.cfg.postgresql.data_dir,
                                                      port=self.cfg.postgresql.port))
            self.cfg = cfg
            self.node.cfg, self.node.pg = cfg, cfg.postgresql
            self.settings = self._settings()
        self.node.reload_config(self.executor.cluster, self._hba())

    def _hba(self) -> tuple[str, ...] | None:
        return self.cfg.postgresql.pg_hba or self.dynamic.pg_hba or None

    def _call_timeout(self) -> float:
        """A DCS call's deadline: retry_timeout, cut short so a primary can still fence in time."""
        budget = self.settings.retry_timeout
        if self.lease.valid_until is not None and self._maybe_writer():
            left = self.lease.valid_until - self.settings.fence_margin - self.clock()
            budget = min(budget, max(0.2, left))
        return budget

    last_local_role: PgRole | None = None
    may_write: bool = False  # this node ran as primary, held the lock, or was told to become a writer

    def _maybe_writer(self) -> bool:
        return self.may_write or self.last_local_role is PgRole.PRIMARY

    # --- one tick -------------------------------------------------------------------------------------
    def observe(self) -> Observation:
        cluster, error = None, ""
        try:
            sent = self.clock()
            granted = self.dcs.renew_lease(timeout=self._call_timeout())
            self.lease = LeaseState(valid_until=sent + granted)
            cluster = self.dcs.snapshot(timeout=self._call_timeout())
        except DcsError as e:
            error = str(e)
        local = self._local_state()
        self.last_local_role = local.role
        self._failsafe(cluster, local)
        self._scheduled_restart(cluster)
        return Observation(now=self.clock(), cluster=cluster, local=local, lease=self.lease, dcs_error=error,
                           shutdown_requested=self.shutdown.is_set(), peers=self._ask_peers(cluster, local),
                           wall_now=time.time(), requests=self.intents.pending(),
                           failsafe_heard=self.intents.failsafe_heard)

    def _local_state(self) -> LocalState:
        local, job = self.node.local_state(), self.jobs.current()
        return local if local.job == job else replace(local, job=job)

    def _scheduled_restart(self, cluster: ClusterView | None) -> None:
        """A scheduled restart whose time has come runs if its conditions (role, version, pending restart) still
        hold now, as Patroni checks them at the scheduled time; else it is dropped with a log line."""
        entry = self.intents.due_restart()
        if entry is None:
            return
        from pgha.api.manual import restart_matches
        status = self.board.status() if self.board is not None else {}
        leader = cluster is not None and cluster.leader == self.cfg.name
        if restart_matches(entry, status, leader):
            log.info("scheduled restart (%s): restarting", entry.get("schedule"))
            self.intents.enqueue(RequestKind.RESTART)
        else:
            log.info("scheduled restart (%s) dropped: its conditions no longer hold", entry.get("schedule"))

    def _failsafe(self, cluster: ClusterView | None, local) -> None:
        """Failsafe mode (agent/failsafe.py): a running primary that cannot show the lock in the DCS counts a
        round every member confirmed as a lease renewal sent when the round began."""
        if cluster is not None:
            self.failsafe_members = dict(cluster.failsafe) if cluster.failsafe is not None else None
        if (not self.settings.failsafe_mode or self.confirm_failsafe is None or local.role is not PgRole.PRIMARY
                or self.failsafe_members is None or (cluster is not None and cluster.leader is not None)):
            self.failsafe_active = False
            return
        sent = self.clock()
        # The round may take what is left before the fence point (the fencer ends it there anyway).
        left = (self.lease.valid_until or 0.0) - self.settings.fence_margin - sent
        timeout = min(self.settings.ttl / 2, left) if left > 0.3 else self.settings.retry_timeout
        self.failsafe_active = self.confirm_failsafe(self.failsafe_members, self.cfg.name, timeout)
        if self.failsafe_active:
            self.lease = LeaseState(valid_until=max(self.lease.valid_until or 0.0, sent + self.settings.ttl))
            self.holder_until = sent + self.settings.ttl
            log.info("failsafe: every member confirmed; serving on for %.0fs", self.settings.ttl)

    def _ask_peers(self, cluster: ClusterView | None, local) -> tuple:
        """Fresh positions from the other members' REST APIs, only for a leader race (see agent/peers.py)."""
        if self.ask_peers is None or cluster is None or cluster.leader is not None or not local.running:
            return ()
        return self.ask_peers(cluster.members, self.cfg.name)

    def tick(self) -> Observation:
        obs = self.observe()
        self._apply_dynamic(obs.cluster)
        decision = decide(obs, self.memory, self.settings)
        self.memory = decision.memory
        message = decision.message(self.cfg.name)
        log.info("%s", message)
        self._remember_decision(decision.reason.code, message)
        self._arm_fencer(obs, decision)  # before acting: a promotion or primary start is guarded from its start
        done = self.executor.run(decision.actions, obs.cluster)
        self.last_decision = (decision, done)
        self._track_holder(obs, decision, done)
        for action in decision.actions:  # what we wrote counts before our next read shows it
            if type(action).__name__ == "WriteFailsafe" and done:
                self.failsafe_members = dict(action.members) if action.members is not None else None
        publish = obs.cluster is not None and not obs.shutdown_requested
        if publish or self.board is not None:
            after = self._local_state()  # one look after acting
            self._report(obs, after)  # first: the member data published next carries this tick's status flags
            if publish:
                self._publish(obs, after)
        return obs

    def _track_holder(self, obs: Observation, decision, done: bool) -> None:
        """Patroni's "lock holder" for the health checks (/primary, /leader): the lock seen ours less than ttl
        ago. Seen held by someone else, or given up this tick (released, revoked, demoted), it is not ours at once:
        a node that just handed the lock over must not answer /primary 200 for the rest of a ttl. Taken this
        tick, it is ours from this tick's status on. Without a DCS view the last sighting stands."""
        names = {type(a).__name__ for a in decision.actions}
        if names & {"ReleaseLeader", "RevokeLease", "Demote"}:
            self.holder_until = 0.0
        elif done and "AcquireLeader" in names:
            self.holder_until = obs.now + self.settings.ttl
        elif obs.cluster is not None:
            self.holder_until = obs.now + self.settings.ttl if obs.cluster.leader == self.cfg.name else 0.0

    def _report(self, obs: Observation, local) -> None:
        if self.board is None:
            return
        from pgha.agent.report import api_status
        if obs.cluster is not None:
            self.dcs_last_seen = time.time()
        lock_holder = obs.now < self.holder_until and (self.lease.valid_until or 0) > obs.now
        status = api_status(self.cfg, self.settings, local, self.node.api_extras(), obs.cluster, lock_holder,
                            self.dcs_last_seen, time.time())
        if obs.cluster is not None:
            self.last_cluster = obs.cluster
        self.board.publish(status, self.last_cluster)  # the last snapshot read, even while the DCS is away

    def _arm_fencer(self, obs: Observation, decision) -> None:
        """While this node is (or is becoming) a writer, the fencer stops PostgreSQL at the same instant this
        loop would fence it -- so a frozen or dead agent cannot leave a primary running past its lease."""
        if self.fencer is None and self.watchdog is None:
            return
        holder = obs.cluster is not None and obs.cluster.leader == self.cfg.name
        becoming = any(type(a).__name__ in ("Promote", "AcquireLeader") or
                       (type(a).__name__ == "StartPostgres" and a.as_primary) for a in decision.actions)
        writer = holder or self.last_local_role is PgRole.PRIMARY or becoming
        self.may_write = writer
        deadline = (self.lease.valid_until or 0) - self.settings.fence_margin
        # A deadline already past is never armed: the core fences itself this tick, and the fencer would only
        # stop the replica the core restarts.
        armed = writer and deadline > self.clock() and not obs.shutdown_requested
        if self.fencer is not None:
            if armed:
                self.fencer.arm(deadline)
            else:
                self.fencer.disarm()
        if self.watchdog is not None:
            if armed and holder:
                self.watchdog.keepalive(self.settings.ttl, self.settings.loop_wait)
            else:
                self.watchdog.disable()

    def _renewed(self, sent: float, granted: float) -> None:
        """The lease was renewed mid-decision (before a primary start): it runs from the send time, and the
        fencer's deadline moves with it before PostgreSQL is launched."""
        valid_until = sent + granted
        if valid_until <= (self.lease.valid_until or 0.0):
            return
        self.lease = LeaseState(valid_until=valid_until)
        if self.fencer is not None:
            self.fencer.arm(valid_until - self.settings.fence_margin)

    def _remember_decision(self, code: str, message: str) -> None:
        """The last distinct decisions, published with the member data for `pgha explain`."""
        if self.decisions and self.decisions[-1][1:] == [code, message]:
            return
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.decisions.append([stamp, code, message])

    def _publish(self, obs: Observation, local) -> None:
        data = member_data(self.cfg, local, api_scheme=self.api_scheme)
        data["pgha_decisions"] = list(self.decisions)
        scheduled = self.intents.scheduled_restart
        if scheduled is not None:  # Patroni's member field: `list -e` and `flush` read it
            data["scheduled_restart"] = {"schedule": scheduled.get("schedule")}
        try:
            self.dcs.touch_member(self.cfg.name, data, timeout=self._call_timeout())
            self._publish_status(obs, local)
        except DcsError as e:
            log.warning("could not publish member data: %s", e)

    def _publish_status(self, obs: Observation, local) -> None:
        """The leader's optime in the ``status`` key, which replicas' lag checks read (written when it moved)."""
        if obs.cluster is None or obs.cluster.leader != self.cfg.name or local.role is not PgRole.PRIMARY:
            return
        if local.wal_position is not None and local.wal_position != obs.cluster.status_optime:
            claim = max(obs.cluster.status_timeline or 0, local.timeline or 0)  # keep the timeline claim
            status = {"optime": local.wal_position, **({"pgha_timeline": claim} if claim else {})}
            self.dcs.set_status(status, timeout=self._call_timeout())

    def _next_wait(self) -> float:
        wait = self.settings.loop_wait
        decision, done = self.last_decision or (None, True)
        if decision is not None and any(type(a).__name__ not in _QUIET for a in decision.actions):
            wait = min(wait, 0.5)  # something changed: look again soon
        if self.last_local_role is PgRole.PRIMARY and self.lease.valid_until is not None:
            fence_at = self.lease.valid_until - self.settings.fence_margin - self.settings.retry_timeout
            wait = min(wait, max(0.05, fence_at - self.clock()))
        return wait

    def _postmaster_died(self) -> bool:
        died = getattr(self.node, "postmaster_died", None)  # optional in PostgresPort: a cheap liveness look
        return bool(died and died())

    def _sleep(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while not self.shutdown.is_set() and not self.wake.is_set():
            left = deadline - self.clock()
            if left <= 0:
                break
            if self.dcs.wait_for_leader_change(min(left, 0.25)):
                break
            if self._postmaster_died():
                break  # a crashed PostgreSQL is dealt with now, not at the next loop_wait
        self.wake.clear()

    # --- lifecycle ------------------------------------------------------------------------------------
    def refuse_duplicate_name(self) -> None:
        try:
            self._apply_dynamic(self.dcs.snapshot(timeout=self.settings.retry_timeout))
            # Its owner renews at least once per loop_wait (the cluster's, which we share): watch a bit longer.
            window = min(self.settings.ttl, self.settings.loop_wait + 1.5)
            alive = self.dcs.member_lease_alive(self.cfg.name, timeout=window + self.settings.retry_timeout,
                                                window=window)
        except DcsError as e:
            log.warning("could not check for a live member with my name: %s", e)
            return
        if alive:
            raise AgentExit(f"Can't start; there is already a node named '{self.cfg.name}' running")

    def run(self) -> int:
        self.dcs.set_ttl(int(self.settings.ttl))
        try:
            self.refuse_duplicate_name()
            while True:
                try:
                    obs = self.tick()
                except AgentExit:
                    raise
                except Exception:  # a bug or an unexpected answer: log it, keep the loop (and fencing) alive
                    log.exception("unexpected error in the HA loop")
                    obs = None
                if obs is not None and obs.shutdown_requested:
                    break
                self._sleep(self._next_wait() if obs is not None else min(1.0, self.settings.loop_wait))
        except AgentExit as e:
            log.error("%s", e)
            self.dcs.close(revoke=True)
            return 1
        finally:
            self.node.close()
            if self.fencer is not None:
                self.fencer.close()
            if self.watchdog is not None:
                self.watchdog.disable()
        self.dcs.close(revoke=True)
        log.info("agent stopped")
        return 0

