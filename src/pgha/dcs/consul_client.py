"""A thin client for Consul's HTTP API (https://developer.hashicorp.com/consul/api-docs) over requests.

Why not py-consul (1.8.0, maintained): it has one timeout per client (a blocking query adds its wait on top), so it
cannot bound each call by its own deadline, and its ``session.create`` only takes whole-second TTLs >= 10 s and
whole-second lock delays, so it cannot send Patroni's session (``"TTL": "15.0s"``, ``"LockDelay": "0.001s"``).

Rules
1. Every call has a deadline (``Deadline``; default ``DEFAULT_TIMEOUT``): each socket wait gets only the time left,
   a blocking query's ``wait`` is cut so that Consul's jitter (up to wait/16) still ends before the deadline.
2. Failures raise ``DcsError`` (``ConsulError`` when Consul answered an error status) naming the agent address and
   the request (method and path, never the query string's values beyond the key); the ACL token travels only in
   the ``X-Consul-Token`` header and never appears in an exception or a log line.
3. ``dc`` is added to the KV and session calls; ``consistency`` (``consistent`` or ``stale``; ``default`` adds
   nothing) to the reads.
4. One ``requests.Session`` per thread.
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
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from pgha.dcs.etcd3_client import Deadline
from pgha.ports import DcsError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
SERVICE_ROLES = ("primary", "replica", "standby-leader")


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


class ConsulClient:
    """One Consul agent's HTTP API: ``scheme://host:port``, token, TLS, datacenter and read consistency."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8500, scheme: str = "http", token: str | None = None,
                 verify: bool = True, cacert: str | None = None, cert: str | None = None, key: str | None = None,
                 dc: str | None = None, consistency: str = "default", timeout: float = DEFAULT_TIMEOUT):
        self.address = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        self.token, self.dc, self.consistency, self.timeout = token or None, dc or None, consistency, timeout
        self._verify: bool | str = (cacert or True) if verify else False
        self._cert = (cert, key) if cert and key else cert
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"ConsulClient({self.address!r}, dc={self.dc!r})"

    def deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.verify, session.cert, session.trust_env = self._verify, self._cert, False
        return session

    def error(self, what: str) -> DcsError:
        return DcsError(f"Consul {self.address}: {what}")

    def request(self, method: str, path: str, d: Deadline, *, params: Mapping[str, Any] | None = None,
                body: Any = None, raw: str | None = None, read: bool = False, dc: bool = True,
                ok: tuple[int, ...] = (200,)) -> Answer:
        """``method`` ``/v1/<path>``; ``body`` is sent as JSON, ``raw`` as it is. Statuses in ``ok`` are answers,
        others raise ConsulError; no answer within the deadline raises DcsError."""
        query = dict(params or {})
        if dc and self.dc:
            query["dc"] = self.dc
        if read and self.consistency in ("consistent", "stale"):
            query[self.consistency] = ""
        headers = {"X-Consul-Token": self.token} if self.token else {}
        data = raw if raw is not None else (json.dumps(body, separators=(",", ":")) if body is not None else None)
        what = f"{method} /v1/{path}"
        left = d.left()
        if left <= 0:
            raise self.error(f"{what}: no time left")
        url = f"{self.address}/v1/{quote(path, safe='/')}"
        try:
            resp = self._session().request(method, url, params=query, data=data, headers=headers,
                                           timeout=(min(left, CONNECT_TIMEOUT), left))
        except requests.Timeout:
            raise self.error(f"{what}: timed out after {d.seconds:g}s") from None
        except requests.RequestException as e:
            raise self.error(f"{what}: {_short(e)}") from None
        text = resp.text
        try:
            index = int(resp.headers.get("X-Consul-Index") or 0)
        except ValueError:
            index = 0
        if resp.status_code not in ok:
            raise ConsulError(f"Consul {self.address}: {what}: {resp.status_code} {text.strip()[:200]}",
                              resp.status_code, text)
        try:
            value = json.loads(text) if text.strip() else None
        except ValueError:
            value = text
        return Answer(resp.status_code, index, value, text)

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
