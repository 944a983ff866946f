"""What the HAProxy router (router/follow.py) and the PgBouncer follower (pgbouncer/follow.py) share: reading the
cluster from the DCS when the leader key's watch fired (or every RESYNC s without an event), remembering every
member ever seen, following the cluster's ttl, and waiting on the watch.

Rules
1. Every DCS call has a deadline; a DCS error is logged and the follower goes on with what it knew.
2. ``known`` keeps every member ever seen: a dead leader's member key vanishes with its lease, and the follower
   still needs its address (to drain it, or to drop PgBouncer's connections to it).
"""

from __future__ import annotations

import logging
import time

from pgha.core.model import ClusterView
from pgha.ports import DcsError
from pgha.router.haproxy_config import Server, servers_from_view

log = logging.getLogger(__name__)

RESYNC = 2.0  # seconds between DCS reads when no watch event came
READ_TIMEOUT = 2.0


class LeaderWatch:
    def __init__(self, dcs, default_ttl: float) -> None:
        self.dcs = dcs
        self.ttl = default_ttl
        self.known: dict[str, Server] = {}  # rule 2
        self.watch_fired = False
        self.last_read = 0.0

    def read_due(self, now: float) -> bool:
        return self.watch_fired or now - self.last_read >= RESYNC

    def read(self) -> ClusterView | None:
        self.last_read = time.monotonic()
        try:
            view = self.dcs.snapshot(timeout=READ_TIMEOUT)
        except DcsError as e:
            log.warning("cannot read the DCS: %s", e)
            return None
        self.known.update({s.name: s for s in servers_from_view(view)})
        ttl = (view.config or {}).get("ttl")
        if isinstance(ttl, (int, float)) and ttl > 0:
            self.ttl = float(ttl)
        return view

    def wait(self, seconds: float) -> None:
        """Until the leader key changes (``watch_fired``), at most ``seconds``."""
        try:
            self.watch_fired = self.dcs.wait_for_leader_change(seconds)
        except DcsError as e:
            log.warning("DCS watch: %s", e)
            self.watch_fired = False
