"""Asking the other members directly (GET <api_url>, Patroni's /patroni) when the leader race needs fresh facts.

Rules
1. Asked only when there is no leader; every request has a short deadline and all run in parallel, so the whole
   round is bounded by one timeout.
2. A member that does not answer is reported unreachable, never guessed at; the core then ignores it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from pgha.core.model import Member, PeerStatus


def _position(body: dict[str, Any]) -> int | None:
    xlog = body.get("xlog") or {}
    values = [xlog.get(k) for k in ("location", "received_location", "replayed_location")]
    numbers = [v for v in values if isinstance(v, int)]
    return max(numbers) if numbers else None


def ask(member: Member, timeout: float, verify: Any) -> PeerStatus:
    try:
        response = requests.get(member.api_url, timeout=timeout, verify=verify)
        body = response.json()
    except (requests.RequestException, ValueError):
        return PeerStatus(member.name, reachable=False)
    if not isinstance(body, dict):
        return PeerStatus(member.name, reachable=False)
    timeline = body.get("timeline")
    return PeerStatus(member.name, reachable=True, wal_position=_position(body),
                      timeline=timeline if isinstance(timeline, int) else None, role=body.get("role"))


def ask_all(members: tuple[Member, ...], me: str, timeout: float = 0.5, verify: Any = False) -> tuple[PeerStatus, ...]:
    others = [m for m in members if m.name != me and m.api_url]
    if not others:
        return ()
    with ThreadPoolExecutor(max_workers=min(8, len(others))) as pool:
        return tuple(pool.map(lambda m: ask(m, timeout, verify), others))
