"""Consul's HTTP API (https://developer.hashicorp.com/consul/api-docs) through py-consul, as Patroni uses it.

``ConsulClient`` is py-consul's ``consul.base.Consul``: every call is one of its API objects (``kv.get/put/delete``,
``session.create/renew/destroy/info``, ``agent.self``, ``agent.service.register/deregister``), which build the path,
the query (``dc``, ``consistent``/``stale``, ``index``/``wait``, ``cas``, ``acquire``, ``recurse``) and the body.
``request`` maps consul.py's calls (method, ``/v1/`` path) onto them. As in Patroni, ``http_connect`` plugs in an
``HTTPClient`` of ours, which adds what py-consul's requests client lacks:
- a deadline per call: py-consul's has one timeout per client, and a blocking query adds its wait on top;
- Patroni's session: py-consul's ``session.create`` takes only whole-second TTLs >= 10 s and lock delays, so the
  HTTPClient writes ``TTL`` and ``LockDelay`` (``"15.0s"``, ``"0.001s"``) into its body, under Consul's field names;
- the raw answer: each call returns an ``Answer`` (status, X-Consul-Index, JSON) and py-consul's result callback is
  not run, since consul.py needs the status (404: absent, session gone), the index and the entries as sent.
Other bodies are py-consul's as Patroni sends them (the service registration: lower-case fields, ``checks``).

Rules
1. Every call has a deadline (``Deadline``; default ``DEFAULT_TIMEOUT``): each socket wait gets only the time left,
   a blocking query's ``wait`` is cut so that Consul's jitter (up to wait/16) still ends before the deadline.
2. Failures raise ``DcsError`` (``ConsulError`` when Consul answered a status the caller did not accept) naming the
   agent address and the request (method and path, never the query string); the ACL token travels only in the
   ``X-Consul-Token`` header and never appears in an exception or a log line (``CONSUL_HTTP_TOKEN`` is not read).
3. ``dc`` goes on the KV and session calls (py-consul; agent calls take none); ``consistency`` (``consistent`` or
   ``stale``; ``default`` adds nothing) on the reads (``read=True``).
4. One ``requests.Session`` per thread; the call in progress (deadline, accepted statuses) is per thread too.
5. ``registration`` builds Patroni's service registration (patroni-compat.md, section 1): name from the scope
   (``service_name``), id ``<scope>/<name>``, address and port from ``conn_url``, tags ``service_tags`` + the role
   (+ ``master`` on the primary), tag override on, an HTTP check on ``api_url`` with the path ``/<role>``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import requests
from consul import base

from pgha.dcs.etcd3_client import Deadline
from pgha.ports import DcsError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
DEFAULT_WAIT = 300.0  # a blocking query without wait: Consul's 5 minutes
SERVICE_ROLES = ("primary", "replica", "standby-leader")
SESSION_FIELDS = {k.lower(): k for k in ("Name", "Node", "Checks", "LockDelay", "Behavior", "TTL")}


class ConsulError(DcsError):
    """Consul answered with an error status (``status``); ``body`` is its text (Consul's error message)."""

    def __init__(self, message: str, status: int, body: str):
        super().__init__(message)
        self.status, self.body = status, body


class Answer:
    """One HTTP answer: status, the X-Consul-Index header (0 when absent) and the decoded JSON body (or text)."""

    def __init__(self, status: int, index: int, data: Any, text: str):
        self.status, self.index, self.data, self.text = status, index, data, text

    def __repr__(self) -> str:
        return f"Answer({self.status}, index={self.index}, {self.text[:80]!r})"


def _short(exc: Exception) -> str:
    m = re.search(r"\[(Errno -?\d+|SSL: \w+)\][^'\"(]*", str(exc))
    return m.group(0).strip() if m else type(exc).__name__


def go_duration(seconds: float) -> str:
    """A Go duration Consul parses, in milliseconds, never 0 (``wait=0`` would mean Consul's 5 minutes)."""
    return f"{max(1, int(seconds * 1000))}ms"


class HTTPClient(base.HTTPClient):
    """py-consul's transport: requests, bounded by the deadline of the call in progress (``call``)."""

    def __init__(self, address: str, token: str | None, timeout: float, verify: bool | str, cert: Any):
        super().__init__(verify=verify, cert=cert)
        self.base_uri, self.token, self.timeout = address, token, timeout
        self.local = threading.local()

    def call(self, d: Deadline | None, ok: tuple[int, ...] = (200,), session: Mapping[str, Any] | None = None):
        """Set this thread's call: its deadline, the statuses that are answers, the session fields to write."""
        self.local.call = (d, ok, session or {}) if d is not None else None

    def _session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.trust_env = False
        return session

    def _send(self, method: str, path: str, params: Any, data: str | bytes | None, headers: Any) -> Answer:
        d, ok, session = getattr(self.local, "call", None) or (Deadline(self.timeout), (200,), {})
        what, query, left = f"{method} {path}", list(params or ()), d.left()
        if left <= 0:
            raise DcsError(f"Consul {self.base_uri}: {what}: no time left")
        if method == "GET" and any(k == "index" for k, _ in query):  # Consul answers by wait + wait/16
            limit = max(0.001, left - 0.02) * 16 / 17
            wait = next((seconds(v) for k, v in query if k == "wait"), None) or DEFAULT_WAIT
            if wait > limit:
                query = [(k, v) for k, v in query if k != "wait"] + [("wait", go_duration(limit))]
        if method == "PUT" and path == "/v1/session/create":
            body = {SESSION_FIELDS.get(k.lower(), k): v for k, v in json.loads(data or "{}").items()}
            data = json.dumps({**body, **session}, separators=(",", ":"))
        headers = dict(headers or {})
        if self.token and not headers.get("X-Consul-Token"):
            headers["X-Consul-Token"] = self.token
        try:
            resp = self._session().request(method, self.uri(path, query), headers=headers, verify=self.verify,
                                           data=data.encode() if isinstance(data, str) else data, cert=self.cert,
                                           timeout=(min(left, CONNECT_TIMEOUT), left))
        except requests.Timeout:
            raise DcsError(f"Consul {self.base_uri}: {what}: timed out after {d.seconds:g}s") from None
        except requests.RequestException as e:
            raise DcsError(f"Consul {self.base_uri}: {what}: {_short(e)}") from None
        resp.encoding = "utf-8"
        text = resp.text
        if resp.status_code not in ok:
            raise ConsulError(f"Consul {self.base_uri}: {what}: {resp.status_code} {text.strip()[:200]}",
                              resp.status_code, text)
        index = resp.headers.get("X-Consul-Index", "")
        try:
            value = json.loads(text) if text.strip() else None
        except ValueError:
            value = text
        return Answer(resp.status_code, int(index) if index.isdigit() else 0, value, text)

    def get(self, callback, path, params=None, headers=None, raw=False):
        return self._send("GET", path, params, None, headers)

    def put(self, callback, path, params=None, data="", headers=None):
        return self._send("PUT", path, params, data, headers)

    def delete(self, callback, path, params=None, data="", headers=None):
        return self._send("DELETE", path, params, data, headers)

    def post(self, callback, path, params=None, data="", headers=None):
        return self._send("POST", path, params, data, headers)

    def close(self) -> None:
        session, self.local.session = getattr(self.local, "session", None), None
        if session is not None:
            session.close()


class ConsulClient(base.Consul):
    """One Consul agent: ``scheme://host:port``, token, TLS, datacenter and read consistency."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8500, scheme: str = "http", token: str | None = None,
                 verify: bool = True, cacert: str | None = None, cert: str | None = None, key: str | None = None,
                 dc: str | None = None, consistency: str = "default", timeout: float = DEFAULT_TIMEOUT):
        self.address = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        self.timeout, self._token = timeout, token or None
        super().__init__(host, port, token=self._token, scheme=scheme, consistency=consistency, dc=dc or None,
                         verify=(cacert or True) if verify else False, cert=(cert, key) if cert and key else cert)
        self.token = self._token  # base.Consul prefers CONSUL_HTTP_TOKEN from the environment

    def http_connect(self, host: str, port: int, scheme, verify: bool | str = True, cert=None) -> HTTPClient:
        return HTTPClient(self.address, self._token, self.timeout, verify, cert)

    def __repr__(self) -> str:
        return f"ConsulClient({self.address!r}, dc={self.dc!r})"

    def deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def error(self, what: str) -> DcsError:
        return DcsError(f"Consul {self.address}: {what}")

    def request(self, method: str, path: str, d: Deadline, *, params: Mapping[str, Any] | None = None,
                body: Any = None, raw: str | None = None, read: bool = False, dc: bool = True,
                ok: tuple[int, ...] = (200,)) -> Answer:
        """``method`` ``/v1/<path>`` through py-consul's API object for it; ``body`` is JSON, ``raw`` a KV value.
        Statuses in ``ok`` are answers, others raise ConsulError; no answer within the deadline raises DcsError.
        ``dc``: the KV and session calls always name the client's datacenter, the agent calls never do."""
        p, consistency, body = dict(params or {}), self.consistency if read else "default", body or {}
        if set(p) - {"index", "wait", "recurse", "cas", "acquire", "release"}:
            raise ValueError(f"consul: {method} {path}: unsupported parameters in {sorted(p)}")
        call, sid = (method, path), path.rpartition("/")[2]  # sid: the id ending session/<action>/<id>
        fields = {k: body[k] for k in ("TTL", "LockDelay") if k in body} if path == "session/create" else None
        self.http.call(d, ok, fields)
        try:
            if path.startswith("kv/") and method == "GET":
                return self.kv.get(path[3:], index=p.get("index"), wait=p.get("wait"), recurse=bool(p.get("recurse")),
                                   consistency=consistency)
            if path.startswith("kv/") and method == "PUT":
                return self.kv.put(path[3:], raw if raw is not None else (json.dumps(body) if body else None),
                                   cas=p.get("cas"), acquire=p.get("acquire"), release=p.get("release"))
            if path.startswith("kv/") and method == "DELETE":
                return self.kv.delete(path[3:], recurse=bool(p.get("recurse")), cas=p.get("cas"))
            if call == ("PUT", "session/create"):
                return self.session.create(name=body.get("Name"), node=body.get("Node"), checks=body.get("Checks"),
                                           behavior=body.get("Behavior", "release"))
            if call == ("PUT", f"session/renew/{sid}"):
                return self.session.renew(sid)
            if call == ("PUT", f"session/destroy/{sid}"):
                return self.session.destroy(sid)
            if call == ("GET", f"session/info/{sid}"):
                return self.session.info(sid, consistency=consistency)
            if call == ("GET", "agent/self"):
                return self.agent.self()
            if call == ("PUT", "agent/service/register"):
                return self.agent.service.register(
                    body["Name"], service_id=body.get("ID"), address=body.get("Address"), port=body.get("Port"),
                    tags=body.get("Tags"), check=body.get("Check"),
                    enable_tag_override=bool(body.get("EnableTagOverride")))
            if method == "PUT" and path.startswith("agent/service/deregister/"):
                return self.agent.service.deregister(path[len("agent/service/deregister/"):])
            raise ValueError(f"consul: {method} /v1/{path} is not a call this client makes")
        finally:
            self.http.call(None)

    def session_ttl_min(self, d: Deadline, default: float) -> float:
        """The agent's SessionTTLMin (``Config``, older agents, in ns; ``DebugConfig``, newer, a duration)."""
        try:
            data = self.request("GET", "agent/self", d, dc=False).data or {}
        except DcsError as e:
            log.warning("consul: could not read the agent's SessionTTLMin: %s", e)
            return default
        for section in ("Config", "DebugConfig"):
            value = seconds((data.get(section) or {}).get("SessionTTLMin")) if isinstance(data, dict) else None
            if value:
                return value
        return default


def seconds(duration: Any) -> float | None:
    """A Go duration ("15s", "1m0s", "10.5s") or nanoseconds (int) -> seconds; None when unreadable."""
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return duration / 1e9
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", str(duration or ""))
    return sum(float(n) * units[u] for n, u in parts) if parts else None


def service_name(scope: str) -> str:
    """Patroni's service name for a scope: lower case, ``.``/space/``_`` -> ``-``, other -> ``uNNNN``, <= 230."""
    def replace(m: re.Match) -> str:
        return "-" if m.group(0) in ". _" else f"u{ord(m.group(0)):04d}"
    return re.sub(r"[^a-z0-9\-]", replace, scope.lower())[:230]


def registration(data: Mapping[str, Any], scope: str, name: str, tags: list[str], interval: str,
                 deregister_after: str, tls_server_name: str | None) -> dict[str, Any] | None:
    """The body of ``PUT /v1/agent/service/register`` for member ``data``; None for a role not registered."""
    role = str(data.get("role") or "").replace("_", "-")
    conn, api = urlsplit(str(data.get("conn_url") or "")), urlsplit(str(data.get("api_url") or ""))
    if role not in SERVICE_ROLES or not conn.hostname or not api.netloc:
        return None
    check: dict[str, Any] = {"HTTP": urlunsplit((api.scheme, api.netloc, f"/{role}", "", "")),
                             "Interval": interval, "DeregisterCriticalServiceAfter": deregister_after}
    if tls_server_name is not None:
        check["TLSServerName"] = tls_server_name
    return {"ID": f"{scope}/{name}", "Name": service_name(scope),
            "Tags": [*tags, role] + (["master"] if role == "primary" else []),
            "Address": conn.hostname, "Port": conn.port, "EnableTagOverride": True, "Check": check}
