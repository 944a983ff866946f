"""Reading the ``restapi``, DCS (``etcd3``/``etcd``), ``bootstrap``, ``tags`` and ``watchdog`` sections.

Rules
1. Exactly one DCS section: ``etcd3``, ``etcd`` (Patroni's v2 API section, which pgha serves over the v3 API),
   ``zookeeper`` or ``consul`` (experimental). ``kubernetes``, ``raft`` and ``exhibitor`` are recognised but not
   supported yet: they are errors, since the agent cannot run without its DCS.
2. etcd endpoints come from ``hosts`` (a list, or ``"h1:p1,h2:p2"``), else ``url`` (``http(s)://h:p``, several
   comma-separated), else ``host``; a missing port is 2379 (or the section's ``port``). ``protocol`` wins over a
   URL's scheme; the default is http.
3. ``bootstrap.dcs`` is checked with ``DynamicConfig.from_dict``; its errors carry the ``bootstrap.dcs.`` prefix.
   Only the ``initdb`` bootstrap method is supported: another method is an error (silently running initdb instead
   of a restore would create the wrong cluster).
4. initdb/basebackup options render as Patroni does: ``data-checksums`` -> ``--data-checksums``,
   ``{encoding: UTF8}`` -> ``--encoding=UTF8``; options pgha itself sets (pgdata, ...) are refused.
5. ``restapi.auth: "user:password"`` (the legacy form) is read when ``restapi.authentication`` is absent.
6. ``zookeeper.hosts`` is a list or ``"h1:p1,h2:p2"`` (a missing port is 2181); ``set_acls`` maps an x509 principal
   to permissions (READ, WRITE, CREATE, DELETE, ADMIN, ALL), as in Patroni; ``auth_data`` maps a scheme to a
   credential (or is a list of [scheme, credential] pairs).
7. ``consul``: the agent from ``url`` (``http(s)://host:port``), else ``host`` (``host:port``, default
   127.0.0.1:8500); ``port`` and ``scheme`` given beside ``host`` win, as in Patroni. ``checks`` and ``service_tags``
   are lists of strings (or one comma-separated string); ``service_check_interval`` a duration (``5s``) or seconds.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit

from pgha.config.read import Reader, address_problem, join, split_host_port
from pgha.config.schema import Bootstrap, Consul, Etcd, RestApi, ZooKeeper
from pgha.core.dynamic import DynamicConfig, freeze, parse_bool, parse_int

SUPPORTED_DCS = ("etcd3", "etcd", "zookeeper", "consul")
UNSUPPORTED_DCS = ("kubernetes", "raft", "exhibitor")
CONSUL_DEFAULT_PORT = 8500
ETCD_DEFAULT_PORT = 2379
ZOOKEEPER_DEFAULT_PORT = 2181
ZOOKEEPER_PERMISSIONS = ("READ", "WRITE", "CREATE", "DELETE", "ADMIN", "ALL")
INITDB_FORBIDDEN = frozenset({"pgdata", "nosync", "pwfile", "sync-only", "version"})
BASEBACKUP_FORBIDDEN = frozenset({"pgdata", "format", "wal-method", "xlog-method", "write-recovery-conf",
                                  "version"})
_BOOL_TAGS = ("nofailover", "clonefrom", "noloadbalance", "nosync", "nostream")
_INT_TAGS = ("failover_priority", "sync_priority")
_WATCHDOG_MODES = {"off": "off", "disable": "off", "disabled": "off", "automatic": "automatic",
                   "on": "automatic", "required": "required", "require": "required"}


# --- restapi ---------------------------------------------------------------------------------------------------

def read_restapi(r: Reader, raw: Mapping[str, Any]) -> RestApi | None:
    sec = r.section(raw, "restapi")
    listen = r.address(sec, "listen", "restapi", connect=False)
    connect = r.address(sec, "connect_address", "restapi", connect=True)
    username, password = _restapi_auth(r, sec)
    values = {k: r.string(sec, k, "restapi") for k in ("certfile", "keyfile", "keyfile_password", "cafile")}
    verify = r.choice(sec, "verify_client", "restapi", ("none", "optional", "required"))
    allowlist = r.str_list(sec, "allowlist", "restapi", "a list of hosts or networks (strings)") or ()
    include = bool(r.boolean(sec, "allowlist_include_members", "restapi", False))
    if listen is None or connect is None:
        return None
    return RestApi(listen=sec["listen"].strip(), connect_address=sec["connect_address"].strip(),
                   username=username, password=password, verify_client=verify, allowlist=allowlist,
                   allowlist_include_members=include, **values)


def _restapi_auth(r: Reader, sec: Mapping[str, Any]) -> tuple[str | None, str | None]:
    if sec.get("authentication") is not None:
        auth = r.section(sec, "authentication", "restapi")
        base = "restapi.authentication"
        return r.string(auth, "username", base, required=True), r.string(auth, "password", base, required=True)
    legacy = sec.get("auth")
    if legacy is None:
        return None, None
    if not isinstance(legacy, str) or ":" not in legacy:
        r.error("restapi.auth", "expected username:password")
        return None, None
    username, _, password = legacy.partition(":")
    return username, password


# --- DCS -------------------------------------------------------------------------------------------------------

def read_dcs(r: Reader, raw: Mapping[str, Any]) -> Etcd | ZooKeeper | Consul | None:
    for name in UNSUPPORTED_DCS:
        if name in raw:
            r.error(name, "not supported yet, only etcd3 (and etcd, served over v3), zookeeper and consul")
    present = [name for name in SUPPORTED_DCS if name in raw]
    if len(present) > 1:
        r.error(present[0], f"expected exactly one DCS section, found both {' and '.join(sorted(present))}")
        return None
    if not present:
        if not any(name in raw for name in UNSUPPORTED_DCS):
            r.error("etcd3", "required, expected a DCS section (etcd3, or etcd served over the v3 API)")
        return None
    if present[0] == "zookeeper":
        return read_zookeeper(r, raw)
    if present[0] == "consul":
        return read_consul(r, raw)
    return _read_etcd(r, raw, present[0])


def read_consul(r: Reader, raw: Mapping[str, Any]) -> Consul | None:
    sec = r.section(raw, "consul")
    scheme = r.choice(sec, "scheme", "consul", ("http", "https"))
    host, port = "127.0.0.1", CONSUL_DEFAULT_PORT
    if sec.get("url") is not None:
        parsed = _endpoint(r, sec["url"], "consul.url", CONSUL_DEFAULT_PORT, True)
        if parsed is None:
            return None
        url = urlsplit(str(sec["url"]).strip())
        host, port, scheme = parsed[0], url.port or CONSUL_DEFAULT_PORT, parsed[2]
    elif sec.get("host") is not None:
        parsed = _endpoint(r, sec["host"], "consul.host", CONSUL_DEFAULT_PORT, False)
        if parsed is None:
            return None
        host, port = parsed[0], parsed[1]
        port = r.integer(sec, "port", "consul", default=port, minimum=1)
    else:
        port = r.integer(sec, "port", "consul", default=port, minimum=1)
    if not 1 <= port <= 65535:
        r.error("consul.port", "expected a port in 1..65535", port)
    files = {k: r.string(sec, k, "consul") for k in ("token", "cacert", "cert", "key", "dc",
                                                        "service_check_tls_server_name")}
    consistency = r.choice(sec, "consistency", "consul", ("default", "consistent", "stale"), default="default")
    return Consul(host=host, port=port, scheme=scheme or "http", verify=bool(r.boolean(sec, "verify", "consul", True)),
                  consistency=consistency or "default", checks=_consul_list(r, sec, "checks"),
                  register_service=bool(r.boolean(sec, "register_service", "consul", False)),
                  service_tags=_consul_list(r, sec, "service_tags"),
                  service_check_interval=_consul_interval(r, sec), **files)


def _consul_list(r: Reader, sec: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = sec.get(key)
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return r.str_list(sec, key, "consul", "a list of strings") or ()


def _consul_interval(r: Reader, sec: Mapping[str, Any]) -> str:
    value = sec.get("service_check_interval")
    if value is None:
        return "5s"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return f"{value}s"
    if isinstance(value, str) and re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", value.strip()):
        return value.strip()
    r.error("consul.service_check_interval", "expected a duration such as 5s (or a number of seconds)", value)
    return "5s"


def read_zookeeper(r: Reader, raw: Mapping[str, Any]) -> ZooKeeper | None:
    sec = r.section(raw, "zookeeper")
    value = sec.get("hosts")
    items = value.split(",") if isinstance(value, str) else value
    if value is None:
        r.error("zookeeper.hosts", "required, expected host:port entries (a list or a comma-separated string)")
        return None
    if not isinstance(items, (list, tuple)) or not items:
        r.error("zookeeper.hosts", "expected host:port entries (a list or a comma-separated string)", value)
        return None
    indexed = isinstance(value, (list, tuple)) or len(items) > 1
    hosts = []
    for i, item in enumerate(items):
        parsed = _endpoint(r, item, f"zookeeper.hosts[{i}]" if indexed else "zookeeper.hosts",
                           ZOOKEEPER_DEFAULT_PORT, False)
        if parsed is None:
            return None
        if parsed[2]:
            r.error(f"zookeeper.hosts[{i}]" if indexed else "zookeeper.hosts", "expected host:port", item)
            return None
        hosts.append(parsed[:2])
    files = {k: r.string(sec, k, "zookeeper") for k in ("cacert", "cert", "key", "key_password")}
    use_ssl = bool(r.boolean(sec, "use_ssl", "zookeeper", False))
    verify = bool(r.boolean(sec, "verify", "zookeeper", True))
    return ZooKeeper(hosts=tuple(hosts), use_ssl=use_ssl, verify=verify, set_acls=_zookeeper_acls(r, sec),
                     auth_data=_zookeeper_auth(r, sec), **files)


def _zookeeper_acls(r: Reader, sec: Mapping[str, Any]) -> Mapping[str, tuple[str, ...]]:
    acls = r.section(sec, "set_acls", "zookeeper")
    out = {}
    for principal, perms in acls.items():
        where = f"zookeeper.set_acls.{principal}"
        perms = [perms] if isinstance(perms, str) else perms
        if not isinstance(perms, (list, tuple)) or not all(isinstance(p, str) for p in perms) \
                or not {p.upper() for p in perms} <= set(ZOOKEEPER_PERMISSIONS):
            r.error(where, f"expected a list of permissions ({', '.join(ZOOKEEPER_PERMISSIONS)})", perms)
            continue
        out[str(principal)] = tuple(p.upper() for p in perms)
    return freeze(out)


def _zookeeper_auth(r: Reader, sec: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    value = sec.get("auth_data")
    if value is None:
        return ()
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    if not isinstance(pairs, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
            for p in pairs):
        r.error("zookeeper.auth_data", "expected a mapping of scheme: credential (or [scheme, credential] pairs)")
        return ()
    return tuple((scheme, credential) for scheme, credential in pairs)


def _read_etcd(r: Reader, raw: Mapping[str, Any], name: str) -> Etcd | None:
    sec = r.section(raw, name)
    port = r.integer(sec, "port", name, default=ETCD_DEFAULT_PORT, minimum=1)
    hosts, scheme = _etcd_hosts(r, sec, name, port)
    protocol = r.choice(sec, "protocol", name, ("http", "https"), default=scheme or "http")
    values = {k: r.string(sec, k, name) for k in ("username", "password", "cacert", "cert", "key")}
    if not hosts:
        return None
    return Etcd(hosts=hosts, protocol=protocol or "http", v2_section=(name == "etcd"), **values)


def _etcd_hosts(r: Reader, sec: Mapping[str, Any], name: str, port: int) -> tuple[tuple, str | None]:
    for key in ("hosts", "url", "host"):
        value = sec.get(key)
        if value is None:
            continue
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            r.error(join(name, key), "expected host:port entries (a list or a comma-separated string)", value)
            return (), None
        indexed = isinstance(value, (list, tuple)) or len(items) > 1
        return _endpoints(r, items, join(name, key), port, key == "url", indexed)
    if any(k in sec for k in ("srv", "srv_suffix", "proxy")):
        r.error(name, "expected host, hosts or url (srv and proxy discovery are not supported yet)")
    else:
        r.error(join(name, "hosts"), "required, expected host:port entries (or host, or url)")
    return (), None


def _endpoints(r: Reader, items: Any, path: str, port: int, is_url: bool,
               indexed: bool) -> tuple[tuple, str | None]:
    hosts, schemes = [], set()
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if indexed else path
        parsed = _endpoint(r, item, where, port, is_url)
        if parsed is None:
            return (), None
        hosts.append(parsed[:2])
        if parsed[2]:
            schemes.add(parsed[2])
    return tuple(hosts), (schemes.pop() if len(schemes) == 1 else None)


def _endpoint(r: Reader, item: Any, path: str, port: int, is_url: bool) -> tuple[str, int, str] | None:
    if not isinstance(item, str) or not item.strip():
        r.error(path, "expected host:port", item)
        return None
    text = item.strip()
    if "://" in text or is_url:
        return _url_endpoint(r, text, path)
    try:
        host, number = split_host_port(text, port)
    except ValueError as exc:
        r.error(path, address_problem(exc), item)
        return None
    if not host:
        r.error(path, "expected host:port", item)
        return None
    return host, number, ""


def _url_endpoint(r: Reader, text: str, path: str) -> tuple[str, int, str] | None:
    try:
        parts = urlsplit(text)
        port = parts.port or ETCD_DEFAULT_PORT
    except ValueError:
        parts, port = None, 0
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        r.error(path, "expected http(s)://host:port", text)
        return None
    return parts.hostname, port, parts.scheme


# --- bootstrap -------------------------------------------------------------------------------------------------

def read_bootstrap(r: Reader, raw: Mapping[str, Any]) -> Bootstrap:
    sec = r.section(raw, "bootstrap")
    dcs = _bootstrap_dcs(r, sec)
    method = r.string(sec, "method", "bootstrap", default="initdb") or "initdb"
    if method != "initdb":
        r.error("bootstrap.method", "expected initdb (custom bootstrap methods are not supported yet)", method)
    initdb = render_options(r, sec.get("initdb"), "bootstrap.initdb", INITDB_FORBIDDEN)
    hba = r.str_list(sec, "pg_hba", "bootstrap", "a list of pg_hba.conf lines (strings)") or ()
    post = r.string(sec, "post_bootstrap", "bootstrap") or r.string(sec, "post_init", "bootstrap")
    return Bootstrap(dcs=dcs, initdb=initdb, pg_hba=hba, post_bootstrap=post or None, method="initdb")


def _bootstrap_dcs(r: Reader, sec: Mapping[str, Any]) -> Mapping[str, Any]:
    dcs = r.section(sec, "dcs", "bootstrap")
    _, errors = DynamicConfig.from_dict(dcs)
    r.errors.extend(f"bootstrap.dcs.{e}" for e in errors)
    return freeze(dict(dcs))


def render_options(r: Reader, value: Any, path: str, forbidden: frozenset) -> tuple[str, ...]:
    """Command-line options from Patroni's list (or mapping) form; errors name the offending item."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs = [(f"{path}.{k}", {k: v}) for k, v in value.items() if k and v is not None]
    elif isinstance(value, (list, tuple)):
        pairs = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        r.error(path, "expected a list of options (name, or name: value)", value)
        return ()
    return tuple(o for where, item in pairs if (o := _option(r, item, where, forbidden)))


def _option(r: Reader, item: Any, where: str, forbidden: frozenset) -> str | None:
    if isinstance(item, str) and item.strip():
        name, value = item.strip(), None
    elif isinstance(item, Mapping) and len(item) == 1 and _scalar(next(iter(item.values()))):
        name, value = str(next(iter(item))).strip(), str(next(iter(item.values())))
    else:
        r.error(where, "expected an option name or a one-key mapping name: value", item)
        return None
    if name.lstrip("-") in forbidden:
        r.error(where, f"expected an option other than {name.lstrip('-')} (pgha sets it itself)")
        return None
    flag = "--" + name.lstrip("-")
    return flag if value is None else f"{flag}={value}"


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


# --- tags and watchdog -----------------------------------------------------------------------------------------

def read_tags(r: Reader, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = r.section(raw, "tags")
    for key in _BOOL_TAGS:
        if tags.get(key) is not None and parse_bool(tags[key]) is None:
            r.error(f"tags.{key}", "expected a boolean (true/false)", tags[key])
    for key in _INT_TAGS:
        number = parse_int(tags.get(key)) if tags.get(key) is not None else 0
        if number is None or number < 0:
            r.error(f"tags.{key}", "expected an integer >= 0", tags[key])
    if tags.get("replicatefrom") is not None and not isinstance(tags["replicatefrom"], str):
        r.error("tags.replicatefrom", "expected a member name (string)", tags["replicatefrom"])
    return freeze(dict(tags))


def read_watchdog_mode(r: Reader, raw: Mapping[str, Any]) -> str:
    sec = r.section(raw, "watchdog")
    r.integer(sec, "safety_margin", "watchdog", default=5, minimum=-1)
    mode = sec.get("mode")
    if mode is None:
        return "automatic"
    key = "off" if mode is False else (mode.strip().lower() if isinstance(mode, str) else None)
    if key not in _WATCHDOG_MODES:
        r.error("watchdog.mode", "expected off, automatic or required", mode)
        return "automatic"
    return _WATCHDOG_MODES[key]
