"""What the core is told besides the observation: its settings, its memory, and the shape of a decision.

Rules
1. ``Settings`` is built by the shell from the local YAML and the DCS dynamic config each tick; the core never
   reads configuration any other way.
2. ``Memory`` is every fact the core carries from one tick to the next. It is immutable and returned with every
   decision; the shell stores it and passes it back, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgha.core.actions import Action
from pgha.core.reasons import Reason


@dataclass(frozen=True)
class Settings:
    name: str
    ttl: float = 30.0
    loop_wait: float = 10.0
    retry_timeout: float = 10.0
    maximum_lag_on_failover: int = 1048576
    nofailover: bool = False
    failover_priority: int = 1
    use_slots: bool = True
    use_pg_rewind: bool = False
    remove_data_directory_on_rewind_failure: bool = False
    remove_data_directory_on_diverged_timelines: bool = False
    # How long a lock holder waits for its PostgreSQL to start (after a crash) before handing the lock over.
    primary_start_timeout: float = 300.0
    # A replica that has not streamed for this long is checked for divergence even if it never was primary:
    # it may hold WAL from the old leader that the new one never had. A healthy replica reconnects sooner.
    diverge_grace: float = 10.0
    # A primary stops accepting writes once its lease has less than this left: the time a fence (immediate
    # stop) needs to complete, plus the slack for a late tick. See docs/safety.md.
    fence_margin: float = 2.0
    # Patroni's failsafe_mode: with the DCS unreachable the primary keeps its role while every member accepts
    # its POST /failsafe (agent/failsafe.py); a replica that accepted one within ttl does not race.
    failsafe_mode: bool = False
    # Synchronous replication (sync.py): off | on | quorum, Patroni's names and meanings.
    synchronous_mode: str = "off"
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    maximum_lag_on_syncnode: int = -1  # bytes; <= 0: no limit


@dataclass(frozen=True)
class Memory:
    last_reason: Reason | None = None
    # Why we last became primary: written into the DCS history with the timeline switch.
    promoted_because: Reason | None = None
    # The leader a rewind failed against: not tried again until the leader changes.
    rewind_failed_from: str | None = None
    # This node ran as primary and has not streamed from a leader since: its WAL may hold changes the
    # leader never had, so it is checked for divergence (replica.py).
    was_primary: bool = False
    # Since when this replica has run without streaming (None: it streams, or is not a running replica).
    unstreamed_since: float | None = None
    # (synchronous_standby_names, our WAL position) when that value was first seen in force: commits acknowledged
    # before it may lack from its standbys until they have flushed past that position (sync.py step 3).
    sync_applied: tuple[str, int] | None = None


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    memory: Memory
    reason: Reason
    leader: str | None = None
    detail: str = ""

    def message(self, me: str) -> str:
        return self.reason.render(me=me, leader=self.leader, detail=self.detail)
