"""The node's watchdog: the product's fencer (pgha.agent.fencer) as the simulator runs it.

The agent drives it through the real ``Agent._arm_fencer`` (``fencer=`` of ``Agent``): ``arm(deadline)`` while the
node is or is becoming a writer, ``disarm()`` otherwise, ``close()`` on a clean exit. Like the real fencer
process, it fences (an immediate stop of PostgreSQL, whatever PostgreSQL runs as: the real one sends SIGQUIT to
the postmaster) when an armed deadline passes without a later arm or a disarm.

Rules
1. One fencer per agent incarnation, and it outlives its agent: an agent killed leaves its fencer with the last
   deadline ("end of input keeps the last deadline"), so it still fences then. Node death takes it down too.
2. A message reaches the fencer when the agent sends it, at the node's local time (after the DCS time the tick
   already spent): if the armed deadline passed before that, the fencer fired first, at the deadline.
3. No clock of its own: the world schedules a check at each deadline; a stale check (re-armed since) does nothing.
4. After firing for a living (frozen) agent, the fence stays in force until the agent speaks again: a start
   already on its way fails (its postmaster is stopped), and a primary starting later is refused
   (``fence_in_force``), as the real fencer stops it within ENFORCE_POLL.
5. Switchable: with the watchdog off, agents get no fencer (``fencer=None``) and nothing fences a frozen agent's
   primary, which the freeze schedules then show as a single-writer violation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgha.sim.node import SimNode


class SimFencer:
    def __init__(self, node: "SimNode") -> None:
        self.node = node
        self.deadline: float | None = None  # as armed
        self.fire_at = 0.0  # when it fences: the deadline, or when the arm arrived if that was later
        self.alive = True
        self.enforcing = False  # the deadline passed and its (living) agent has not spoken since

    # --- the agent's side (pgha.agent.fencer.Fencer's interface) -------------------------------------------------
    def arm(self, deadline: float) -> None:
        self._catch_up()
        self.enforcing = False
        if deadline == self.deadline or not self.alive:
            return
        self.deadline, self.fire_at = deadline, max(deadline, self.node.local_now())
        world = self.node.world
        world.schedule(max(deadline, world.now), lambda: self._check(deadline))

    def disarm(self) -> None:
        self._catch_up()
        self.deadline, self.enforcing = None, False

    def close(self) -> None:
        self._catch_up()
        self.deadline, self.alive, self.enforcing = None, False, False

    # --- the world's side -----------------------------------------------------------------------------------------
    def machine_off(self) -> None:
        self.deadline, self.alive, self.enforcing = None, False, False

    def _catch_up(self) -> None:
        if self.deadline is not None and self.fire_at < self.node.local_now():
            self._fire(self.fire_at)

    def _check(self, deadline: float) -> None:
        if self.deadline == deadline and self.alive:
            self._fire(self.fire_at)

    def _fire(self, at: float) -> None:
        self.deadline_was, self.deadline = self.deadline or at, None
        # A silent (frozen) agent's fence stays in force: a primary coming up later is stopped too. A killed
        # agent's fencer exits after firing (pgha.agent.fencer).
        self.enforcing = self.node.fencer is self
        pg = self.node.pg
        pg.stop_epoch += 1  # SIGQUIT to a postmaster still starting: that start fails
        if not pg.running and self.node.world.checker.cut_short(self.node, at):
            self.node.world.note(self.node, f"fencer fires (deadline {self.deadline_was:.3f}): PostgreSQL was "
                                 "still stopping, now stopped", at=at)
        if pg.running:
            self.node.world.note(self.node, f"fencer fires (deadline {self.deadline_was:.3f}): stopping PostgreSQL",
                                 at=at)
            pg.crash("fence", at=at)
