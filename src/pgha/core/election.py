"""Who may take the leader lock when nobody holds it.

A node is eligible unless one of these holds (checked in this order; the first that holds is the verdict):
1. it is tagged nofailover (or failover_priority <= 0);
2. its WAL position is unknown;
3. it is behind the last optime the leader published by more than maximum_lag_on_failover;
4. another member that is running and allowed to fail over is on a newer timeline, or on the same timeline with
   more WAL.
Ties are not settled here: every tied node races and the atomic create of the leader key picks one.
"""

from __future__ import annotations

from pgha.core.model import Member, Observation
from pgha.core.reasons import Reason
from pgha.core.settings import Settings


def judge(obs: Observation, settings: Settings) -> tuple[Reason, str] | None:
    """None when this node may race; else (reason, detail) saying why not."""
    cluster = obs.cluster
    assert cluster is not None
    if settings.nofailover:
        return Reason.RACE_NOT_ALLOWED, "tagged nofailover"
    mine = obs.local.wal_position
    if mine is None:
        return Reason.RACE_BEHIND, "my WAL position is unknown"
    optime = cluster.status_optime
    if optime is not None and optime - mine > settings.maximum_lag_on_failover:
        return Reason.RACE_TOO_FAR_BEHIND, str(optime - mine)
    for member in cluster.members:
        if member.name != settings.name and _ahead_of(member, mine, obs.local.timeline):
            return Reason.RACE_BEHIND, f"{member.name} is ahead"
    return None


def _ahead_of(member: Member, my_lsn: int, my_timeline: int | None) -> bool:
    if member.nofailover or member.state != "running" or member.xlog_location is None:
        return False
    if my_timeline is not None and member.timeline is not None and member.timeline != my_timeline:
        return member.timeline > my_timeline
    return member.xlog_location > my_lsn
