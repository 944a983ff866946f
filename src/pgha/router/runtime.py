"""A client of HAProxy's runtime API over its admin stats socket (a unix socket).

Spoken directly, one command per connection (HAProxy's non-interactive mode: it answers and closes): the protocol
is one line in, text out, which needs no library.

Rules
1. Every call is bounded by ``timeout`` seconds (connect, send, read) and raises ``RuntimeApiError`` on failure,
   including when HAProxy answers a ``set``/``shutdown`` command with an error text (success is an empty answer).
2. Names are passed as given: the caller uses haproxy_config.server_name() for member names.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20  # srv_admin_state: forced, inherited, config, resolution maintenance
DRAIN_BITS = 0x08 | 0x10  # forced, inherited drain
RUNNING = 2  # srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping


class RuntimeApiError(Exception):
    pass


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    address: str
    port: int
    op_state: int
    admin_state: int

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & MAINT_BITS)

    @property
    def drain(self) -> bool:
        return bool(self.admin_state & DRAIN_BITS)

    @property
    def up(self) -> bool:
        """HAProxy sends new connections to it: running, not in maintenance, not draining."""
        return self.op_state == RUNNING and not self.maint and not self.drain


class HaproxyRuntime:
    def __init__(self, socket_path: str, timeout: float = 2.0) -> None:
        self.socket_path, self.timeout = socket_path, timeout

    def command(self, line: str) -> str:
        """Send one command, return HAProxy's whole answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):  # HAProxy closes after its answer; each recv is bounded
                    chunks.append(chunk)
        except OSError as e:
            raise RuntimeApiError(f"HAProxy runtime API at {self.socket_path}: {line!r}: {e}") from None
        return b"".join(chunks).decode(errors="replace")

    def _act(self, line: str) -> None:
        answer = self.command(line).strip()
        if answer:
            raise RuntimeApiError(f"HAProxy refused {line!r}: {answer}")

    def set_health(self, backend: str, server: str, up: bool) -> None:
        self._act(f"set server {backend}/{server} health {'up' if up else 'down'}")

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``ready``, ``drain`` or ``maint``."""
        self._act(f"set server {backend}/{server} state {state}")

    def shutdown_sessions(self, backend: str, server: str) -> None:
        self._act(f"shutdown sessions server {backend}/{server}")

    def servers_state(self, backend: str | None = None) -> list[ServerState]:
        return parse_servers_state(self.command("show servers state" + (f" {backend}" if backend else "")))

    def up_servers(self, backend: str) -> set[str]:
        return {s.name for s in self.servers_state(backend) if s.up}


def parse_servers_state(text: str) -> list[ServerState]:
    """``show servers state``: a version line, a ``# be_id be_name srv_id srv_name ...`` header, one line each."""
    header: list[str] = []
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line[1:].split()
            continue
        fields = line.split()
        if not header or len(fields) < len(header):
            continue
        row = dict(zip(header, fields))
        try:
            out.append(ServerState(row["be_name"], row["srv_name"], row["srv_addr"], int(row.get("srv_port", 0)),
                                   int(row["srv_op_state"]), int(row["srv_admin_state"])))
        except (KeyError, ValueError):
            continue
    return out
