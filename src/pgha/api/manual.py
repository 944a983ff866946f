"""Checks of the operator's write requests, with Patroni's codes and texts (spec section 2); pure functions.

Each check takes the parsed body and what is known (a fresh ``ClusterView``, peer answers, the time) and returns
either an error ``(code, text)`` or the value to act on. The handlers (writes.py) do the I/O around them.

Rules
1. The order of the checks is Patroni's (api.py ``do_POST_failover``, ``parse_schedule``, ``do_POST_restart``),
   so the same bad request gets the same answer.
2. A value of the wrong type is a 400 naming the field and what was expected; nothing is written then.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

from pgha.core.dynamic import DynamicConfig
from pgha.core.model import ClusterView, PeerStatus
from pgha.dcs.keys import parse_time

Error = tuple[int, str]


def parse_schedule(value: Any, action: str, now: float) -> tuple[Error | None, float | None]:
    """``scheduled_at`` / ``schedule`` -> Unix seconds, or Patroni's error."""
    if not isinstance(value, str):
        return (422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"), None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return (422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"), None
    if moment.tzinfo is None:
        return (400, f"Timezone information is mandatory for the scheduled {action}"), None
    at = parse_time(value)
    assert at is not None
    if at < now:
        return (422, f"Cannot schedule {action} in the past"), None
    return None, at


def failover_request(body: Mapping[str, Any], action: str, paused: bool,
                     now: float) -> tuple[Error | None, dict[str, Any], str]:
    """Patroni's checks before the cluster is looked at -> (error, failover key value, action as performed)."""
    for field in ("leader", "candidate", "member", "scheduled_at"):
        if body.get(field) is not None and not isinstance(body[field], str):
            return (400, f"{field}: expected a string, got {type(body[field]).__name__}"), {}, action
    leader = body.get("leader") or None
    candidate = body.get("candidate") or body.get("member") or None
    scheduled = body.get("scheduled_at") or None
    if action == "failover" and not candidate:
        return (400, "Failover could be performed only to a specific candidate"), {}, action
    if action == "switchover" and not leader:
        return (400, "Switchover could be performed only from a specific leader"), {}, action
    value: dict[str, Any] = {}
    if scheduled:
        if action == "failover":
            return (400, "Failover can't be scheduled"), {}, action
        if paused:
            return (400, "Can't schedule switchover in the paused state"), {}, action
        error, _ = parse_schedule(scheduled, action, now)
        if error:
            return error, {}, action
        value["scheduled_at"] = scheduled
    if paused and not candidate:
        return (400, "Switchover is possible only to a specific candidate in a paused state"), {}, action
    if action == "failover" and leader:
        action = "switchover"  # Patroni: a failover naming the leader is performed as a switchover
    if leader == candidate:
        return (400, "Switchover target and source are the same"), {}, action
    if leader:
        value["leader"] = leader
    if candidate:
        value["member"] = candidate
    return None, value, action


def targets(view: ClusterView, leader: str | None, candidate: str | None, action: str) -> Error | list[str]:
    """Patroni's ``is_failover_possible`` up to asking the members: an error, or the names to ask. In sync mode
    a switchover goes only to a synchronous standby (the ``sync`` key's), as the leader will insist."""
    if leader and view.leader != leader:
        return 412, "leader name does not match"
    voters = _sync_voters(view) if action == "switchover" else None
    if candidate:
        if voters is not None and candidate.lower() not in voters:
            return 412, "candidate name does not match with sync_standby"
        names = [m.name for m in view.members if m.name == candidate]
        if not names:
            return 412, "candidate does not exists"
        return names
    names = [m.name for m in view.members if m.name != view.leader and m.api_url]
    if voters is not None:
        names = [n for n in names if n.lower() in voters]
        if not names:
            return 412, f"{action} is not possible: can not find sync_standby"
    if not names:
        return 412, f"{action} is not possible: cluster does not have members except leader"
    return names


def _sync_voters(view: ClusterView) -> frozenset[str] | None:
    mode, _ = DynamicConfig.from_dict(view.config)
    if mode.synchronous_mode not in ("on", "quorum") or view.sync is None:
        return None
    return frozenset(view.sync.voters)


def candidate_ok(view: ClusterView, peers: tuple[PeerStatus, ...], action: str) -> Error | None:
    """A candidate must answer its REST API and be allowed to promote (Patroni's ``failover_limitation``)."""
    for peer in peers:
        member = view.member(peer.name)
        if peer.reachable and member is not None and not member.nofailover:
            return None
    return 412, f"{action} is not possible: no good candidates have been found"


def result(view: ClusterView, old_leader: str | None, candidate: str | None, action: str) -> Error | None:
    """One look at the DCS while waiting: (200, success text) once another leader holds the lock; (503,
    "<Action> failed") when the request is gone without a change; None while it is still pending."""
    past = "switched" if action == "switchover" else "failed"
    if view.leader and view.leader != old_leader:
        if not candidate or candidate == view.leader:
            return 200, f'Successfully {past} over to "{view.leader}"'
        return 200, f'{past.title()} over to "{view.leader}" instead of "{candidate}"'
    if view.failover is None:
        return 503, f"{action.title()} failed"
    return None


MAX_RESTART_TIMEOUT = 3600.0  # a restart waited on for longer than an hour is a typo, not a plan
RESTART_KEYS = ("schedule", "role", "postgres_version", "timeout", "restart_pending")


def restart_request(body: Mapping[str, Any], paused: bool, now: float) -> tuple[Error | None, dict[str, Any]]:
    """Patroni's filters of POST /restart -> (error, normalized filters; ``at`` when scheduled)."""
    if paused and "schedule" in body:
        return (500, "Can't schedule restart in the paused state"), {}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "schedule":
            error, at = parse_schedule(value, "restart", now)
            if error:
                return error, {}
            out.update(schedule=value, at=at)
        elif key == "role":
            if value not in ("primary", "standby_leader", "replica", "master"):
                return (400, "PostgreSQL role should be either primary, standby_leader, or replica"), {}
            out["role"] = "primary" if value == "master" else value
        elif key == "postgres_version":
            version = version_number(value)
            if version is None:
                return (400, f"postgres_version: expected a PostgreSQL version such as 15.4, got {value!r}"), {}
            out["postgres_version"] = version
        elif key == "timeout":
            seconds = _seconds(value)
            if seconds is None or not 0 < seconds <= MAX_RESTART_TIMEOUT:
                return (400, "Timeout should be a positive number of seconds"), {}
            out["timeout"] = seconds
        elif key == "restart_pending":
            out["restart_pending"] = value in (True, "true", "True", 1)
        else:
            return (400, f"Unknown filter for the scheduled restart: {key}"), {}
    return None, out


def restart_matches(filters: Mapping[str, Any], status: Mapping[str, Any], leader: bool) -> bool:
    """Patroni's ``restart_matches``: every filter given must hold for this node."""
    role = filters.get("role")
    if role and role != ("primary" if leader else "replica"):
        return False
    version = filters.get("postgres_version")
    if version is not None and not (status.get("server_version") or 0) < version:
        return False
    return not filters.get("restart_pending") or bool(status.get("pending_restart"))


def version_number(value: Any) -> int | None:
    """"15.4" -> 150004, "9.6.24" -> 90624 (server_version_num), else None."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split(".")
    if not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts) or not 2 <= len(parts) <= 3:
        return None
    numbers = [int(p) for p in parts]
    if numbers[0] >= 10 and len(numbers) == 2:
        return numbers[0] * 10000 + numbers[1]
    if numbers[0] < 10 and len(numbers) == 3:
        return numbers[0] * 10000 + numbers[1] * 100 + numbers[2]
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip().lower().removesuffix("s").strip())
    except (ValueError, OverflowError):
        return None
    return None


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Patroni's ``patch_config``: nested mappings merge, None deletes a key, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = value
