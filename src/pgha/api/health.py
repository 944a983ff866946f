"""Health-check status codes of the REST API, decided as Patroni 4.1 decides them (spec section 2).

Pure: plain values in, an HTTP status code out. No I/O, no clock: the caller passes ``now`` (wall-clock seconds,
the clock ``last_tick_wall`` and ``dcs_last_seen`` were read from). ``status`` is the dict ``build_status()``
returns (status.py), private fields under ``"_pgha"`` included.

Rules (Patroni's ``RestApiHandler.do_GET``, ``do_GET_liveness``, ``_readiness``)
1. ``/`` is ``/primary``. The path (query string already removed) is matched by *substring*, first rule wins,
   in this order: ``standby_leader``/``standby-leader``, ``leader``, ``master``/``primary``/``read-write``,
   ``replica``, ``read-only`` (without ``sync``/``quorum``), ``health``; then, only while the DCS view is fresh
   (DCS seen within ttl), the exact paths ``/sync`` ``/synchronous`` ``/quorum`` ``/async`` ``/asynchronous``
   ``/read-only-sync`` ``/read-only-synchronous`` ``/read-only-quorum``. Anything else: 503.
2. "Lock holder" = the agent's last lock refresh is less than ttl old. The agent says so in ``lock_holder``; it is
   believed only while its last tick is younger than ttl, so a frozen agent stops answering 200 for the leader.
3. DCS view stale and paused: the leader paths answer from the PostgreSQL role alone.
4. Lock holder in a standby cluster (role ``standby_leader``): ``/standby-leader`` 200, ``/primary`` and
   ``/replica`` 503. Lock holder otherwise: ``/primary`` 200 whatever PostgreSQL's role.
5. ``/replica``: PostgreSQL running as a replica, no ``noloadbalance`` tag, ``replication_state=`` matches when
   given, and not lagging: ``max(status optime (fresh DCS only), latest_end_lsn) > replayed + lag`` means lagging.
   ``lag`` is bytes or ``16kB``/``64MB``/``1GB`` (Patroni's ``parse_int(v, 'B')``; unreadable means no limit).
6. ``tag_<k>=<v>`` filters apply to a 200 on every path but the leader/primary/standby-leader ones: the
   configured tag must exist and equal ``v`` (non-strings compared as ``str(value).lower()``).
7. Synchronous replication (Patroni's rules on the ``sync_standby``/``quorum_standby`` flags of the status, set
   by the agent for a member running as a replica that the ``sync`` key lists, in mode ``on``/``quorum``):
   ``/sync`` ``/synchronous`` answer as ``/replica`` for a sync standby, ``/quorum`` as ``/replica`` for a quorum
   standby, ``/async`` ``/asynchronous`` as ``/replica`` for a member that is neither; ``/read-only-sync``
   ``/read-only-synchronous`` 200 where ``/primary`` or ``/standby-leader`` would, else as ``/replica`` for a sync
   standby; ``/read-only-quorum`` likewise for a quorum standby. Anything else on these paths: 503.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

OK, UNAVAILABLE = 200, 503
PRIVATE = "_pgha"

# --- lag values: Patroni's parse_int(value, 'B') ---------------------------------------------------------------

_HEX = re.compile(r"^[-+]?0x[0-9a-fA-F]+")
_OCT = re.compile(r"^[-+]?0[0-7]*")
_DEC = re.compile(r"^[-+]?(0|[1-9][0-9]*)")
_DBL = re.compile(r"^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?")
_BYTES = {"B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
_ROUND_TO = {"TB": "GB", "GB": "MB", "MB": "kB", "kB": "B"}  # a value in TB is rounded to whole GB, ...


def _strtol(text: str) -> tuple[int | None, str]:
    for regex, base in ((_HEX, 16), (_OCT, 8), (_DEC, 10)):
        match = regex.match(text)
        if match:
            try:
                return int(text[:match.end()], base), text[match.end():]
            except ValueError:  # more decimal digits than int() reads (sys.get_int_max_str_digits()): unreadable
                return None, text
    return None, text


def _strtod(text: str) -> tuple[float | None, str]:
    match = _DBL.match(text)
    return (float(text[:match.end()]), text[match.end():]) if match else (None, text)


def parse_bytes(value: Any) -> int | None:
    """``1048576``, ``1024kB``, ``10MB``, ``1.5GB`` → bytes; None when unreadable (C-like: ``010`` is octal)."""
    text = str(value).strip()
    number: float | int | None
    number, unit = _strtol(text)
    if (number is None and unit.startswith(".")) or (unit and unit[0] in ".eE"):
        number, unit = _strtod(text)
    if number is None:
        return None
    unit = unit.strip()
    try:
        if not unit:
            return round(number)
        if unit not in _BYTES:
            return None
        scaled = number * _BYTES[unit]
        if unit in _ROUND_TO:
            step = _BYTES[_ROUND_TO[unit]]
            scaled = round(scaled / step) * step
        return round(scaled)
    except (OverflowError, ValueError):
        return None


# --- facts one request is judged on ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Facts:
    """What the rules look at, computed once per request."""

    path: str
    state: Any
    role: Any
    dcs_fresh: bool
    leader: int  # /leader
    primary: int  # /primary, /read-write, /
    standby_leader: int  # /standby-leader
    replica: int  # /replica
    sync_standby: bool = False  # rule 7
    quorum_standby: bool = False


def private(status: Mapping[str, Any]) -> Mapping[str, Any]:
    value = status.get(PRIVATE)
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def holds_lock(status: Mapping[str, Any], now: float) -> bool:
    """Rule 2: the agent said it holds the lock, and said so less than ttl ago."""
    priv = private(status)
    last_tick = priv.get("last_tick_wall")
    if not priv.get("lock_holder") or not isinstance(last_tick, (int, float)):
        return False
    return now - last_tick < _number(priv.get("ttl"))


def dcs_fresh(status: Mapping[str, Any], now: float) -> bool:
    """Patroni keeps a DCS view for ttl seconds after reading it. ``dcs_last_seen`` is whole seconds (Patroni's
    format), so up to one second is added back."""
    seen = status.get("dcs_last_seen")
    if not isinstance(seen, (int, float)) or isinstance(seen, bool) or not seen:
        return False
    return now - seen < _number(private(status).get("ttl")) + 1.0


def _leader_optime(status: Mapping[str, Any], fresh: bool) -> int:
    priv = private(status)
    optime = priv.get("status_optime") if fresh else 0
    return max(int(_number(optime)), int(_number(priv.get("latest_end_lsn"))))


def _xlog(status: Mapping[str, Any], key: str) -> int:
    xlog = status.get("xlog")
    return int(_number(xlog.get(key))) if isinstance(xlog, Mapping) else 0


def _first(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _noloadbalance(status: Mapping[str, Any]) -> bool:
    tags = status.get("tags")
    value = tags.get("noloadbalance") if isinstance(tags, Mapping) else None
    return str(value).lower() in ("on", "true", "yes", "1")


def _replica_code(status: Mapping[str, Any], query: Mapping[str, list[str]], fresh: bool) -> int:
    max_lag = parse_bytes(_first(query, "lag") or sys.maxsize)
    if max_lag is None:
        max_lag = sys.maxsize
    optime = _leader_optime(status, fresh)
    lagging = bool(optime) and optime > _xlog(status, "replayed_location") + max_lag
    wanted = _first(query, "replication_state")
    state_ok = status.get("replication_state") == wanted if wanted else True
    healthy = status.get("role") == "replica" and status.get("state") == "running"
    return OK if healthy and state_ok and not lagging and not _noloadbalance(status) else UNAVAILABLE


def _leader_codes(status: Mapping[str, Any], now: float, fresh: bool, replica: int) -> tuple[int, int, int, int]:
    """(leader, primary, standby_leader, replica) codes: rules 3 and 4."""
    role = status.get("role")
    if not fresh and status.get("pause"):
        is_primary, is_standby = role == "primary", role == "standby_leader"
        return _code(is_primary or is_standby), _code(is_primary), _code(is_standby), replica
    if not holds_lock(status, now):
        return UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, replica
    if private(status).get("standby_cluster") or role == "standby_leader":
        return OK, UNAVAILABLE, _code(role in ("replica", "standby_leader")), UNAVAILABLE
    return OK, OK, UNAVAILABLE, replica


def _code(ok: bool) -> int:
    return OK if ok else UNAVAILABLE


def facts(path: str, query: Mapping[str, list[str]], status: Mapping[str, Any], now: float) -> Facts:
    fresh = dcs_fresh(status, now)
    leader, primary, standby, replica = _leader_codes(status, now, fresh, _replica_code(status, query, fresh))
    return Facts(path="/primary" if path == "/" else path, state=status.get("state"),
                 role=status.get("role"), dcs_fresh=fresh, leader=leader, primary=primary,
                 standby_leader=standby, replica=replica, sync_standby=status.get("sync_standby") is True,
                 quorum_standby=status.get("quorum_standby") is True)


# --- the rule table (rule 1) -------------------------------------------------------------------------------------

def _has(*words: str) -> Callable[[str], bool]:
    return lambda path: any(word in path for word in words)


def _read_only(path: str) -> bool:
    return "read-only" in path and "sync" not in path and "quorum" not in path


def _writer_ok(f: Facts) -> bool:
    return OK in (f.primary, f.standby_leader)


def _if(ok: bool, code: int) -> int:
    return code if ok else UNAVAILABLE


def _read_only_sync(f: Facts, standby: bool) -> int:
    return OK if _writer_ok(f) else _if(standby, f.replica)


# Exact paths that need the /sync key (rule 7); answered only with a fresh DCS view.
_SYNC_PATHS: dict[str, Callable[[Facts], int]] = {
    "/sync": lambda f: _if(f.sync_standby, f.replica),
    "/synchronous": lambda f: _if(f.sync_standby, f.replica),
    "/quorum": lambda f: _if(f.quorum_standby, f.replica),
    "/async": lambda f: _if(not f.sync_standby and not f.quorum_standby, f.replica),
    "/asynchronous": lambda f: _if(not f.sync_standby and not f.quorum_standby, f.replica),
    "/read-only-sync": lambda f: _read_only_sync(f, f.sync_standby),
    "/read-only-synchronous": lambda f: _read_only_sync(f, f.sync_standby),
    "/read-only-quorum": lambda f: _read_only_sync(f, f.quorum_standby),
}


def _sync_family(f: Facts) -> int:
    answer = _SYNC_PATHS.get(f.path)
    return answer(f) if answer is not None and f.dcs_fresh else UNAVAILABLE


# (predicate on the path, matcher giving the code, whether tag_ filters apply)
RULES: tuple[tuple[Callable[[str], bool], Callable[[Facts], int], bool], ...] = (
    (_has("standby_leader", "standby-leader"), lambda f: f.standby_leader, False),
    (_has("leader"), lambda f: f.leader, False),
    (_has("master", "primary", "read-write"), lambda f: f.primary, False),
    (_has("replica"), lambda f: f.replica, True),
    (_read_only, lambda f: OK if _writer_ok(f) else f.replica, True),
    (_has("health"), lambda f: _code(f.state == "running"), True),
    (lambda path: True, _sync_family, True),
)


def _tags_match(query: Mapping[str, list[str]], tags: Any) -> bool:
    """Rule 6."""
    tags = tags if isinstance(tags, Mapping) else {}
    for key, values in query.items():
        if not key.startswith("tag_"):
            continue
        configured = tags.get(key[len("tag_"):])
        if configured is None:
            return False
        if not isinstance(configured, str):
            configured = str(configured).lower()
        if configured != values[0]:
            return False
    return True


def health_code(path: str, query: Mapping[str, list[str]], status: Mapping[str, Any], now: float) -> int:
    """The code of a generic GET (and of every HEAD/OPTIONS) on ``path`` with the parsed ``query``."""
    f = facts(path, query, status, now)
    for matches, answer, check_tags in RULES:
        if matches(f.path):
            code = answer(f)
            if check_tags and code == OK and not _tags_match(query, status.get("tags")):
                return UNAVAILABLE
            return code
    return UNAVAILABLE


# --- /liveness and /readiness ------------------------------------------------------------------------------------

def liveness_code(status: Mapping[str, Any], now: float) -> int:
    """200 unless the next HA tick is overdue by more than ttl (2×ttl unless running as primary); 200 if paused."""
    priv = private(status)
    if status.get("pause"):
        return OK
    last_tick = priv.get("last_tick_wall")
    if not isinstance(last_tick, (int, float)):
        return UNAVAILABLE
    primary = status.get("role") == "primary" and bool(priv.get("pg_running"))
    threshold = _number(priv.get("ttl")) * (1 if primary else 2)
    next_run = last_tick + _number(priv.get("loop_wait"))
    return _code(next_run + threshold > now)


def readiness_code(status: Mapping[str, Any], query: Mapping[str, list[str]], now: float) -> int:
    """200 for the lock holder, or a running, streaming replica whose lag is within ``lag`` (default
    maximum_lag_on_failover); ``mode=write`` measures received WAL, anything else replayed WAL."""
    if holds_lock(status, now):
        return OK
    if status.get("state") != "running" or status.get("replication_state") != "streaming":
        return UNAVAILABLE
    fresh = dcs_fresh(status, now)
    if not fresh and not private(status).get("latest_end_lsn"):
        return UNAVAILABLE  # "DCS is not accessible" (pgha has no failsafe mode)
    location = "received_location" if _first(query, "mode") == "write" else "replayed_location"
    lag = _leader_optime(status, fresh) - _xlog(status, location)
    limit = parse_bytes(_first(query, "lag"))
    if limit is None:
        limit = int(_number(private(status).get("maximum_lag_on_failover")))
    return _code(lag <= limit)
