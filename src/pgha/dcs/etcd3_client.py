"""A thin client for etcd's v3 JSON gRPC gateway over requests: endpoint failover, deadlines, auth, TLS.

We do not use etcd3gw: it takes a single endpoint and has no username/password auth, both of which we need.

Rules
1. Every call has a deadline (``Deadline``; default ``DEFAULT_TIMEOUT``); every request gets only the time left,
   split across the endpoints still to try: a call never runs past its deadline.
2. Endpoints are tried in order from the last one that answered; connection errors, timeouts and "unavailable"
   answers move on to the next one. The API prefix (/v3, /v3beta, /v3alpha) comes from GET /version.
3. Failures raise ``DcsError`` naming the endpoint and what failed, never a requests exception. The password is
   sent only in the /auth/authenticate body: it never appears in an exception or a log line. An invalid-token
   answer triggers one re-authentication.
4. One ``requests.Session`` per thread (the watch thread streams on its own).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from typing import Any, Callable, Mapping

import requests

from pgha.ports import DcsError

DEFAULT_TIMEOUT = 2.0
_MOVE_ON = {4, 14}  # gRPC DeadlineExceeded, Unavailable: another member may answer


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode("utf-8", "replace")


def prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with ``prefix`` (its last byte plus one)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)  # UTF-8 keeps code point order


def api_prefix(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    v = (int(m.group(1)), int(m.group(2))) if m else (3, 4)
    return "/v3" if v >= (3, 4) else "/v3beta" if v >= (3, 3) else "/v3alpha"


def _short(exc: Exception) -> str:
    """The telling part of a requests error: "[Errno 111] Connection refused", "[SSL: ...] ...", or its type."""
    m = re.search(r"\[(Errno -?\d+|SSL: \w+)\][^'\"(]*", str(exc))
    return m.group(0).strip() if m else type(exc).__name__


class EtcdError(DcsError):
    """etcd answered with an error (code: gRPC status code, status: HTTP status)."""

    def __init__(self, message: str, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code, self.status = code, status


class _Unreachable(Exception):
    """This endpoint did not answer (in time): try the next one."""


class Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class Etcd3Client:
    """The v3 JSON gateway of one etcd cluster: endpoint failover, API prefix, auth token."""

    def __init__(self, hosts: list[tuple[str, int]], protocol: str = "http", username: str | None = None,
                 password: str | None = None, cacert: str | None = None, cert: str | None = None,
                 key: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        if not hosts:
            raise ValueError("etcd: no hosts given")
        self.endpoints = [f"{protocol}://{host}:{port}" for host, port in hosts]
        self.timeout = timeout
        self.auth_count = 0  # successful authentications (tests watch re-authentication)
        self._username, self._password = username, password
        self._verify: str | bool = cacert or True
        self._cert = (cert, key) if cert and key else cert
        self._current = 0
        self._api: str | None = None
        self._token: str | None = None
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Etcd3Client({self.endpoints}, user={self._username!r})"

    def deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:  # one per thread: the watch thread never shares the caller's
            session = self._local.session = requests.Session()
            session.verify, session.cert, session.trust_env = self._verify, self._cert, False
        return session

    def _each_endpoint(self, deadline: Deadline, what: str, fn: Callable[[str, Deadline], Any]) -> Any:
        n, failures = len(self.endpoints), []
        for i in range(n):
            idx, left = (self._current + i) % n, deadline.left()
            if left <= 0:
                break
            try:
                result = fn(self.endpoints[idx], Deadline(left / (n - i)))
            except _Unreachable as e:
                failures.append(f"{self.endpoints[idx]}: {e}")
                continue
            self._current = idx
            return result
        detail = "; ".join(failures) or "no time left"
        raise DcsError(f"etcd {what}: failed on every endpoint within {deadline.seconds:g}s ({detail})")

    def post(self, path: str, body: Mapping[str, Any], deadline: Deadline) -> dict[str, Any]:
        """POST <api prefix><path> to the first endpoint that answers in time; the decoded JSON answer."""
        return self._each_endpoint(deadline, path, lambda base, d: self._post_on(base, path, body, d))

    def _post_on(self, base: str, path: str, body: Mapping[str, Any], d: Deadline) -> dict[str, Any]:
        api = self._api or self._discover(base, d)
        status, data = self._request(base, api + path, body, self._auth_headers(base, d), d)
        if self._username and self.invalid_token(status, data):
            self._token = None
            status, data = self._request(base, api + path, body, self._auth_headers(base, d), d)
        if status == 200 and "error" not in data:
            return data
        msg = str(data.get("message") or data.get("error") or f"HTTP {status}")
        if data.get("code") in _MOVE_ON or (status >= 500 and data.get("code") is None):
            raise _Unreachable(msg)
        raise EtcdError(f"etcd {base}{api}{path}: {msg}", data.get("code"), status)

    def _request(self, base: str, path: str, body: Mapping[str, Any] | None, headers: dict[str, str],
                 d: Deadline) -> tuple[int, dict[str, Any]]:
        left = d.left()
        if left <= 0:
            raise _Unreachable("no time left")
        try:
            if body is None:
                r = self._session().get(base + path, headers=headers, timeout=left)
            else:
                r = self._session().post(base + path, json=body, headers=headers, timeout=left)
            text = r.text
        except requests.Timeout:
            raise _Unreachable(f"{path} timed out after {left:.2g}s") from None
        except requests.RequestException as e:
            raise _Unreachable(f"{path}: {_short(e)}") from None
        except OSError as e:  # requests: unreadable CA bundle or client certificate
            raise _Unreachable(f"{path}: {e}") from None
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"message": f"HTTP {r.status_code}, not JSON: {text[:80]!r}"}
        return r.status_code, data if isinstance(data, dict) else {}

    def _discover(self, base: str, d: Deadline) -> str:
        status, data = self._request(base, "/version", None, {}, d)
        if status != 200:
            raise _Unreachable(f"GET /version answered HTTP {status}")
        cluster = str(data.get("etcdcluster") or "")
        self._api = api_prefix(cluster if re.match(r"\d+\.\d+", cluster) else str(data.get("etcdserver", "")))
        return self._api

    def _auth_headers(self, base: str, d: Deadline) -> dict[str, str]:
        if not self._username:
            return {}
        if self._token is None:
            body = {"name": self._username, "password": self._password or ""}
            status, data = self._request(base, f"{self._api}/auth/authenticate", body, {}, d)
            if status != 200 or not data.get("token"):
                msg = data.get("message") or f"HTTP {status}"
                if data.get("code") in _MOVE_ON:
                    raise _Unreachable(f"authenticate: {msg}")
                raise EtcdError(f"etcd {base}: authentication as {self._username!r} failed: {msg}",
                                data.get("code"), status)
            self._token, self.auth_count = str(data["token"]), self.auth_count + 1
        return {"Authorization": self._token}

    @staticmethod
    def invalid_token(status: int, data: Mapping[str, Any]) -> bool:
        error = data.get("error") if isinstance(data.get("error"), dict) else data
        return status == 401 or error.get("code") == 16 or "invalid auth token" in str(error.get("message"))

    def forget_token(self) -> None:
        self._token = None

    def open_stream(self, path: str, body: Mapping[str, Any], read_timeout: float) -> requests.Response:
        """A streaming POST (the watch) on the first endpoint that accepts it, connected within the timeout."""
        def on(base: str, d: Deadline) -> requests.Response:
            url = base + (self._api or self._discover(base, d)) + path
            headers = self._auth_headers(base, d)
            try:
                r = self._session().post(url, json=body, headers=headers, stream=True,
                                         timeout=(max(d.left(), 0.05), read_timeout))
            except (requests.RequestException, OSError) as e:
                raise _Unreachable(f"{path}: {_short(e)}") from None
            if r.status_code != 200:
                r.close()
                raise _Unreachable(f"{path} answered HTTP {r.status_code}")
            return r
        return self._each_endpoint(self.deadline(None), path, on)
