"""etcd v2's keys API, read-only, answered from etcd v3 keys: ``pgha etcd-v2-view``, for vip-manager 1.x.

vip-manager 1.0.2 (Debian 12's package) reads its trigger key with etcd's v2 client only, while pgha (like
Patroni's etcd3 backend) writes v3 keys, and etcd 3.4 keeps v2 and v3 keys in separate stores: 1.0.2 never sees the
leader key. This view sits beside it (127.0.0.1) and answers ``GET /v2/keys/<key>`` as etcd v2 would, from the v3
key of the same name, so vip-manager 1.x works with pgha unchanged (issue #8; docs/pgbouncer.md, "A virtual IP").

A hand-written HTTP server (http.server) is fine here: it is a read-only subset of a few lines of protocol (one
GET, its JSON and its errors) that no library offers.

Rules
1. Read-only. ``GET`` and ``HEAD`` of ``/v2/keys/<key>`` only: 200 ``{"action":"get","node":{"key","value",
   "modifiedIndex","createdIndex"}}`` (the v3 key's mod_revision and create_revision) or 404 errorCode 100 "Key not
   found", both with ``X-Etcd-Index`` (the v3 revision of the answer). Another method on ``/v2/keys`` is 405
   "Method Not Allowed" (``Allow: GET, HEAD``); another path is 404 "404 page not found", as etcd answers them.
2. The key is cleaned as etcd v2 does (``path.Clean("/" + key)``: no empty, ``.`` or ``..`` parts). Directories are
   not emulated: a name with no v3 key of its own is "Key not found", even when keys exist below it. No ``ttl`` or
   ``expiration`` in the node (a v3 key's lease is not read).
3. ``?wait=true`` (v2's long-poll watch) is refused with 400 errorCode 209 "Invalid field": vip-manager 1.x polls
   (``--interval``) and never asks for it. Other query parameters (``quorum``, ``recursive``, ``sorted``) are
   accepted and ignored: every read is a linearizable v3 range (what ``quorum=true`` asks for).
4. Every read is one v3 range through ``Etcd3Client`` (etcd3_client.py): a deadline on every call, failover across
   the endpoints, TLS and username/password as pgha's etcd backend has them. When etcd does not answer (in time),
   the view answers 503 errorCode 300 with the client's message as cause: it names endpoints and what failed, and
   never holds a password (the client's rule 3).
5. One request at a time (HTTP/1.0, one request per connection): each costs one etcd call within its deadline; a
   client gets ``timeout`` seconds to send its request before its connection is dropped.
6. Logging: the first etcd failure, a changed one, and the recovery (not every failed poll); with ``log_requests``
   every request line and its status.
"""

from __future__ import annotations

import json
import logging
import posixpath
import socket
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Mapping

from pgha.dcs.etcd3_client import Etcd3Client, b64, unb64
from pgha.ports import DcsError

log = logging.getLogger(__name__)

KEYS_PREFIX = "/v2/keys"
JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def clean_key(raw: str) -> str:
    """``path.Clean("/" + raw)`` of Go (etcd v2's key normalisation): "/a//b/./c/../d/" -> "/a/b/d"."""
    cleaned = posixpath.normpath("/" + raw)
    return "/" + cleaned.lstrip("/")  # normpath keeps a leading "//"


def _json_reply(status: int, body: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> Reply:
    headers = [("Content-Type", JSON)]
    if header is not None:  # the v3 response header: etcd v2's index headers from it
        headers.append(("X-Etcd-Index", str(int(header.get("revision", 0)))))
        if header.get("cluster_id"):
            headers.append(("X-Etcd-Cluster-Id", format(int(header["cluster_id"]), "x")))
        if header.get("raft_term"):
            headers.append(("X-Raft-Term", str(int(header["raft_term"]))))
    return Reply(status, tuple(headers), json.dumps(body, separators=(",", ":")).encode() + b"\n")


def _text_reply(status: int, text: str, extra: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
                          *extra), text.encode() + b"\n")


def node_reply(key: str, data: Mapping[str, Any]) -> Reply:
    """etcd v2's answer for ``key``, from the v3 range response ``data`` (etcd's JSON gateway: numbers as strings,
    bytes as base64, empty fields left out)."""
    header = data.get("header") or {}
    kvs = data.get("kvs") or []
    if not kvs:
        return _json_reply(404, {"errorCode": 100, "message": "Key not found", "cause": key,
                                 "index": int(header.get("revision", 0))}, header)
    kv = kvs[0]
    node = {"key": key, "value": unb64(kv.get("value")), "modifiedIndex": int(kv.get("mod_revision", 0)),
            "createdIndex": int(kv.get("create_revision", 0))}
    return _json_reply(200, {"action": "get", "node": node}, header)


def unavailable(cause: str) -> Reply:
    return _json_reply(503, {"errorCode": 300, "message": "Raft Internal Error", "cause": cause})


def respond(method: str, target: str, read: Callable[[str], Mapping[str, Any]]) -> Reply:
    """The reply to ``method target`` (the request line's path and query); ``read(key)`` is the v3 range response
    for ``key`` and raises ``DcsError`` when etcd does not answer."""
    split = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(split.path)
    if path != KEYS_PREFIX and not path.startswith(KEYS_PREFIX + "/"):
        return _text_reply(404, "404 page not found")
    if method not in ("GET", "HEAD"):
        return _text_reply(405, "Method Not Allowed", (("Allow", "GET, HEAD"),))
    query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
    if any(v.lower() in ("true", "1") for v in query.get("wait", [])):
        return _json_reply(400, {"errorCode": 209, "message": "Invalid field",
                                 "cause": "wait: not served by this read-only view (poll instead)"})
    key = clean_key(path[len(KEYS_PREFIX):])
    try:
        return node_reply(key, read(key))
    except DcsError as e:
        return unavailable(str(e))
    except (ValueError, TypeError, AttributeError) as e:  # not the range response etcd's gateway gives
        return unavailable(f"etcd's range response for {key} was not understood ({type(e).__name__})")


def etcd_reader(client: Etcd3Client) -> Callable[[str], Mapping[str, Any]]:
    """``read(key)``: the v3 range response for exactly ``key`` (linearizable), within the client's deadline."""
    def read(key: str) -> Mapping[str, Any]:
        return client.post("/kv/range", {"key": b64(key)}, client.deadline(None))
    return read


class _Server(HTTPServer):
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, view: "EtcdV2View") -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.view = view
        super().__init__(address, handler)

    def server_bind(self) -> None:  # HTTPServer's would look the host's FQDN up in DNS: not needed, may hang
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection (rule 5)
    server_version = "pgha-etcd-v2-view"

    def setup(self) -> None:
        self.timeout = self.server.view.timeout  # StreamRequestHandler applies it to the client's socket
        super().setup()

    def _serve(self) -> None:
        view = self.server.view
        reply = respond(self.command, self.path, view.read_logged)
        view.requests += 1
        if view.log_requests:
            log.info("%s %s %s -> %d", self.client_address[0], self.command, self.path, reply.status)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


class EtcdV2View:
    """The view on ``host:port`` (port 0: any free one), reading through ``read`` (see ``etcd_reader``): the socket
    is bound at once (an ``OSError`` if it cannot be); ``start()`` serves on a thread of its own, ``stop()`` ends
    it and closes the socket."""

    def __init__(self, read: Callable[[str], Mapping[str, Any]], host: str, port: int, *, timeout: float = 5.0,
                 log_requests: bool = False) -> None:
        self.read, self.timeout, self.log_requests = read, timeout, log_requests
        self.requests = 0
        self._failing: str | None = None
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[0], self._server.server_address[1]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def read_logged(self, key: str) -> Mapping[str, Any]:
        """``read``, logging the first failure, a changed one and the recovery (rule 6)."""
        try:
            data = self.read(key)
        except DcsError as e:
            if str(e) != self._failing:
                log.warning("etcd does not answer: %s", e)
            self._failing = str(e)
            raise
        if self._failing is not None:
            log.info("etcd answers again")
            self._failing = None
        return data

    def start(self) -> "EtcdV2View":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="etcd-v2-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only once it was started
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "EtcdV2View":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
