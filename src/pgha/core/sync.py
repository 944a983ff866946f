"""Synchronous replication: which standbys the leader makes synchronous, and who may promote.

Theory of operation
-------------------
Two things say who holds every acknowledged commit. PostgreSQL's ``synchronous_standby_names`` (SSN) makes a
commit wait until ``k`` of its standbys ``S`` have flushed it (``k (S)``, or ``ANY k (S)`` in quorum mode). The
``sync`` key tells the other nodes who may promote: its ``voters`` V, and a ``quorum`` Q: a candidate in V must
hear from Q other voters, none ahead of it. The key protects what SSN acknowledged when

    S ⊆ V  and  Q ≥ |V| − k                                   (*)

because then a candidate plus Q voters (Q + 1 of V) meet every k of S: one of them has each acknowledged commit,
and the candidate is not behind it. In mode ``on`` the leader lists exactly k standbys (Q = 0: any voter has
everything), in ``quorum`` every eligible standby with ANY k (Q = |V| − k).

Rules
1. Only the lock holder, running as primary, changes SSN and the key; the key names it as ``leader``.
2. Moving from SSN (S, k) to a new (S', k') goes in three steps, one per tick, each confirmed by the next
   observation, and (*) holds for everything acknowledged at every moment:
   a. the key widens to V ∪ S' with Q = |V ∪ S'| − min(k, k'): safe for the old SSN and the new;
   b. SSN becomes (S', k') (reload); the first tick that sees it in force remembers our WAL position P;
   c. once k' of S' have flushed past P (commits before the change waited on the old set), the key narrows
      to S' with Q = |S'| − k'.
   So a standby enters SSN only after it is in the key, and leaves the key only after it left SSN.
3. Candidates: streaming standbys that are members, not tagged ``nosync``, ``nostream`` or ``nofailover``, within
   ``maximum_lag_on_syncnode``; by ``sync_priority`` (higher first), then those already in the key or SSN (so a
   change in progress is not chased by another), then WAL position.
4. No candidate: without ``synchronous_mode_strict`` SSN is emptied (the leader runs asynchronously and says so)
   and the key keeps no voter (nobody may promote: what was acknowledged alone must not be lost to a stale
   standby). Strict: the last voters stay in SSN, or Patroni's placeholder name that no standby has, so
   commits wait (writes block) until a standby returns.
5. Mode ``off``: the leader deletes the key, then gives SSN back to the configuration (Patroni's behaviour).
   Election (``may_promote``): with the key naming a leader, only a voter (or that leader) may promote, and
   only after hearing from Q other voters this tick, none ahead. An empty key (mode just switched on) does not
   restrict. Mode ``off`` ignores the key.
6. A promotion in sync mode first writes the key with itself as leader and no voter (Patroni does the same):
   whatever the new primary acknowledges before it has chosen standbys must not be lost to another node.
"""

from __future__ import annotations

import re
from dataclasses import replace

from pgha.core.actions import DeleteSync, SetSyncStandbyNames, WriteSync
from pgha.core.model import Member, Observation, SyncState
from pgha.core.settings import Memory, Settings

PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"
_SIMPLE = re.compile(r"^[a-z_][a-z0-9_$]*$")


def enabled(settings: Settings) -> bool:
    return settings.synchronous_mode in ("on", "quorum")


# --- synchronous_standby_names, both ways ---------------------------------------------------------------------

def render(standbys: tuple[str, ...], k: int, quorum: bool, strict: bool) -> str:
    if not standbys:
        return _quote(PLACEHOLDER) if strict else ""
    names = ",".join(_quote(n) for n in standbys)
    if quorum:
        return f"ANY {k} ({names})"
    return names if len(standbys) == 1 and k == 1 else f"{k} ({names})"


def _quote(name: str) -> str:
    return name if _SIMPLE.match(name) else '"' + name.replace('"', '""') + '"'


def parse(value: str | None) -> tuple[tuple[str, ...], int] | None:
    """(standbys, k) of a synchronous_standby_names value, names lower-cased; ((), 0) when empty or when it names
    only the placeholder; None when it cannot be read (``*`` included: any standby may acknowledge)."""
    text = (value or "").strip()
    if not text:
        return (), 0
    m = re.match(r"^(?:(ANY|FIRST)\s+)?(\d+)\s*\((.*)\)$", text, re.IGNORECASE | re.DOTALL)
    if m:
        kind, k, body = m.group(1), int(m.group(2)), m.group(3)
    else:
        kind, k, body = None, 1, text
    names = _names(body)
    if names is None or "*" in names:
        return None
    names = tuple(n for n in names if n != PLACEHOLDER)
    if kind is None and not m and len(names) > 1:
        k = 1  # the old form "a, b": the first connected one is synchronous
    return (names, min(k, len(names))) if names else ((), 0)


def _names(body: str) -> tuple[str, ...] | None:
    names: list[str] = []
    for part in re.findall(r'\s*("(?:[^"]|"")*"|[^,]+)\s*(?:,|$)', body):
        part = part.strip()
        if not part:
            return None
        names.append(part[1:-1].replace('""', '"') if part.startswith('"') else part.lower())
    return tuple(n.lower() for n in names) if names else None


# --- the leader -------------------------------------------------------------------------------------------------

def leader_steps(obs: Observation, memory: Memory, settings: Settings) -> tuple[tuple, Memory, str]:
    """The sync actions of this tick for a running primary holding the lock, the memory to keep, and a line
    saying what changes ("" when nothing does)."""
    cluster = obs.cluster
    assert cluster is not None
    version = cluster.versions.get("sync", 0)
    key = cluster.sync
    if not enabled(settings):
        if key is None:
            return (), replace(memory, sync_applied=None), ""
        # The key goes first (nobody may rely on SSN any more), then SSN is handed back to the configuration,
        # so an operator's own synchronous_standby_names (Patroni leaves it alone in mode off) applies again.
        return (DeleteSync(version), SetSyncStandbyNames(None)), replace(memory, sync_applied=None), \
            "off: the sync key is removed, synchronous_standby_names is the configuration's again"
    if key is None or key.leader is None or key.leader.lower() != settings.name.lower():
        return (WriteSync(settings.name, (), 0, version),), memory, "taking the sync key"
    observed = obs.local.sync_standby_names
    current = parse(observed)
    target, k = _target(obs, settings, key, current[0] if current else ())
    wanted = render(target, k, settings.synchronous_mode == "quorum", settings.synchronous_mode_strict)
    if current is None or observed != wanted:
        return _before_switch(obs, memory, settings, key, current, target, k, wanted, version)
    memory = _remember_applied(obs, memory, wanted)
    return _after_switch(obs, memory, settings, key, target, k, version)


def _before_switch(obs, memory, settings, key, current, target, k, wanted, version):
    """Steps a and b: widen the key until it covers the old SSN and the new, then change SSN."""
    old, old_k = current if current is not None else (_all_others(obs, settings), 1)
    if not target and key.voters:  # rule 4: asynchronous from now on, so no voter may promote on its own word
        return (WriteSync(settings.name, (), 0, version),), memory, "emptying the sync key first"
    if old_k > 0 and k > 0 and not (covers(key, old, old_k) and covers(key, target, k)):
        # Without a synchronous standby before (old_k 0) there is nothing to widen: the key names no voter, so
        # nobody promotes until step c, and step c waits for the new standbys to hold what was acknowledged.
        union = tuple(sorted(set(key.voters) | set(old) | set(target)))
        quorum = len(union) - min(old_k, k)
        return (WriteSync(settings.name, union, quorum, version),), memory, \
            f"adding {_show(target)} to the sync key before synchronous_standby_names"
    return (SetSyncStandbyNames(wanted),), replace(memory, sync_applied=None), \
        f"synchronous_standby_names = '{wanted}'" + _fallback_note(target, settings)


def _after_switch(obs, memory, settings, key, target, k, version):
    """Step c: narrow the key to the new SSN once enough of it holds everything acknowledged before the change."""
    quorum = len(target) - k if target else 0
    if set(key.voters) == set(target) and key.quorum == quorum:
        return (), memory, ""
    applied = memory.sync_applied
    flushed = {s.name.lower(): s.flush_lsn for s in obs.local.standbys}
    caught_up = [n for n in target if applied is not None and (flushed.get(n) or -1) >= applied[1]]
    if len(caught_up) < k:
        return (), memory, ""  # the new standbys are still receiving what was acknowledged before
    return (WriteSync(settings.name, tuple(sorted(target)), quorum, version),), memory, \
        f"synchronous standbys now {_show(target)}" + _fallback_note(target, settings)


def _remember_applied(obs: Observation, memory: Memory, wanted: str) -> Memory:
    if memory.sync_applied is not None and memory.sync_applied[0] == wanted:
        return memory
    return replace(memory, sync_applied=(wanted, obs.local.wal_position or 0))


def covers(key: SyncState, standbys: tuple[str, ...], k: int) -> bool:
    """(*): the key protects every commit SSN (standbys, k) acknowledged; a key naming no voter lets nobody
    but its leader promote, which protects everything."""
    if not standbys or k <= 0 or not key.voters:
        return True
    return set(standbys) <= set(key.voters) and key.quorum >= len(key.voters) - k


def _target(obs: Observation, settings: Settings, key: SyncState,
            in_ssn: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """The standbys SSN should name and how many must acknowledge (rules 3 and 4)."""
    candidates = _candidates(obs, settings, set(key.voters) | set(in_ssn))
    count = max(1, settings.synchronous_node_count)
    if settings.synchronous_mode == "quorum":
        chosen = candidates
    else:
        chosen = candidates[:count]
    if not chosen and settings.synchronous_mode_strict:
        chosen = key.voters[:count] if settings.synchronous_mode != "quorum" else key.voters
    k = min(count, len(chosen)) if settings.synchronous_mode == "quorum" else len(chosen)
    return tuple(sorted(chosen)), k  # sorted: the rendered value must not change with the standbys' positions


def _candidates(obs: Observation, settings: Settings, current: set[str]) -> list[str]:
    cluster = obs.cluster
    assert cluster is not None
    members = {m.name.lower(): m for m in cluster.members}
    mine = obs.local.wal_position
    limit = settings.maximum_lag_on_syncnode
    ranked = []
    for s in obs.local.standbys:
        name = s.name.lower()
        member = members.get(name)
        if s.state != "streaming" or member is None or name == settings.name.lower() or _nosync(member):
            continue
        if limit > 0 and mine is not None and s.flush_lsn is not None and mine - s.flush_lsn > limit:
            continue
        ranked.append((-sync_priority(member), name not in current, -(s.flush_lsn or 0), name))
    return [r[-1] for r in sorted(ranked)]


def _nosync(member: Member) -> bool:
    """Never synchronous: tagged so, or not allowed to promote (a synchronous standby that may never take over
    would leave nobody to fail over to)."""
    tags = member.tags or {}
    return any(tags.get(t) in (True, "true", "True") for t in ("nosync", "nostream")) or \
        sync_priority(member) <= 0 or member.nofailover


def sync_priority(member: Member) -> int:
    value = (member.tags or {}).get("sync_priority", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _all_others(obs: Observation, settings: Settings) -> tuple[str, ...]:
    """An SSN we cannot read (``*``, or someone else's syntax) may let any standby acknowledge."""
    assert obs.cluster is not None
    return tuple(sorted(m.name.lower() for m in obs.cluster.members if m.name.lower() != settings.name.lower()))


def _fallback_note(target: tuple[str, ...], settings: Settings) -> str:
    if target:
        return ""
    if settings.synchronous_mode_strict:
        return (" (No active replication connections from Patroni members and synchronous_mode_strict is "
                "requested: commits wait for a synchronous standby)")
    return " (no synchronous standby available: running asynchronously, no automatic failover until one returns)"


def _show(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


# --- promotion and election ---------------------------------------------------------------------------------------

def before_promote(obs: Observation, settings: Settings) -> tuple:
    """Rule 6: the key names us with no voter, and the new primary starts with SSN empty (or the placeholder
    in strict mode) until its first tick as leader picks standbys."""
    if not enabled(settings):  # a value left from an earlier sync mode would block the new primary's writes
        return (SetSyncStandbyNames(None),) if obs.local.sync_standby_names else ()
    assert obs.cluster is not None
    wanted = render((), 0, False, settings.synchronous_mode_strict)
    return (WriteSync(settings.name, (), 0, obs.cluster.versions.get("sync", 0)), SetSyncStandbyNames(wanted))


def may_promote(obs: Observation, settings: Settings) -> tuple[bool, str, tuple[str, ...]]:
    """(allowed, why not, the voters to compare WAL with) under rule 5; voters is () when the key does not
    restrict (then every member counts, as in asynchronous mode)."""
    cluster = obs.cluster
    assert cluster is not None
    key = cluster.sync
    if not enabled(settings) or key is None or key.leader is None:
        return True, "", ()
    me = settings.name.lower()
    if key.leader.lower() == me and not key.lists(me):
        # The key's own leader (a primary coming back, or a voter whose promotion failed after it took the key,
        # rule 6) holds everything acknowledged: only it may take over, whoever else has more (unacknowledged) WAL.
        return True, "", (me,)
    if not key.lists(me):
        listed = ", ".join(key.voters) or "none"
        return False, f"not a synchronous standby (the sync key lists {listed})", key.voters
    others = [v for v in key.voters if v != me]
    heard = {p.name.lower() for p in obs.peers if p.reachable and p.wal_position is not None}
    votes = [v for v in others if v in heard]
    if len(votes) < key.quorum:
        return False, f"heard from {len(votes)} of the {key.quorum} other synchronous standbys the quorum needs", \
            key.voters
    return True, "", key.voters


def restricted_to(obs: Observation, settings: Settings) -> frozenset[str] | None:
    """The lower-cased names a switchover may hand over to in sync mode (the key's voters); None: anyone."""
    key = obs.cluster.sync if obs.cluster is not None else None
    if not enabled(settings) or key is None or key.leader is None:
        return None
    return frozenset(key.voters)
