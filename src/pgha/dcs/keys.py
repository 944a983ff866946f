"""Patroni's DCS key layout and the parsing of one cluster prefix into a ``ClusterView``, shared by every backend.

Keys live under ``/<namespace>/<scope>/`` (repeated slashes collapsed, as Patroni does): ``leader`` (a bare member
name), ``members/<name>`` (member JSON), ``initialize``, ``config``, ``history``, ``status``, ``sync``, ``failover``
(../shared/spec/patroni-compat.md, section 1).

Rules
1. Values come from outside: anyone may have written anything. Parsing never raises; what cannot be read is left
   out (or set to its empty value) and reported in the returned warning strings, each naming the key.
2. A member whose JSON is not an object is skipped, never passed on half-filled. The legacy member format
   ``postgres://...?application_name=<api_url>`` (Patroni < 1.0) is read as Patroni reads it.
3. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlparse, urlunparse

import orjson

from pgha.core.model import ClusterView, Failover, Member, SyncState

MEMBERS = "members/"
# Permanent keys written whole by compare-and-swap (Dcs.put_key, Dcs.delete_key).
PERMANENT = ("config", "failover", "failsafe", "sync")


def cluster_prefix(namespace: str, scope: str) -> str:
    """``/<namespace>/<scope>/`` with repeated slashes collapsed: ("/service", "demo") -> "/service/demo/"."""
    return re.sub("/+", "/", f"/{namespace}/{scope}/")


@dataclass(frozen=True)
class KeyLayout:
    """The full key paths of one cluster."""

    prefix: str  # ends with "/"

    @classmethod
    def of(cls, namespace: str, scope: str) -> "KeyLayout":
        return cls(cluster_prefix(namespace, scope))

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def member(self, name: str) -> str:
        return self.prefix + MEMBERS + name

    @property
    def leader(self) -> str:
        return self.key("leader")

    @property
    def initialize(self) -> str:
        return self.key("initialize")

    @property
    def config(self) -> str:
        return self.key("config")

    @property
    def history(self) -> str:
        return self.key("history")

    @property
    def status(self) -> str:
        return self.key("status")

    @property
    def sync(self) -> str:
        return self.key("sync")

    @property
    def failover(self) -> str:
        return self.key("failover")


def _json(value: str) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(value)
    except (TypeError, ValueError):  # orjson's JSONDecodeError is a ValueError
        pass
    try:  # what orjson refuses and json reads: integers beyond 64 bits, NaN and Infinity
        return True, json.loads(value)
    except (TypeError, ValueError):
        return False, None


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text (Patroni's separators). orjson first: the simulator writes member data on
    every tick; json for what orjson refuses (non-string keys, mapping proxies, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit():
        try:
            return int(value)
        except ValueError:  # more digits than int() reads
            return None
    return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _legacy_member(value: str) -> dict[str, Any]:
    """``postgres://u:p@host:5432/postgres?application_name=http://host:8008/patroni`` -> conn_url, api_url."""
    scheme, netloc, path, params, query, fragment = urlparse(value)
    conn_url = urlunparse((scheme, netloc, path, params, "", fragment))
    api = [p.split("=", 1)[1] for p in query.split("&") if p.startswith("application_name=")]
    return {"conn_url": conn_url, "api_url": api[0] if api else ""}


def parse_member(name: str, value: str, key: str) -> tuple[Member | None, list[str]]:
    """One ``members/<name>`` value -> Member (None when unreadable), with warnings naming ``key``."""
    if value.startswith("postgres"):
        data: Any = _legacy_member(value)
    else:
        ok, data = _json(value)
        if not ok or not isinstance(data, dict):
            return None, [f"{key}: member skipped, its value is not a JSON object: {value[:80]!r}"]
    warnings = []
    for field in ("xlog_location", "timeline"):
        if field in data and data[field] is not None and _int(data[field]) is None:
            warnings.append(f"{key}: {field} is not an integer: {data[field]!r} (ignored)")
    tags = data.get("tags")
    if tags is not None and not isinstance(tags, dict):
        warnings.append(f"{key}: tags is not a JSON object (ignored)")
        tags = None
    member = Member(name=name, conn_url=_str(data.get("conn_url")), api_url=_str(data.get("api_url")),
                    state=_str(data.get("state")), role=_str(data.get("role")),
                    xlog_location=_int(data.get("xlog_location")), timeline=_int(data.get("timeline")),
                    tags=dict(tags or {}), data=dict(data))
    return member, warnings


def parse_history(value: str, key: str) -> tuple[tuple[tuple[Any, ...], ...], list[str]]:
    ok, data = _json(value)
    if not ok or not isinstance(data, list):
        return (), [f"{key}: history is not a JSON list (ignored)"]
    lines = tuple(tuple(line) for line in data if isinstance(line, list))
    skipped = len(data) - len(lines)
    return lines, [f"{key}: {skipped} history line(s) are not lists (ignored)"] if skipped else []


def parse_config(value: str, key: str) -> tuple[Mapping[str, Any], list[str]]:
    """The key exists, so the result is never None: unreadable config reads as {} (Patroni does the same)."""
    ok, data = _json(value)
    if not ok or not isinstance(data, dict):
        return {}, [f"{key}: config is not a JSON object (read as empty)"]
    return data, []


def parse_optime(status: str | None, legacy: str | None, key: str) -> tuple[int | None, list[str]]:
    """``status`` {"optime": int, ...} (or a bare int), falling back to the legacy ``optime/leader`` int."""
    if status is not None:
        ok, data = _json(status)
        if ok and isinstance(data, dict) and _int(data.get("optime")) is not None:
            return _int(data.get("optime")), []
        if ok and _int(data) is not None:
            return _int(data), []
        if not ok or not isinstance(data, dict):
            return None, [f"{key}: status is not a JSON object (ignored)"]
    if legacy is not None:
        return _int(legacy), []
    return None, []


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time with its zone (Patroni's scheduled_at) -> Unix seconds; None when unreadable or naive."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def parse_failover(value: str, key: str) -> tuple[Failover | None, list[str]]:
    """``{"leader", "member", "scheduled_at"}`` (any subset; ``{}`` or empty: no request), or legacy ``old:cand``."""
    ok, data = _json(value)
    if not ok:
        if value.count(":") == 1:
            leader, member = (part.strip() or None for part in value.split(":"))
            return (Failover(leader, member) if leader or member else None), []
        return None, [f"{key}: failover is neither JSON nor leader:member (ignored)"] if value.strip() else []
    if not isinstance(data, dict):
        return None, [f"{key}: failover is not a JSON object (ignored)"]
    leader, member = _str(data.get("leader")) or None, _str(data.get("member")) or None
    scheduled = None
    if data.get("scheduled_at"):
        scheduled = parse_time(data["scheduled_at"])
        if scheduled is None:
            return None, [f"{key}: scheduled_at is not an ISO 8601 time with a zone: {data['scheduled_at']!r} "
                          "(request ignored)"]
    if not leader and not member:
        return None, []
    return Failover(leader, member, scheduled), []


def parse_failsafe(value: str, key: str) -> tuple[Mapping[str, Any] | None, list[str]]:
    ok, data = _json(value)
    if not ok or not isinstance(data, dict):
        return None, [f"{key}: failsafe is not a JSON object (ignored)"]
    return {k: v for k, v in data.items() if isinstance(v, str)}, []


def parse_sync(value: str, key: str) -> tuple[SyncState | None, list[str]]:
    """Patroni's ``{"leader", "sync_standby": "a,b"|null, "quorum"}``; ``{}`` or no leader: None. Names are
    compared case-insensitively (Patroni's rule), so they are lower-cased here."""
    ok, data = _json(value)
    if not ok or not isinstance(data, dict):
        return None, [f"{key}: sync is not a JSON object (ignored)"] if value.strip() else []
    leader = _str(data.get("leader")) or None
    if leader is None:
        return None, []
    standbys = data.get("sync_standby")
    if standbys is not None and not isinstance(standbys, str):
        return None, [f"{key}: sync_standby is not a comma-separated string or null: {standbys!r} (ignored)"]
    voters = tuple(sorted({n.strip().lower() for n in (standbys or "").split(",") if n.strip()}))
    quorum = _int(data.get("quorum"))
    if quorum is None and data.get("quorum") not in (None, ""):
        return None, [f"{key}: quorum is not a whole number: {data.get('quorum')!r} (ignored)"]
    return SyncState(leader=leader, voters=voters, quorum=max(0, quorum or 0)), []


def sync_value(leader: str, voters: tuple[str, ...], quorum: int) -> dict[str, Any]:
    """The ``sync`` key as Patroni writes it."""
    return {"leader": leader, "quorum": quorum, "sync_standby": ",".join(voters) if voters else None}


def _status_timeline(status: str | None) -> tuple[int | None, list[str]]:
    """pgha's timeline claim in the ``status`` key (Patroni reads only optime/slots there and ignores it)."""
    if status is None:
        return None, []
    ok, data = _json(status)
    return (_int(data.get("pgha_timeline")) if ok and isinstance(data, dict) else None), []


_MEMO_LIMIT = 4096  # parses a memo keeps before it starts over (bounds a long-running reader's memory)


def parse_cluster(kvs: Mapping[str, str], prefix: str = "",
                  versions: Mapping[str, int] | None = None,
                  memo: dict[tuple[Any, ...], Any] | None = None) -> tuple[ClusterView, list[str]]:
    """Raw key -> value map of one cluster prefix -> (ClusterView, warnings).

    Keys are relative to the prefix ("leader", "members/pg1"); when ``prefix`` is given, keys starting with it
    are made relative first (so the full paths a backend read may be passed as they are). ``versions`` are the
    backend's versions of the keys (same naming), kept for the permanent keys compare-and-swap writes use.
    ``memo`` (optional, owned by the caller) keeps each key's parse by its value: the parse of one value is a
    pure function of it, and a reader that snapshots often (the simulator) sees mostly unchanged values. The
    parsed objects are shared between views, which nobody mutates.
    """
    def parsed(fn: Callable[..., tuple[Any, list[str]]], *args: Any) -> tuple[Any, Sequence[str]]:
        if memo is None:
            return fn(*args)
        hit = memo.get((fn, args))
        if hit is None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            result, w = fn(*args)
            hit = memo[(fn, args)] = (result, tuple(w))
        return hit

    cut = len(prefix)
    rel = {k[cut:] if cut and k.startswith(prefix) else k: v for k, v in kvs.items()}
    kept = {}
    for k, v in (versions or {}).items():
        k = k[cut:] if cut and k.startswith(prefix) else k
        if k in PERMANENT:
            kept[k] = v
    warnings: list[str] = []
    members = []
    for key in sorted(k for k in rel if k.startswith(MEMBERS)):
        name = key[len(MEMBERS):]
        if not name:
            continue
        member, w = parsed(parse_member, name, rel[key], prefix + key)
        warnings += w
        if member is not None:
            members.append(member)
    config = None
    if "config" in rel:
        config, w = parsed(parse_config, rel["config"], prefix + "config")
        warnings += w
    history: tuple[tuple[Any, ...], ...] = ()
    if "history" in rel:
        history, w = parsed(parse_history, rel["history"], prefix + "history")
        warnings += w
    optime, w = parsed(parse_optime, rel.get("status"), rel.get("optime/leader"), prefix + "status")
    warnings += w
    status_timeline, _ = parsed(_status_timeline, rel.get("status"))
    failover, failsafe = None, None
    if "failover" in rel:
        failover, w = parsed(parse_failover, rel["failover"], prefix + "failover")
        warnings += w
    if "failsafe" in rel:
        failsafe, w = parsed(parse_failsafe, rel["failsafe"], prefix + "failsafe")
        warnings += w
    sync = None
    if "sync" in rel:
        sync, w = parsed(parse_sync, rel["sync"], prefix + "sync")
        warnings += w
    view = ClusterView(leader=rel.get("leader"), members=tuple(members), initialize=rel.get("initialize"),
                       config=config, history=history, status_optime=optime, status_timeline=status_timeline,
                       failover=failover,
                       failsafe=failsafe, sync=sync, versions=kept)
    return view, warnings
