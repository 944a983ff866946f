"""Failsafe mode, the primary's side: with the DCS unreachable, ask every member to confirm it still follows us.

Patroni's failsafe_mode (docs/dcs_failsafe_mode.rst): when the leader key cannot be renewed, the primary POSTs
``/failsafe`` to every member the ``failsafe`` key lists; if all of them answer 200 it keeps running as primary,
otherwise it demotes as it would without failsafe mode.

Why this is safe (the same argument as the DCS lease, docs/safety.md): a replica that accepts a POST /failsafe
does not race for the leader lock for ttl seconds after it (core/election.py). So one complete round *sent* at
t0 keeps every member from promoting until t0 + ttl, exactly like a lease keepalive sent at t0: the agent treats
it as one (``LeaseState.valid_until = t0 + ttl``) and the core, the fencer and the watchdog apply the usual
deadline. A round with any member missing extends nothing: the lease runs out and the primary is fenced.

Rules
1. All requests run in parallel under one short deadline; any error, timeout or non-200 answer fails the round.
2. The round is asked only by a running primary that cannot show the lock in the DCS (unreachable, or the key
   gone); the member list is the last ``failsafe`` key read from the DCS (an empty list: nothing to ask).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import requests

log = logging.getLogger("pgha")


def _endpoint(api_url: str) -> str:
    base = api_url.rsplit("/", 1)[0] if api_url.endswith("/patroni") else api_url.rstrip("/")
    return base + "/failsafe"


def confirm(members: Mapping[str, str], me: str, payload: Mapping[str, Any], *, timeout: float,
            auth: tuple[str, str] | None = None, verify: Any = False) -> bool:
    """True when every member other than ``me`` answered 200 to POST /failsafe."""
    others = [url for name, url in members.items() if name != me]
    if not others:
        return True

    def one(url: str) -> bool:
        try:
            response = requests.post(_endpoint(url), json=dict(payload), timeout=timeout, auth=auth, verify=verify)
        except requests.RequestException as e:
            log.warning("failsafe: %s did not answer: %s", _endpoint(url), type(e).__name__)
            return False
        if response.status_code != 200:
            log.warning("failsafe: %s answered %s %s", _endpoint(url), response.status_code, response.text[:80])
        return response.status_code == 200

    with ThreadPoolExecutor(max_workers=min(8, len(others))) as pool:
        return all(pool.map(one, others))
