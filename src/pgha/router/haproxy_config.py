"""The HAProxy configuration that routes to a pgha (or Patroni) cluster: a pure function of its members.

Two TCP ``listen`` blocks, each health-checked on the members' REST API as Patroni's documentation does it:
``rw`` (``OPTIONS /primary``: only the leader answers 200) and ``ro`` (``OPTIONS /replica``: running, streaming
replicas answer 200), plus a stats page and an admin ``stats socket`` for the runtime API (runtime.py).

Rules
1. Pure: plain values in, text out; no I/O. ``servers_from_view`` only parses what the DCS said.
2. A member whose conn_url or api_url cannot be read is left out (it could not be checked or reached anyway).
3. Server names are the member names, with characters HAProxy does not accept in a name replaced by ``_``
   (``server_name``); the router uses the same function to find a member's server.
4. Network namespaces (`pgha up --netns`): a ``Server`` with a ``namespace`` is connected to (and health-checked)
   from that namespace; ``RouterPorts.also_in`` binds every listener in those namespaces too (same address and
   port), besides HAProxy's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from pgha.core.model import ClusterView
from pgha.postgres.conf import parse_conn_url

RW, RO = "rw", "ro"  # the listen (backend) names the router drives


@dataclass(frozen=True)
class Server:
    name: str  # the member's name
    host: str  # PostgreSQL
    port: int
    api_host: str  # REST API
    api_port: int
    api_tls: bool = False
    namespace: str = ""  # rule 4


@dataclass(frozen=True)
class RouterPorts:
    rw: int
    ro: int
    stats: int
    bind: str = "127.0.0.1"
    also_in: tuple[str, ...] = ()  # rule 4: namespaces the listeners also bind in


@dataclass(frozen=True)
class Checks:
    """Health-check timing: ``default-server inter 1s fall 2 rise 1`` unless told otherwise."""

    inter: str = "1s"
    fall: int = 2
    rise: int = 1
    timeout_check: str = "2s"


def server_name(member: str) -> str:
    """HAProxy accepts letters, digits and ``-_.:`` in a server name."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", member) or "_"


def api_address(api_url: str) -> tuple[str, int, bool] | None:
    """``http://127.0.0.1:8008/patroni`` -> ("127.0.0.1", 8008, False); None when unreadable."""
    try:
        url = urlparse(api_url)
        port = url.port
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.hostname:
        return None
    tls = url.scheme == "https"
    return url.hostname, port or (443 if tls else 80), tls


def servers_from_view(view: ClusterView) -> list[Server]:
    """The members that can be routed to and checked, sorted by name (rule 2)."""
    out = []
    for member in sorted(view.members, key=lambda m: m.name):
        pg, api = parse_conn_url(member.conn_url), api_address(member.api_url)
        if pg is None or api is None:
            continue
        out.append(Server(member.name, pg[0], pg[1], api[0], api[1], api[2]))
    return out


def _server_line(s: Server) -> str:
    check = f"check port {s.api_port}" if s.api_host == s.host else f"check addr {s.api_host} port {s.api_port}"
    tls = " check-ssl verify none" if s.api_tls else ""
    netns = f" namespace {s.namespace}" if s.namespace else ""
    return f"    server {server_name(s.name)} {s.host}:{s.port} maxconn 100 {check}{tls}{netns}"


def _binds(ports: RouterPorts, port: int) -> list[str]:
    return [f"    bind {ports.bind}:{port}"] + [f"    bind {ports.bind}:{port} namespace {ns}" for ns in ports.also_in]


def _listen(name: str, ports: RouterPorts, port: int, path: str, servers: list[Server], checks: Checks) -> list[str]:
    lines = [
        f"listen {name}",
        *_binds(ports, port),
        "    mode tcp",
        "    balance roundrobin",
        f"    option httpchk OPTIONS {path}",
        "    http-check expect status 200",
        f"    default-server inter {checks.inter} fall {checks.fall} rise {checks.rise} "
        "on-marked-down shutdown-sessions",
    ]
    return lines + [_server_line(s) for s in servers]


def render(servers: list[Server], ports: RouterPorts, socket_path: str, checks: Checks = Checks(),
           scope: str = "") -> str:
    """The whole haproxy.cfg: global (with the admin stats socket), defaults, stats page, rw and ro."""
    title = f" for cluster {scope}" if scope else ""
    lines = [
        f"# HAProxy routing{title}, written by pgha (pgha haproxy-config); see docs/routing.md",
        "global",
        "    maxconn 1000",
        f"    stats socket {socket_path} mode 600 level admin",
        "    stats timeout 30s",
        "",
        "defaults",
        "    mode tcp",
        "    retries 2",
        "    timeout connect 4s",
        "    timeout client 30m",
        "    timeout server 30m",
        f"    timeout check {checks.timeout_check}",
        "",
        "listen stats",
        "    mode http",
        *_binds(ports, ports.stats),
        "    stats enable",
        "    stats uri /",
        "    stats refresh 5s",
        "",
        *_listen(RW, ports, ports.rw, "/primary", servers, checks),
        "",
        *_listen(RO, ports, ports.ro, "/replica", servers, checks),
    ]
    return "\n".join(lines) + "\n"
