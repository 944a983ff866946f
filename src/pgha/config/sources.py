"""Where the configuration comes from: YAML files, ``PATRONI_CONFIGURATION`` and ``PATRONI_*`` variables.

Patroni's rules (patroni/config.py; ../shared/spec/patroni-compat.md, section 3):
1. A path given on the command line is a file, or a directory whose ``*.yml``/``*.yaml`` files are merged in
   sorted name order; ``PATRONI_*`` variables then override what the files say.
2. Without a path, ``PATRONI_CONFIGURATION`` holds the whole configuration as YAML text (other variables are
   then ignored); without that either, the configuration is built from ``PATRONI_*`` variables alone.
3. Merging (``patch_config``) is recursive for mappings; a ``null`` value removes the key.
4. Variables: ``PATRONI_NAME|SCOPE|NAMESPACE``, ``PATRONI_<SECTION>_<KEY>`` for restapi, ctl, postgresql and log,
   ``PATRONI_<SUPERUSER|REPLICATION|REWIND>_<USERNAME|PASSWORD|SSL...>``, ``PATRONI_RESTAPI_USERNAME|PASSWORD``
   and ``PATRONI_<DCS>_<HOST|HOSTS|URL|...>`` for every DCS Patroni knows (the unsupported ones then fail
   validation by name). Empty variables are ignored. Lists and mappings are YAML text (``a,b`` means ``[a, b]``).
5. A YAML syntax error is reported with the file name, line and column, never with the offending text (it may be
   a password).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

import yaml

PREFIX = "PATRONI_"
AUTH_PARAMS = ("username", "password", "sslmode", "sslcert", "sslkey", "sslpassword", "sslrootcert", "sslcrl",
               "sslcrldir", "gssencmode", "channel_binding")
DCS_NAMES = ("etcd3", "etcd", "consul", "zookeeper", "exhibitor", "kubernetes", "raft")
_SECTION_ENV = {
    "restapi": ("listen", "connect_address", "certfile", "keyfile", "keyfile_password", "cafile", "ciphers",
                "verify_client", "http_extra_headers", "https_extra_headers", "allowlist",
                "allowlist_include_members", "request_queue_size"),
    "ctl": ("insecure", "cacert", "certfile", "keyfile", "keyfile_password"),
    "postgresql": ("listen", "connect_address", "proxy_address", "config_dir", "data_dir", "pgpass", "bin_dir"),
    "log": ("level", "traceback_level", "format", "dateformat", "max_queue_size", "dir", "file_size", "file_num",
            "loggers"),
}
_DCS_SUFFIXES = frozenset({
    "HOST", "HOSTS", "PORT", "USE_PROXIES", "PROTOCOL", "SRV", "SRV_SUFFIX", "URL", "PROXY", "CACERT", "CERT",
    "KEY", "VERIFY", "TOKEN", "CHECKS", "DC", "CONSISTENCY", "REGISTER_SERVICE", "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME", "SERVICE_TAGS", "NAMESPACE", "CONTEXT", "USE_ENDPOINTS", "SCOPE_LABEL",
    "ROLE_LABEL", "POD_IP", "PORTS", "LABELS", "BYPASS_API_SERVICE", "RETRIABLE_HTTP_CODES", "KEY_PASSWORD",
    "USE_SSL", "SET_ACLS", "LEADER_LABEL_VALUE", "FOLLOWER_LABEL_VALUE", "STANDBY_LEADER_LABEL_VALUE",
    "TMP_ROLE_LABEL", "USERNAME", "PASSWORD", "SELF_ADDR", "PARTNER_ADDRS", "BIND_ADDR", "DATA_DIR",
})
_LIST_VALUES = {("restapi", "allowlist"), ("raft", "partner_addrs")}
_LIST_SUFFIXES = frozenset({"HOSTS", "PORTS", "CHECKS", "SERVICE_TAGS", "RETRIABLE_HTTP_CODES", "PARTNER_ADDRS"})
_DICT_VALUES = {("restapi", "http_extra_headers"), ("restapi", "https_extra_headers"), ("log", "loggers")}


class SourceError(Exception):
    """A file or variable could not be read; ``errors`` are ready-made messages."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def patch_config(config: dict, data: Mapping[str, Any]) -> None:
    """Merge ``data`` into ``config`` in place (Patroni's rule: recursive for mappings, null deletes)."""
    for name, value in data.items():
        if value is None:
            config.pop(name, None)
        elif isinstance(value, Mapping) and isinstance(config.get(name), dict):
            patch_config(config[name], value)
        else:
            config[name] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)


def parse_yaml(text: str, name: str) -> dict:
    """The mapping a YAML document holds ({} when empty); SourceError names ``name``, the line and column."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SourceError([_yaml_message(exc, name)]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SourceError([f"{name}: expected a YAML mapping at the top level, got a {type(data).__name__}"])
    return data


def _yaml_message(exc: yaml.YAMLError, name: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    return f"{name}: invalid YAML{where}: {problem}"


def config_files(path: str) -> list[str]:
    """The file itself, or the directory's ``*.yml``/``*.yaml`` files in sorted order."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith((".yml", ".yaml")))
        return [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    raise SourceError([f"{path}: no such file or directory"])


def load_path(path: str) -> dict:
    """The merged content of every configuration file under ``path``."""
    merged: dict = {}
    errors: list[str] = []
    for fname in config_files(path):
        try:
            with open(fname, encoding="utf-8") as f:
                patch_config(merged, parse_yaml(f.read(), fname))
        except SourceError as exc:
            errors.extend(exc.errors)
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{fname}: cannot be read ({type(exc).__name__})")
    if errors:
        raise SourceError(errors)
    return merged


def environment_config(env: Mapping[str, str]) -> tuple[dict, list[str]]:
    """The configuration ``PATRONI_*`` variables describe, and errors for values that cannot be parsed."""
    ret: dict[str, Any] = {}
    errors: list[str] = []
    for param in ("name", "namespace", "scope"):
        if env.get(PREFIX + param.upper()):
            ret[param] = env[PREFIX + param.upper()]
    _sections(env, ret, errors)
    _auth(env, ret)
    _dcs(env, ret, errors)
    return ret, errors


def _get(env: Mapping[str, str], name: str) -> str | None:
    return env.get(PREFIX + name.upper()) or None


def _sections(env: Mapping[str, str], ret: dict, errors: list[str]) -> None:
    for old, new in (("loglevel", "level"), ("logformat", "format"), ("log_datefmt", "dateformat")):
        if _get(env, old) and not _get(env, "log_" + new):
            env = {**env, PREFIX + "LOG_" + new.upper(): env[PREFIX + old.upper()]}
    for section, params in _SECTION_ENV.items():
        for param in params:
            value = _get(env, f"{section}_{param}")
            if value:
                _put(ret, section, param, _convert(section, param, value, errors))
    for binary in ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind"):
        value = _get(env, "postgresql_bin_" + binary)
        if value:
            ret.setdefault("postgresql", {}).setdefault("bin_name", {})[binary] = value


def _convert(section: str, param: str, value: str, errors: list[str]) -> Any:
    key, var = (section, param), f"{PREFIX}{section.upper()}_{param.upper()}"
    if key in _LIST_VALUES:
        return _yaml_value(value, var, list, errors)
    if key in _DICT_VALUES:
        return _yaml_value(value, var, dict, errors)
    return value  # booleans and integers stay text: the section readers accept "true" and "10"


def _yaml_value(value: str, var: str, kind: type, errors: list[str]) -> Any:
    text = value.strip()
    if kind is list and not (text.startswith("-") or "[" in text):
        text = f"[{text}]"
    elif kind is dict and not text.startswith("{"):
        text = f"{{{text}}}"
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, kind):
        errors.append(f"{var}: expected a YAML {'list' if kind is list else 'mapping'}")
        return None
    return parsed


def _put(ret: dict, section: str, key: str, value: Any) -> None:
    if value is not None:
        ret.setdefault(section, {})[key] = value


def _auth(env: Mapping[str, str], ret: dict) -> None:
    for section in ("ctl", "restapi"):
        auth = {p: _get(env, f"{section}_{p}") for p in AUTH_PARAMS[:2]}
        auth = {k: v for k, v in auth.items() if v}
        if auth:
            ret.setdefault(section, {})["authentication"] = auth
    for role in ("replication", "superuser", "rewind"):
        entry = {p: _get(env, f"{role}_{p}") for p in AUTH_PARAMS}
        entry = {k: v for k, v in entry.items() if v}
        if entry:
            ret.setdefault("postgresql", {}).setdefault("authentication", {})[role] = entry


def _dcs(env: Mapping[str, str], ret: dict, errors: list[str]) -> None:
    for var in sorted(env):
        if not var.startswith(PREFIX) or not env[var]:
            continue
        name, _, suffix = var[len(PREFIX):].partition("_")
        name = name.lower()
        if name == "citus" and suffix in ("GROUP", "DATABASE"):
            _put(ret, "citus", suffix.lower(), env[var])
        elif name in DCS_NAMES and suffix in _DCS_SUFFIXES:
            _put(ret, name, suffix.lower(), _dcs_value(suffix, env[var], var, errors))


def _dcs_value(suffix: str, value: str, var: str, errors: list[str]) -> Any:
    if suffix in _LIST_SUFFIXES:
        return _yaml_value(value, var, list, errors)
    if suffix in ("LABELS", "SET_ACLS"):
        return _yaml_value(value, var, dict, errors)
    return value
