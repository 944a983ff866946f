"""The dynamic configuration: the cluster-wide settings kept in the DCS ``config`` key, as a pure frozen value.

Patroni calls this the "dynamic configuration" (``/<namespace>/<scope>/config``); ``bootstrap.dcs`` in the YAML
file seeds it once, and ``PATCH /config`` or ``patronictl edit-config`` change it later
(../shared/spec/patroni-compat.md, section 3 "Dynamic" and section 6 "Timing").

Rules
1. Pure: standard library only, no I/O, no clock, no environment, no logging.
2. ``DynamicConfig.from_dict`` never raises: the DCS may hold anything anyone wrote. A field whose value cannot be
   read keeps its default and yields one error string ``"<key>: expected ..."`` naming the key (callers add a
   prefix such as ``bootstrap.dcs.``).
3. Values are read the way Patroni reads them: integers may arrive as numeric strings, booleans as
   ``on/off/true/false/yes/no/1/0``; ``master_start_timeout``/``master_stop_timeout`` are the legacy names of
   ``primary_start_timeout``/``primary_stop_timeout`` (the new name wins when both are present).
4. pgha accepts lower minimums than Patroni (ttl >= 2, loop_wait >= 0.1, retry_timeout >= 0.5) so that local
   clusters can fail over quickly; ``effective_timing`` then enforces ``loop_wait + 2*retry_timeout <= ttl``.
5. Everything stored is frozen: mappings become ``MappingProxyType`` and lists become tuples (``freeze``);
   ``to_dict()``/``thaw`` give back plain JSON-ready values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

_EMPTY: Mapping[str, Any] = MappingProxyType({})

_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")

# Keys of the dynamic configuration pgha reads (top level and under ``postgresql``).
SUPPORTED_KEYS = frozenset({
    "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "maximum_lag_on_syncnode",
    "max_timelines_history", "primary_start_timeout", "master_start_timeout", "primary_stop_timeout",
    "master_stop_timeout", "check_timeline", "synchronous_mode", "synchronous_mode_strict",
    "synchronous_node_count", "failsafe_mode", "pause", "postgresql",
})
SUPPORTED_PG_KEYS = frozenset({"use_pg_rewind", "use_slots", "parameters", "pg_hba"})

# Keys Patroni knows in the dynamic configuration that pgha does not act on yet.
UNSUPPORTED_KEYS = frozenset({
    "primary_race_backoff", "member_slots_ttl", "slots", "permanent_slots", "permanent_replication_slots",
    "ignore_slots", "standby_cluster",
})
UNSUPPORTED_PG_KEYS = frozenset({
    "pg_ident", "recovery_conf", "parameters_primary", "parameters_replica", "parameters_standby_leader",
    "pg_hba_primary", "pg_hba_replica", "pg_hba_standby_leader", "pg_ident_primary", "pg_ident_replica",
    "pg_ident_standby_leader", "bin_dir", "bin_name", "pg_ctl_timeout", "use_unix_socket", "use_unix_socket_repl",
    "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines",
    "create_replica_methods", "basebackup", "callbacks", "custom_conf", "pre_promote", "before_stop", "database",
})

# Integer GUCs Patroni's validator checks in the dynamic configuration: name -> (min, max).
_INT_GUCS = {
    "max_connections": (1, 262143),
    "max_locks_per_transaction": (10, 2147483647),
    "max_prepared_transactions": (0, 262143),
    "max_replication_slots": (0, 262143),
    "max_wal_senders": (0, 262143),
    "max_worker_processes": (0, 262143),
}


def freeze(value: Any) -> Any:
    """A deep read-only copy: dicts become ``MappingProxyType``, lists and tuples become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def parse_bool(value: Any) -> bool | None:
    """Patroni's reading of a boolean: bool, or on/off/true/false/yes/no/1/0 (any case); None if unreadable."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def parse_int(value: Any) -> int | None:
    """An integer from an int, an integral float or a numeric string; None (never an exception) otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def parse_number(value: Any) -> float | None:
    """A finite number from an int, a float or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def show(value: Any) -> str:
    """A short quoted rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class DynamicConfig:
    """The cluster-wide settings. Defaults are Patroni's except the timing, which is pgha's own, tuned for fast
    failover (docs/safety.md argues why it is safe); any value given, Patroni's included, is used as given."""

    ttl: int = 4  # Patroni: 30
    loop_wait: float = 1  # Patroni: 10
    retry_timeout: float = 1  # Patroni: 10
    maximum_lag_on_failover: int = 1048576
    primary_start_timeout: int = 10  # Patroni: 300; a crashed primary that is not back in 10 s fails over
    primary_stop_timeout: int = 0
    max_timelines_history: int = 0
    check_timeline: bool = False
    synchronous_mode: str = "off"  # off | on | quorum
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    maximum_lag_on_syncnode: int = -1
    failsafe_mode: bool = False
    pause: bool = False
    use_slots: bool = True
    use_pg_rewind: bool = False
    parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    pg_hba: tuple[str, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None) -> tuple["DynamicConfig", list[str]]:
        """Read a dynamic configuration; bad fields keep their default and are reported, nothing raises."""
        if d is None:
            return DynamicConfig(), []
        if not isinstance(d, Mapping):
            return DynamicConfig(), [f"config: expected a mapping, got {show(d)}"]
        errors: list[str] = []
        values = _read_top(d, errors)
        values.update(_read_postgresql(d.get("postgresql"), errors))
        return DynamicConfig(**values, raw=freeze(dict(d))), errors

    def effective_timing(self) -> tuple[int, float, float]:
        """(ttl, loop_wait, retry_timeout) adjusted so that ``loop_wait + 2*retry_timeout <= ttl``.

        On violation retry_timeout is lowered first (not below 0.5), then loop_wait (not below 0.1); with
        ttl >= 2 the rule can always be met.
        """
        ttl, loop_wait, retry_timeout = self.ttl, float(self.loop_wait), float(self.retry_timeout)
        if loop_wait + 2 * retry_timeout > ttl:
            retry_timeout = max(0.5, (ttl - loop_wait) / 2)
            if loop_wait + 2 * retry_timeout > ttl:
                loop_wait = max(0.1, ttl - 2 * retry_timeout)
        return ttl, loop_wait, retry_timeout

    def to_dict(self) -> dict[str, Any]:
        """The raw mapping this value was read from, as plain JSON-ready data."""
        return thaw(self.raw)


def ignored_keys(d: Any) -> tuple[list[str], list[str]]:
    """Key paths in a dynamic configuration pgha ignores: (known to Patroni but unsupported, unknown)."""
    if not isinstance(d, Mapping):
        return [], []
    unsupported, unknown = _split(d, SUPPORTED_KEYS, UNSUPPORTED_KEYS, "")
    pg = d.get("postgresql")
    if isinstance(pg, Mapping):
        more = _split(pg, SUPPORTED_PG_KEYS, UNSUPPORTED_PG_KEYS, "postgresql.")
        unsupported += more[0]
        unknown += more[1]
    return unsupported, unknown


def _split(d: Mapping[str, Any], supported: frozenset, known: frozenset, prefix: str) -> tuple[list, list]:
    keys = [str(k) for k in d if k not in supported]
    return [prefix + k for k in keys if k in known], [prefix + k for k in keys if k not in known]


# --- readers: each returns the value or None after recording an error ------------------------------------------

_Reader = Callable[[Any, str, list], Any]


def _int_at_least(minimum: int) -> _Reader:
    def read(value: Any, key: str, errors: list) -> int | None:
        number = parse_int(value)
        if number is None or number < minimum:
            errors.append(f"{key}: expected an integer >= {minimum}, got {show(value)}")
            return None
        return number
    return read


def _number_at_least(minimum: float) -> _Reader:
    def read(value: Any, key: str, errors: list) -> float | None:
        number = parse_number(value)
        if number is None or number < minimum:
            errors.append(f"{key}: expected a number >= {minimum}, got {show(value)}")
            return None
        return number
    return read


def _bool(value: Any, key: str, errors: list) -> bool | None:
    result = parse_bool(value)
    if result is None:
        errors.append(f"{key}: expected a boolean (true/false), got {show(value)}")
    return result


def _sync_mode(value: Any, key: str, errors: list) -> str | None:
    if isinstance(value, str) and value.strip().lower() == "quorum":
        return "quorum"
    result = parse_bool(value)
    if result is None:
        errors.append(f"{key}: expected on, off or quorum, got {show(value)}")
        return None
    return "on" if result else "off"


_TOP_READERS: dict[str, _Reader] = {
    "ttl": _int_at_least(2),
    "loop_wait": _number_at_least(0.1),
    "retry_timeout": _number_at_least(0.5),
    "maximum_lag_on_failover": _int_at_least(0),
    "maximum_lag_on_syncnode": _int_at_least(-1),
    "max_timelines_history": _int_at_least(0),
    "primary_start_timeout": _int_at_least(0),
    "primary_stop_timeout": _int_at_least(0),
    "check_timeline": _bool,
    "synchronous_mode": _sync_mode,
    "synchronous_mode_strict": _bool,
    "synchronous_node_count": _int_at_least(1),
    "failsafe_mode": _bool,
    "pause": _bool,
}

_LEGACY = {"primary_start_timeout": "master_start_timeout", "primary_stop_timeout": "master_stop_timeout"}


def _read_top(d: Mapping[str, Any], errors: list) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, reader in _TOP_READERS.items():
        key = name if name in d or name not in _LEGACY else _LEGACY[name]
        if d.get(key) is None:
            continue
        value = reader(d[key], key, errors)
        if value is not None:
            values[name] = value
    return values


def _read_postgresql(pg: Any, errors: list) -> dict[str, Any]:
    if pg is None:
        return {}
    if not isinstance(pg, Mapping):
        errors.append(f"postgresql: expected a mapping, got {show(pg)}")
        return {}
    values: dict[str, Any] = {}
    for name in ("use_slots", "use_pg_rewind"):
        if pg.get(name) is not None:
            flag = _bool(pg[name], f"postgresql.{name}", errors)
            if flag is not None:
                values[name] = flag
    values["parameters"] = _read_parameters(pg.get("parameters"), errors)
    hba = _read_hba(pg.get("pg_hba"), errors)
    if hba is not None:
        values["pg_hba"] = hba
    return values


def _read_parameters(params: Any, errors: list) -> Mapping[str, Any]:
    if params is None:
        return _EMPTY
    if not isinstance(params, Mapping):
        errors.append(f"postgresql.parameters: expected a mapping of setting: value, got {show(params)}")
        return _EMPTY
    kept: dict[str, Any] = {}
    for name, value in params.items():
        if _guc_ok(str(name), value, errors):
            kept[str(name)] = value
    return freeze(kept)


def _guc_ok(name: str, value: Any, errors: list) -> bool:
    bounds = _INT_GUCS.get(name.lower())
    if bounds is None or value is None:
        return True
    number = parse_int(value)
    if number is None or not bounds[0] <= number <= bounds[1]:
        errors.append(f"postgresql.parameters.{name}: expected an integer in {bounds[0]}..{bounds[1]}, "
                      f"got {show(value)}")
        return False
    return True


def _read_hba(hba: Any, errors: list) -> tuple[str, ...] | None:
    if hba is None:
        return None
    if not isinstance(hba, (list, tuple)) or not all(isinstance(line, str) for line in hba):
        errors.append(f"postgresql.pg_hba: expected a list of pg_hba.conf lines (strings), got {show(hba)}")
        return None
    return tuple(hba)


__all__ = ["DynamicConfig", "freeze", "thaw", "parse_bool", "parse_int", "parse_number", "show", "ignored_keys",
           "SUPPORTED_KEYS", "UNSUPPORTED_KEYS"]


def unsafe_commit_warning(dynamic: DynamicConfig, local_parameters: Mapping[str, Any] | None) -> str:
    """A synchronous mode with a synchronous_commit that makes no commit wait for a standby ('local', 'off') keeps
    none of its promise: what a client saw committed may be lost in a failover. Said once per configuration
    change (users of the peers found out from lost data)."""
    if dynamic.synchronous_mode not in ("on", "quorum"):
        return ""
    value = None
    for source in (dynamic.parameters, local_parameters or {}):  # the YAML's parameters win, as in merge_parameters
        for key, v in source.items():
            if str(key).lower() == "synchronous_commit" and v is not None:
                value = str(v).strip().lower()
    if value in ("local", "off", "false", "no", "0"):
        return (f"synchronous_mode is {dynamic.synchronous_mode} but synchronous_commit is {value!r}: commits do not "
                "wait for a synchronous standby, so acknowledged commits can be lost in a failover; set "
                "synchronous_commit to on, remote_write or remote_apply")
    return ""
