"""The REST API server: Patroni 4.1's HTTP interface (spec section 2), read side.

Theory of operation
-------------------
A ``ThreadingHTTPServer`` speaks HTTP/1.0 like Patroni's ``BaseHTTPRequestHandler`` (one request per connection,
closed after the reply), each request in a daemon thread. Answers come from the last status the agent published
(``StatusSource``, status.py); no request waits for the agent, PostgreSQL or the DCS.

Rules
1. Routing as Patroni: the query string is split off, then ``<METHOD> /<first segment>`` goes to
   ``do_<METHOD>_<segment>`` when the handler has one, else to ``do_<METHOD>``; a method with neither is answered
   501 by the standard library (``Unsupported method``). A write endpoint is one method on a ``Handler`` subclass
   (``@requires_access def do_POST_restart(self)``), passed as ``ApiServer(..., handler=...)``.
2. Every unrouted GET is a health check: the ``/patroni`` JSON with the code of health.py. HEAD and OPTIONS (any
   path, ``/patroni`` included: Patroni's quirk) get the same decision as the status line alone,
   ``HTTP/1.0 <code> <reason>\\r\\n\\r\\n``, no headers: HAProxy's ``option httpchk`` reads exactly that.
3. ``GET /patroni`` 200; ``/cluster`` and ``/history`` from the agent's last DCS snapshot (503 before the first);
   ``/config`` 502 when the DCS holds none; ``/failsafe`` 502 (pgha has no failsafe mode); ``/liveness`` and
   ``/readiness`` status line only; ``/metrics`` Prometheus text.
4. TLS when ``certfile`` is set: ``cafile`` verifies client certificates per ``verify_client`` (none, optional,
   required). The handshake runs in the request's thread, bounded by ``Handler.timeout``.
5. GET/HEAD/OPTIONS never need credentials. ``check_access()`` (for write endpoints) applies Patroni's order:
   allowlist (+ member API hosts) → 403 ``Access is denied``; no client certificate while ``verify_client`` is
   optional/required → 403; Basic auth mismatch → 401 with ``WWW-Authenticate: Basic realm="Patroni"``.
6. ``start()`` binds and returns; ``stop()`` returns within about a second (the serve loop polls every 0.2 s).
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from pgha.api.health import health_code, liveness_code, readiness_code
from pgha.api.status import StatusSource, cluster_json, identity, metrics_text, public_status
from pgha.config.schema import RestApi

log = logging.getLogger("pgha.api")

MAX_BODY = 1 << 20  # request bodies larger than this are refused (400)
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def requires_access(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for write endpoints: run ``func`` only when ``check_access()`` lets the request through."""

    @functools.wraps(func)
    def wrapper(self: "Handler", *args: Any, **kwargs: Any) -> Any:
        if self.check_access():
            return func(self, *args, **kwargs)
        return None

    return wrapper


class Handler(BaseHTTPRequestHandler):
    """The read endpoints. Subclass it to add write endpoints (rule 1)."""

    server: "_HttpServer"
    timeout = 30  # seconds a client may take to send its request (or finish the TLS handshake)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        url = urlsplit(self.path)
        self.path = url.path
        self.query: dict[str, list[str]] = parse_qs(url.query)
        segment = self.path.lstrip("/").split("/")[0]
        routed = f"{self.command}_{segment}" if segment else self.command
        if hasattr(self, "do_" + routed):
            self.command = routed
        return True

    # --- writing ---------------------------------------------------------------------------------------------

    def write_response(self, code: int, body: str, content_type: str = "text/html",
                       headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body.encode("utf-8"))

    def write_json(self, code: int, value: Any) -> None:
        self.write_response(code, json.dumps(value, default=str), content_type="application/json")

    def write_status_line(self, code: int) -> None:
        """Rule 2: the status line and nothing else."""
        self.wfile.write(f"{self.protocol_version} {code} {self.responses[code][0]}\r\n\r\n".encode("utf-8"))
        self.log_request(code)

    # --- reading ---------------------------------------------------------------------------------------------

    def status(self) -> Any:
        return self.server.api.source.status()

    def read_json(self, optional: bool = False) -> dict[str, Any] | None:
        """The JSON object in the body, as Patroni reads it: no Content-Length → 411 (or {} when optional); empty,
        not an object, or unreadable → 400. None means an error was already sent."""
        if "content-length" not in self.headers:
            if optional:
                return {}
            self.send_error(411)
            return None
        try:
            length = int(self.headers.get("content-length") or 0)
            if length == 0 and optional:
                return {}
            if 0 <= length <= MAX_BODY:
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                if isinstance(body, dict) and (body or optional):
                    return body
        except (ValueError, UnicodeDecodeError):
            log.debug("bad request body from %s", self.client_address[0])
        self.send_error(400)
        return None

    def check_access(self, check_members: bool = True) -> bool:
        """Rule 5. False means the refusal was already sent."""
        api = self.server.api
        if not api.client_allowed(self.client_address[0], check_members):
            self.write_response(403, "Access is denied")
            return False
        if api.tls and api.cfg.verify_client in ("required", "optional") and not _peer_cert(self.request):
            self.write_response(403, "client certificate required")
            return False
        problem = api.auth_problem(self.headers.get("Authorization"))
        if problem:
            self.write_response(401, problem, headers={"WWW-Authenticate": 'Basic realm="Patroni"'})
            return False
        return True

    # --- health checks (rule 2) ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        status = self.status()
        self.write_json(health_code(self.path, self.query, status, time.time()), public_status(status))

    def do_HEAD(self) -> None:
        self.write_status_line(health_code(self.path, self.query, self.status(), time.time()))

    do_OPTIONS = do_HEAD

    # --- read endpoints (rule 3) -----------------------------------------------------------------------------

    def do_GET_patroni(self) -> None:
        self.write_json(200, public_status(self.status()))

    def do_GET_liveness(self) -> None:
        self.write_status_line(liveness_code(self.status(), time.time()))

    def do_GET_readiness(self) -> None:
        self.write_status_line(readiness_code(self.status(), self.query, time.time()))

    def do_GET_cluster(self) -> None:
        view = self.server.api.source.cluster()
        if view is None:
            self.send_error(503)
            return
        self.write_json(200, cluster_json(view, self.server.api.identity()[0]))

    def do_GET_history(self) -> None:
        view = self.server.api.source.cluster()
        if view is None:
            self.send_error(503)
            return
        self.write_json(200, [list(line) for line in view.history])

    def do_GET_config(self) -> None:
        view = self.server.api.source.cluster()
        if view is None:
            self.send_error(503)
        elif view.config is None:
            self.send_error(502)
        else:
            self.write_json(200, view.config)

    def do_GET_failsafe(self) -> None:
        self.send_error(502)

    def do_GET_metrics(self) -> None:
        status = self.status()
        scope, name = self.server.api.identity()
        self.write_response(200, metrics_text(status, scope, name), content_type="text/plain")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        log.debug("API thread: %s - - %s", self.client_address[0], format % args)


def _peer_cert(request: Any) -> Any:
    return request.getpeercert() if isinstance(request, ssl.SSLSocket) else None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: int, api: "ApiServer", handler: type[Handler]) -> None:
        self.address_family = family
        self.api = api
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # one wildcard socket for IPv4 and IPv6, as Patroni's
            try:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        super().server_bind()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(Handler.timeout)
                request.do_handshake()
            except (OSError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %r", client_address[0], exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.unwrap()
            except (OSError, ValueError):
                pass
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("REST API: error while answering %s", client_address[0], exc_info=True)


def split_listen(listen: str) -> tuple[str | None, int]:
    """``host:port`` (``[v6]:port``; empty host or ``*``: every interface) → (host or None, port)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.strip().isdecimal():
        raise ValueError(f'restapi.listen: expected <HOST>:<PORT>, got "{listen}"')
    host = host.strip().strip("[]")
    return (None if host in ("", "*") else host), int(port)


def _bind_address(listen: str) -> tuple[int, tuple[str, int]]:
    host, port = split_listen(listen)
    infos = [(fam, sa[0], sa[1]) for fam, _, _, _, sa in
             socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
             if isinstance(sa[0], str) and fam in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise OSError(f"restapi.listen: {listen} resolves to no address")
    # IPv6 first where one socket serves both families, IPv4 first otherwise (Patroni's preference)
    infos.sort(key=lambda info: info[0] == socket.AF_INET, reverse=not socket.has_dualstack_ipv6())
    family, addr, port = infos[0]
    return family, (addr, port)


def _resolve(host: str, port: int) -> Iterator[Network]:
    try:
        for *_, sa in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP):
            yield ipaddress.ip_network(sa[0], False)
    except (OSError, ValueError) as exc:
        log.error("REST API allowlist: cannot resolve %s: %r", host, exc)


def _allowlist(entries: tuple[str, ...]) -> tuple[Network, ...]:
    out: list[Network] = []
    for entry in entries:
        if "/" in entry:
            try:
                out.append(ipaddress.ip_network(entry, False))
            except ValueError as exc:
                log.error('REST API allowlist: invalid value "%s": %r', entry, exc)
        else:
            out.extend(_resolve(entry, 8080))
    return tuple(out)


def _ssl_context(cfg: RestApi) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cfg.cafile or None)
    ctx.load_cert_chain(certfile=cfg.certfile or "", keyfile=cfg.keyfile or None, password=cfg.keyfile_password)
    if cfg.verify_client in _VERIFY:
        ctx.verify_mode = _VERIFY[cfg.verify_client]
    return ctx


class ApiServer:
    """``ApiServer(cfg.restapi, source)``; ``start()``, ``stop()``. ``scope``/``name`` are used only until the
    first published status carries its ``patroni`` block."""

    def __init__(self, cfg: RestApi, source: StatusSource, *, scope: str = "", name: str = "",
                 handler: type[Handler] = Handler, control: Any = None) -> None:
        self.cfg, self.source, self._handler = cfg, source, handler
        self.control = control  # writes.Control for the write endpoints (None: read-only API)
        self._scope, self._name = scope, name
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._allowlist: tuple[Network, ...] = ()
        user = f"{cfg.username}:{cfg.password}" if cfg.username is not None and cfg.password is not None else None
        self._auth_key = base64.b64encode(user.encode("utf-8")) if user is not None else None

    @property
    def tls(self) -> bool:
        return bool(self.cfg.certfile)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when ``listen`` asked for port 0."""
        if self._server is None:
            raise RuntimeError("the REST API server is not started")
        return self._server.server_address[0], self._server.server_address[1]

    @property
    def port(self) -> int:
        return self.address[1]

    def identity(self) -> tuple[str, str]:
        return identity(self.source.status(), self._scope, self._name)

    def start(self) -> None:
        """Bind, wrap in TLS when configured, serve in a daemon thread. Raises OSError/ssl.SSLError/ValueError."""
        if self._server is not None:
            return
        family, address = _bind_address(self.cfg.listen)
        context = _ssl_context(self.cfg) if self.tls else None
        server = _HttpServer(address, family, self, self._handler)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._allowlist = _allowlist(self.cfg.allowlist)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="pgha-restapi", daemon=True)
        self._thread.start()
        log.info("REST API listening on %s://%s:%s", self.scheme, *self.address[:2])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting and close the socket; requests in flight finish in their daemon threads."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None and thread.is_alive():
            server.shutdown()  # returns once serve_forever's next poll (≤ 0.2 s) sees the request
            thread.join(timeout)
        server.server_close()

    def __enter__(self) -> "ApiServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- access checks (rule 5) ------------------------------------------------------------------------------

    def _member_networks(self) -> Iterator[Network]:
        view = self.source.cluster()
        for member in view.members if view is not None else ():
            try:
                url = urlsplit(member.api_url)
                if url.hostname:
                    yield from _resolve(url.hostname, url.port or (443 if url.scheme == "https" else 80))
            except ValueError:
                log.debug("REST API allowlist: bad api_url %r", member.api_url)

    def client_allowed(self, client_ip: str, check_members: bool = True) -> bool:
        with_members = check_members and self.cfg.allowlist_include_members
        if not self._allowlist and not with_members:
            return True
        ip = ipaddress.ip_address(client_ip.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        networks = self._allowlist + (tuple(self._member_networks()) if with_members else ())
        return any(ip in net for net in networks)

    def auth_problem(self, header: str | None) -> str | None:
        """None when Basic auth is not configured or the header matches; else Patroni's reason text."""
        if self._auth_key is None:
            return None
        if header is None:
            return "no auth header received"
        if not header.startswith("Basic ") or not hmac.compare_digest(self._auth_key, header[6:].encode("utf-8")):
            return "not authenticated"
        return None
