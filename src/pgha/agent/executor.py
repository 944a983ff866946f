"""Carries out a decision's actions, in order, stopping at the first that fails (see core/actions.py).

The executor decides nothing: each action maps to one call on the DCS port or the PostgreSQL node. A failure is
logged and ends the decision; the next tick's observation shows what state the world is really in.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from pgha.core import actions as A
from pgha.core.dynamic import thaw
from pgha.core.jobs import START_AS_PRIMARY
from pgha.core.model import ClusterView, JobKind, Member
from pgha.dcs.keys import sync_value
from pgha.ports import Dcs, DcsError, PostgresPort
from pgha.postgres.control import CommandError
from pgha.agent.jobs import JobRunner

log = logging.getLogger(__name__)


class AgentExit(Exception):
    """The core asked the agent to stop with an error."""


class Executor:
    def __init__(self, name: str, dcs: Dcs, node: PostgresPort, jobs: JobRunner, bootstrap_cfg: Any,
                 hba: Callable[[], tuple[str, ...] | None], call_timeout: Callable[[], float]) -> None:
        self.name = name
        self.dcs = dcs
        self.node = node
        self.jobs = jobs
        self.bootstrap_cfg = bootstrap_cfg
        self.hba = hba
        self.timeout = call_timeout
        self.cluster: ClusterView | None = None
        self.intents: Any = None  # agent/intents.Intents: where Answer actions go
        self.clock: Callable[[], float] = time.monotonic
        self.on_renewed: Callable[[float, float], None] | None = None  # the agent's lease bookkeeping
        self.reload: Callable[[], None] | None = None  # the agent's configuration reload

    def run(self, actions: tuple[A.Action, ...], cluster: ClusterView | None) -> bool:
        """True when every action succeeded."""
        self.cluster = cluster
        for action in actions:
            try:
                ok = self._do(action)
            except AgentExit:
                raise
            except (DcsError, CommandError, OSError) as e:
                log.error("%s failed: %s", type(action).__name__, e)
                return False
            except Exception as e:  # psycopg errors and the like: report, never crash the loop
                log.error("%s failed: %s: %s", type(action).__name__, type(e).__name__, e)
                return False
            if ok is False:
                log.warning("%s did not succeed; stopping this decision here", type(action).__name__)
                return False
        return True

    def _member(self, name: str | None) -> Member | None:
        if name is None or self.cluster is None:
            return None
        return self.cluster.member(name)

    def _do(self, action: A.Action) -> bool | None:
        handler = getattr(self, "_" + type(action).__name__)
        return handler(action)

    # DCS actions
    def _AcquireLeader(self, a: A.AcquireLeader) -> bool:
        return self.dcs.acquire_leader(self.name, timeout=self.timeout())

    def _RefreshLeader(self, a: A.RefreshLeader) -> bool:
        return self.dcs.refresh_leader(self.name, timeout=self.timeout())

    def _ReleaseLeader(self, a: A.ReleaseLeader) -> bool:
        return self.dcs.release_leader(self.name, timeout=self.timeout())

    def _RevokeLease(self, a: A.RevokeLease) -> None:
        self.dcs.close(revoke=True)

    def _ClaimInitialize(self, a: A.ClaimInitialize) -> bool:
        return self.dcs.claim_initialize(timeout=self.timeout())

    def _SetInitialize(self, a: A.SetInitialize) -> None:
        self.dcs.set_initialize(a.system_id, timeout=self.timeout())

    def _CancelInitialize(self, a: A.CancelInitialize) -> None:
        self.dcs.cancel_initialize(timeout=self.timeout())

    def _WriteConfig(self, a: A.WriteConfig) -> None:
        self.dcs.set_config(thaw(self.bootstrap_cfg.dcs), timeout=self.timeout())

    # PostgreSQL actions
    def _Bootstrap(self, a: A.Bootstrap) -> None:
        b = self.bootstrap_cfg
        self.jobs.start(JobKind.BOOTSTRAP, lambda: self.node.bootstrap(b.initdb, self.hba(), b.pg_hba))

    def _Clone(self, a: A.Clone) -> bool:
        source = self._member(a.source)
        if source is None:
            log.warning("cannot clone: member %s is not in the DCS", a.source)
            return False
        self.jobs.start(JobKind.CLONE, lambda: self.node.clone(source))
        return True

    def _RemoveDataDir(self, a: A.RemoveDataDir) -> None:
        self.node.remove_data_dir()

    def _StartPostgres(self, a: A.StartPostgres) -> None:
        if a.as_primary and self.on_renewed is not None:
            # A primary start is guarded by a fresh lease, not by what is left of the one this tick began with:
            # the fencer's deadline moves with it before PostgreSQL is launched (docs/safety.md).
            sent = self.clock()
            self.on_renewed(sent, self.dcs.renew_lease(timeout=self.timeout()))
        self.node.write_pgpass()
        upstream, hba, epoch = self._member(a.upstream), self.hba(), self.node.stop_epoch
        detail = START_AS_PRIMARY if a.as_primary else "as replica"
        self.jobs.start(JobKind.START, lambda: self.node.start(upstream, a.as_primary, hba, epoch=epoch), detail)

    def _Rewind(self, a: A.Rewind) -> bool:
        source = self._member(a.source)
        if source is None:
            log.warning("cannot rewind: member %s is not in the DCS", a.source)
            return False
        self.jobs.start(JobKind.REWIND, lambda: self.node.rewind(source))
        return True

    def _AwaitReplicated(self, a: A.AwaitReplicated) -> bool:
        """True once a replica (``a.member``, or any) has everything up to our shutdown checkpoint (see
        PostgresPort.replicated_at_stop)."""
        target = self.node.replicated_at_stop(a.member)
        if target is True:
            return True
        if target is None:
            return False
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            view = self.dcs.snapshot(timeout=self.timeout())
            if any(m.name != self.name and (a.member is None or m.name == a.member) and
                   (m.xlog_location or 0) >= target for m in view.members):
                return True
            time.sleep(0.1)
        log.warning("no replica reported the shutdown checkpoint within %.1fs", a.timeout)
        return False

    def _UpdateHistory(self, a: A.UpdateHistory) -> None:
        existing = [list(e) for e in (self.cluster.history if self.cluster else ())]
        self.dcs.set_history(self.node.timeline_history(existing, a.reason, self.name), timeout=self.timeout())

    def _Follow(self, a: A.Follow) -> None:
        self.node.follow(self._member(a.upstream))

    def _ClaimTimeline(self, a: A.ClaimTimeline) -> None:
        optime = self.cluster.status_optime if self.cluster is not None else None
        status = {"optime": optime} if optime is not None else {}
        self.dcs.set_status({**status, "pgha_timeline": a.timeline}, timeout=self.timeout())

    def _Promote(self, a: A.Promote) -> None:
        self.node.promote(a.timeline)
        # The control file carries the new timeline only after a checkpoint; pg_rewind on the old primary
        # reads it from there (Patroni's checkpoint_after_promote).
        self.node.checkpoint()

    def _Demote(self, a: A.Demote) -> None:
        """Stop accepting writes now. With a known leader, come back at once as its replica; with none (the
        DCS unreachable, or the lease lost without a successor yet) stay stopped until the DCS says who leads:
        if the lock is still ours the node restarts as primary on its own timeline, instead of promoting a
        read-only restart onto a new one that no other node knows about."""
        self.node.stop(a.mode.value)
        if a.upstream is not None:
            self.node.start(self._member(a.upstream), False, self.hba())

    def _Checkpoint(self, a: A.Checkpoint) -> None:
        self.node.checkpoint()

    def _ClearFailover(self, a: A.ClearFailover) -> bool:
        return self.dcs.delete_key("failover", version=a.version, timeout=self.timeout())

    def _WriteFailsafe(self, a: A.WriteFailsafe) -> None:
        if a.members is None:
            self.dcs.delete_key("failsafe", timeout=self.timeout())
        else:
            self.dcs.put_key("failsafe", dict(a.members), timeout=self.timeout())

    def _WriteSync(self, a: A.WriteSync) -> bool:
        value = sync_value(a.leader, a.voters, a.quorum)
        return self.dcs.put_key("sync", value, version=a.version, timeout=self.timeout())

    def _DeleteSync(self, a: A.DeleteSync) -> bool:
        return self.dcs.delete_key("sync", version=a.version, timeout=self.timeout())

    def _SetSyncStandbyNames(self, a: A.SetSyncStandbyNames) -> None:
        self.node.set_sync_standby_names(a.value)

    def _ReloadPostgres(self, a: A.ReloadPostgres) -> None:
        if self.reload is not None:
            self.reload()

    def _Answer(self, a: A.Answer) -> None:
        if self.intents is not None:
            self.intents.answer(a.request, a.code, a.text)

    def _StopPostgres(self, a: A.StopPostgres) -> None:
        self.node.stop(a.mode.value)

    def _SyncSlots(self, a: A.SyncSlots) -> None:
        self.node.sync_slots(a.members)

    def _AckJob(self, a: A.AckJob) -> None:
        self.jobs.ack()

    def _Exit(self, a: A.Exit) -> None:
        raise AgentExit(a.message)
