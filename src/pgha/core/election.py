"""Who may take the leader lock when nobody holds it.

A node is eligible unless one of these holds (checked in this order; the first that holds is the verdict):
1. it is tagged nofailover (or failover_priority <= 0); or, in failsafe mode, the primary's POST /failsafe
   reached it less than ttl ago (the primary counts that round as a lease renewal: agent/failsafe.py);
2. its WAL position is unknown;
3. it is on a timeline older than the newest one the ``history`` key records (a leader already wrote on
   that timeline: taking over from an older one would discard its acknowledged writes), or it is behind the
   last optime the leader published by more than maximum_lag_on_failover;
4. another member that is running and allowed to fail over is on a newer timeline, or on the same timeline with
   more WAL;
5. another such member has as much WAL and a higher failover_priority tag.
In sync mode (sync.py rule 5) the ``sync`` key narrows this: only its voters race, after hearing from its quorum;
they are compared with each other only, and without the lag bound.
Other members are judged by what their REST API answered this tick when the shell asked (Observation.peers):
an unreachable one is ignored, a reachable one still running as primary beats us; members nobody asked about
are judged by their published member data. Remaining ties are not settled here: every tied node races and the atomic create of the leader key picks one.
"""

from __future__ import annotations

from dataclasses import replace

from pgha.core import sync
from pgha.core.actions import ClaimTimeline, Promote
from pgha.core.model import Member, Observation, lsn_text
from pgha.core.reasons import Reason
from pgha.core.settings import Settings


AHEAD = " is ahead"  # the end of judge's detail when another member has more WAL


def judge(obs: Observation, settings: Settings) -> tuple[Reason, str] | None:
    """None when this node may race; else (reason, detail) saying why not."""
    cluster = obs.cluster
    assert cluster is not None
    if settings.nofailover:
        return Reason.RACE_NOT_ALLOWED, "tagged nofailover"
    heard = obs.failsafe_heard
    if settings.failsafe_mode and heard is not None and obs.now - heard < settings.ttl:
        return Reason.FAILSAFE_LEADER_ALIVE, f"{obs.now - heard:.1f}s ago"
    mine = obs.local.wal_position
    if mine is None:
        return Reason.RACE_BEHIND, "my WAL position is unknown"
    newest = newest_timeline(cluster.history)
    # LocalState.timeline is the one being replayed (probe.py reads it from the startup process), not pg_control's
    # lagging restartpoint, so a replica that followed the newest leader is not judged older than it is.
    if newest is not None and obs.local.timeline is not None and obs.local.timeline < newest:
        return Reason.RACE_BEHIND, f"my timeline {obs.local.timeline} is older than the cluster's {newest}"
    allowed, why, voters = sync.may_promote(obs, settings)
    if not allowed:
        reason = Reason.RACE_NO_QUORUM if voters and settings.name.lower() in voters else Reason.RACE_NOT_SYNC
        return reason, why
    optime = cluster.status_optime
    # A synchronous standby holds every acknowledged commit: what it lacks of the last published position was
    # never acknowledged, so the lag bound does not apply to it (as in Patroni).
    if not voters and optime is not None and optime - mine > settings.maximum_lag_on_failover:
        return Reason.RACE_TOO_FAR_BEHIND, str(optime - mine)
    # In sync mode every other voter counts, even one that may not promote itself: it may hold what was acknowledged.
    others = [_freshest(m, obs) for m in cluster.members if m.name != settings.name
              and (m.name.lower() in voters and m.xlog_location is not None if voters else _eligible(m))]
    others = [m for m in others if m is not None]
    for member in others:
        if member.role == "primary" and member.name in {p.name for p in obs.peers if p.reachable}:
            return Reason.RACE_BEHIND, f"{member.name} still runs as primary"
        if _ahead_of(member, mine, obs.local.timeline):
            return Reason.RACE_BEHIND, f"{member.name}{AHEAD}"
    for member in others:
        if member.xlog_location == mine and _priority(member) > settings.failover_priority:
            return Reason.RACE_LOWER_PRIORITY, member.name
    return None


def promotion(obs: Observation, settings: Settings) -> tuple:
    """The actions that promote this node: claim the next timeline id nobody in the cluster has used or claimed
    (ours, the ``history`` key's newest, the members', the claim in ``status``), then promote onto it. Two nodes
    that each promoted without seeing the other would otherwise share an id for different histories, which
    pg_rewind cannot tell apart ("same timeline")."""
    cluster = obs.cluster
    assert cluster is not None
    known = [obs.local.timeline or 1, newest_timeline(cluster.history) or 0, cluster.status_timeline or 0]
    known += [m.timeline or 0 for m in cluster.members]
    target = max(known) + 1
    return sync.before_promote(obs, settings) + (ClaimTimeline(target), Promote(target))


def wal_gap(obs: Observation) -> str:
    """Said when this node wins the race: where its WAL ends beside the last position the old primary published
    (the ``status`` key's optime). Writes between the two are the ones this failover leaves behind, at least: the
    primary publishes once per loop, so it may have written more (in synchronous mode none of it was acknowledged)."""
    cluster = obs.cluster
    assert cluster is not None
    mine, published = obs.local.wal_position, cluster.status_optime
    assert mine is not None  # judge() lets no node with an unknown position race
    if published is None:
        return f"my WAL ends at {lsn_text(mine)}; the old primary published no position"
    if published <= mine:
        return f"my WAL ends at {lsn_text(mine)}, not behind the old primary's last published {lsn_text(published)}"
    return (f"my WAL ends at {lsn_text(mine)}, {published - mine} bytes behind the old primary's last published "
            f"{lsn_text(published)}: writes past my position are lost")


def newest_timeline(history: tuple) -> int | None:
    """The timeline the last recorded switch led to (entries are [old timeline, lsn, ...])."""
    timelines = []
    for entry in history:
        try:
            timelines.append(int(entry[0]) + 1)
        except (IndexError, TypeError, ValueError):
            continue
    return max(timelines) if timelines else None


def _freshest(member: Member, obs: Observation) -> Member | None:
    """The member as its own REST API answered this tick, when the shell asked; None if it did not answer
    (a gone peer cannot be ahead of anyone); its published data otherwise."""
    for peer in obs.peers:
        if peer.name == member.name:
            if not peer.reachable or peer.wal_position is None:
                return None
            return replace(member, xlog_location=peer.wal_position, timeline=peer.timeline or member.timeline,
                           role=peer.role or member.role)
    return member


def _eligible(member: Member) -> bool:
    return not member.nofailover and member.state == "running" and member.xlog_location is not None


def _priority(member: Member) -> int:
    value = (member.tags or {}).get("failover_priority", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _ahead_of(member: Member, my_lsn: int, my_timeline: int | None) -> bool:
    assert member.xlog_location is not None
    if my_timeline is not None and member.timeline is not None and member.timeline != my_timeline:
        return member.timeline > my_timeline
    return member.xlog_location > my_lsn
