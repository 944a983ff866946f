"""Typed reading of values from the merged YAML dict, collecting errors instead of stopping at the first.

Rules
1. A ``Reader`` never raises on bad input: it records ``"<key.path>: <expected ...>, got <value>"`` and returns
   a default, so one run reports every problem.
2. The offending value is quoted only when it cannot be a secret: never under ``password``, ``sslpassword``,
   ``keyfile_password``, ``auth``, ``token`` or a role section (``authentication``, ``replication``, ``superuser``,
   ``rewind``, ``pg_rewind``), and a mapping is only named, never printed.
3. A key whose value is ``null`` counts as absent (Patroni's merge drops ``null`` keys).
4. Addresses follow Patroni's ``split_host_port``: the port is after the last ``:``; a host part holding ``:``
   is IPv6 (brackets are removed). Ports must be in 1..65535.
"""

from __future__ import annotations

from typing import Any, Mapping

from pgha.core.dynamic import parse_bool, parse_int, show

SECRET_KEYS = frozenset({"password", "sslpassword", "keyfile_password", "auth", "key_password", "auth_data",
                         "token"})
# Sections that hold secrets: a wrong value under them is never quoted (it may be "user:password").
SECRET_SECTIONS = frozenset({"authentication", "replication", "superuser", "rewind", "pg_rewind"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "*", "::"})
_MISSING = object()


def join(base: str, key: Any) -> str:
    return f"{base}.{key}" if base else str(key)


def is_secret(path: str) -> bool:
    parts = {p.split("[", 1)[0] for p in path.split(".")}
    return bool(parts & SECRET_KEYS) or bool(parts & SECRET_SECTIONS)


def describe(value: Any) -> str:
    """A bad value for a message: scalars quoted, containers only named (they may hold secrets)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)) and not all(isinstance(v, (str, int, float)) for v in value):
        return "a list"
    return show(value)


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) from ``host:port``, ``[v6]:port``, ``h1,h2:port``; ValueError when it cannot be read."""
    text = value.strip()
    head, sep, tail = text.rpartition(":")
    if not sep or text.endswith("]"):
        host, port_text = text, None
    else:
        host, port_text = head, tail
    if ":" in host or "[" in host:
        host = ",".join(h.strip().strip("[]") for h in host.split(","))
    if port_text is None:
        if default_port is None:
            raise ValueError("no port")
        return host, default_port
    if not port_text.strip().isdecimal():
        raise ValueError("bad port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("port out of range")
    return host, port


def address_problem(exc: ValueError) -> str:
    """What to say about an address ``split_host_port`` refused."""
    return "expected host:port" if str(exc) == "no port" else "expected host:port with a port in 1..65535"


class Reader:
    """Reads typed values out of nested mappings and keeps a list of errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._bad_sections: set[str] = set()  # keys under a section that is not a mapping are not reported

    def error(self, path: str, expected: str, value: Any = _MISSING) -> None:
        if any(path.startswith(section + ".") for section in self._bad_sections):
            return
        if value is not _MISSING and not is_secret(path):
            expected = f"{expected}, got {describe(value)}"
        self.errors.append(f"{path}: {expected}")

    def section(self, d: Mapping[str, Any], key: str, base: str = "") -> Mapping[str, Any]:
        """The sub-mapping at ``key`` ({} when absent or null); an error when it is not a mapping."""
        value = d.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(join(base, key), "expected a mapping", value)
            self._bad_sections.add(join(base, key))
            return {}
        return value

    def string(self, d: Mapping[str, Any], key: str, base: str = "", *, required: bool = False,
               default: str | None = None, what: str = "a string") -> str | None:
        value = d.get(key)
        if value is None:
            if required:
                self.error(join(base, key), f"required, expected {what}")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            self.error(join(base, key), f"expected {what}", value)
            return default
        return value

    def boolean(self, d: Mapping[str, Any], key: str, base: str = "", default: Any = False) -> Any:
        value = d.get(key)
        if value is None:
            return default
        result = parse_bool(value)
        if result is None:
            self.error(join(base, key), "expected a boolean (true/false)", value)
            return default
        return result

    def integer(self, d: Mapping[str, Any], key: str, base: str = "", *, default: int,
                minimum: int | None = None) -> int:
        value = d.get(key)
        if value is None:
            return default
        number = parse_int(value)
        if number is None or (minimum is not None and number < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            self.error(join(base, key), f"expected an integer{bound}", value)
            return default
        return number

    def choice(self, d: Mapping[str, Any], key: str, base: str, options: tuple[str, ...],
               default: str | None = None) -> str | None:
        value = d.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in options:
            self.error(join(base, key), f"expected one of {', '.join(options)}", value)
            return default
        return value

    def str_list(self, d: Mapping[str, Any], key: str, base: str = "",
                 what: str = "a list of strings") -> tuple[str, ...] | None:
        value = d.get(key)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self.error(join(base, key), f"expected {what}", value)
            return None
        return tuple(value)

    def address(self, d: Mapping[str, Any], key: str, base: str, *, connect: bool,
                default_port: int | None = None) -> tuple[str, int] | None:
        """A ``host:port`` value; ``connect`` rejects wildcard hosts and lists of hosts."""
        path, value = join(base, key), d.get(key)
        if value is None:
            self.error(path, "required, expected host:port")
            return None
        if isinstance(value, str) and value.strip():
            try:
                host, port = split_host_port(value, default_port)
            except ValueError as exc:
                self.error(path, address_problem(exc), value)
                return None
            if not connect or (host not in WILDCARD_HOSTS and "," not in host):
                return host, port
            self.error(path, "expected host:port with one host others can reach (not a wildcard)", value)
            return None
        self.error(path, "expected host:port", value)
        return None
