"""WAL lineage for the simulator's fake PostgreSQL: who can stream from whom, who has diverged.

A node's WAL is ``[0, lsn)`` together with its *history*: a tuple of ``Segment(timeline, start, uid)`` switch points
(the first starts at 0). The bytes at position ``p`` were written on the segment with the greatest ``start <= p``.
Every promotion opens a segment with a fresh ``uid``: two nodes that both promote to "timeline 2" from the same
parent (which PostgreSQL allows when neither saw the other's history file) get different uids, so the simulator
tells their WAL apart even though the timeline numbers agree.

Rules
1. Pure functions over immutable tuples; no clock, no randomness.
2. Two WALs agree on ``[0, n)`` when the segment uid is the same at every position below ``n``; it is enough to
   compare at every segment start of either history below ``n`` (the uid is piecewise constant between them).
3. A replica can stream from an upstream when its WAL is a prefix of the upstream's (same bytes, not longer).
   It has *diverged* when no amount of further upstream WAL makes it a prefix again: that needs pg_rewind.
"""

from __future__ import annotations

from typing import NamedTuple


class Segment(NamedTuple):
    timeline: int
    start: int
    uid: int


History = tuple[Segment, ...]


def uid_at(history: History, pos: int) -> int | None:
    """The uid of the segment that wrote position ``pos`` (None before the first segment)."""
    found = None
    for seg in history:
        if seg.start > pos:
            break
        found = seg.uid
    return found


def timeline_of(history: History) -> int:
    return history[-1].timeline if history else 0


def agree_below(a: History, b: History, n: int) -> bool:
    """Do the two WALs hold the same bytes on ``[0, n)``?"""
    if a == b:
        return True
    points = {0} | {s.start for s in a if s.start < n} | {s.start for s in b if s.start < n}
    return all(uid_at(a, p) == uid_at(b, p) for p in points if p < n)


def is_prefix(h_r: History, lsn_r: int, h_u: History, lsn_u: int) -> bool:
    """Is ``[0, lsn_r)`` of R exactly the start of U's WAL (so R can stream from U right now)?"""
    return lsn_r <= lsn_u and agree_below(h_r, h_u, lsn_r)


def can_catch_up(h_r: History, lsn_r: int, h_u: History) -> bool:
    """Could R stream from U once U has written enough? U's WAL past its end will be written on its current
    segment, which is exactly what ``uid_at`` answers for positions past the last switch point."""
    return agree_below(h_r, h_u, lsn_r)


def same_line(h_a: History, lsn_a: int, h_b: History, lsn_b: int) -> bool:
    """Is one WAL a prefix of the other (so their LSNs can be compared as "ahead" and "behind")?"""
    return agree_below(h_a, h_b, min(lsn_a, lsn_b))


def received(h_u: History, lsn: int) -> History:
    """The history a replica has after receiving U's WAL up to ``lsn`` (switch points at ``lsn`` included:
    the timeline history file arrives with the switch, before any WAL of the new timeline)."""
    return tuple(s for s in h_u if s.start <= lsn)


def rewind_point(target: History, source: History) -> int | None:
    """Where pg_rewind finds the target's timeline forked off the source's, from the timeline histories alone
    (timeline ids and switch points, never content): None when both are on the same timeline (pg_rewind: "no
    rewind required"), else the LSN where the last timeline they share ends in either of them."""
    t_tl = [(s.timeline, s.start) for s in target]
    s_tl = [(s.timeline, s.start) for s in source]
    if t_tl and s_tl and t_tl[-1][0] == s_tl[-1][0]:
        return None
    common = 0
    while common < min(len(t_tl), len(s_tl)) and t_tl[common] == s_tl[common]:
        common += 1
    if common == 0:
        raise ValueError("could not find common ancestor of the source and target cluster's timelines")
    ends = [h[common][1] for h in (t_tl, s_tl) if len(h) > common]
    return min(ends) if ends else None
