"""The ``[databases]`` section of a pgbouncer.ini, read and rewritten line by line. Pure: text in, text out.

Why not configparser (or any ini library): PgBouncer's file is libusual's ini dialect, not Python's. A database
line's value is a libpq-like connection string (``host=... port=... dbname=...``, values quoted with ``'`` and
``''`` inside), keys may be ``*``, a ``;`` or ``#`` only starts a comment at the start of a line (inside a value it
is data), and files may hold ``%include`` lines. A library would reparse and re-serialise the whole file: comments,
order, spacing, case and line endings would change, and keys it cannot read would be lost. The daemon owns only
the host and port of the database entries; everything else in the file belongs to the operator, so it is kept
byte for byte: the file is split into lines (their endings kept), only lines of ``[databases]`` are parsed, and in
them only the spans of the ``host=`` and ``port=`` values are replaced (or the pair appended when missing).

Syntax followed (libusual's parse_ini_file and PgBouncer's cstr_get_pair):
- leading whitespace is skipped; a line starting with ``;`` or ``#`` is a comment; ``[name]`` starts a section;
- ``key = value``: the value runs to the end of the line, trailing whitespace (``\\r`` included) trimmed;
- in the value, pairs ``key=value`` separated by spaces; a value is a bare word, or ``'...'`` with ``''`` for a
  quote.
Lines that are none of these (``%include``, anything unreadable) are kept as they are, never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = re.compile(r'[ \t]*("(?:[^"]|"")+"|[A-Za-z0-9_.*-]+)[ \t]*=[ \t]*')


class IniError(ValueError):
    pass


@dataclass(frozen=True)
class Pair:
    key: str
    value: str  # unquoted
    start: int  # span of the value as written (quotes included), relative to the connection string
    end: int


@dataclass(frozen=True)
class Entry:
    """One line of ``[databases]``: ``name = connstr``."""

    line: int  # index in the list of lines
    name: str  # unquoted
    value_start: int  # span of the connection string within the line (trailing whitespace excluded)
    value_end: int
    pairs: tuple[Pair, ...]

    def get(self, key: str) -> str | None:
        found = [p.value for p in self.pairs if p.key == key]
        return found[-1] if found else None


def parse_connstr(s: str) -> tuple[Pair, ...]:
    """``host=a port=5432 password='it''s'`` -> pairs with their value spans; IniError when unreadable."""
    pairs, i, n = [], 0, len(s)
    while True:
        while i < n and s[i].isspace():
            i += 1
        if i >= n:
            return tuple(pairs)
        k = i
        while i < n and s[i] not in "= ":
            i += 1
        key = s[k:i]
        while i < n and s[i].isspace():
            i += 1
        if i >= n or s[i] != "=" or not key:
            raise IniError(f"no '=' after {key!r} in {s!r}")
        i += 1
        while i < n and s[i].isspace():
            i += 1
        start = i
        if i < n and s[i] == "'":
            i += 1
            out = []
            while True:
                if i >= n:
                    raise IniError(f"unterminated quote in {s!r}")
                if s[i] == "'":
                    if i + 1 < n and s[i + 1] == "'":
                        out.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                out.append(s[i])
                i += 1
            value = "".join(out)
        else:
            while i < n and s[i] != " ":
                i += 1
            value = s[start:i]
        if not value:
            raise IniError(f"empty value for {key!r} in {s!r}")
        pairs.append(Pair(key, value, start, i))


def quote(value: str) -> str:
    """A connection-string value, quoted only when it has to be."""
    if value and not re.search(r"[\s']", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _section(line: str) -> str | None:
    stripped = line.lstrip()
    if stripped.startswith("["):
        end = stripped.find("]")
        if end > 0:
            return stripped[1:end]
    return None


def split_lines(text: str) -> list[str]:
    """Lines as PgBouncer sees them: ended by ``\\n`` only, each with its ending; joining them gives ``text``."""
    return [line for line in re.split(r"(?<=\n)", text) if line]


def database_entries(lines: list[str]) -> list[Entry]:
    """The entries of every ``[databases]`` section (a section may appear more than once)."""
    entries, section = [], None
    for index, line in enumerate(lines):
        body = line.rstrip("\n")
        stripped = body.lstrip()
        if not stripped or stripped[0] in "#;":
            continue
        name = _section(body)
        if name is not None:
            section = name
            continue
        if section != "databases":
            continue
        match = _KEY.match(body)
        if not match:
            continue  # %include or unreadable: not ours, left alone
        value_start = match.end()
        value_end = max(value_start, len(body.rstrip()))
        key = match.group(1)
        if key.startswith('"'):
            key = key[1:-1].replace('""', '"')
        connstr = body[value_start:value_end]
        try:
            pairs = parse_connstr(connstr)
        except IniError as e:
            raise IniError(f"line {index + 1}: database {key}: {e}") from None
        entries.append(Entry(index, key, value_start, value_end, pairs))
    return entries


def targets(text: str) -> dict[str, tuple[str | None, int]]:
    """{database: (host, port)} as the file says now (PgBouncer's defaults: no host = Unix socket, port 5432)."""
    out = {}
    for e in database_entries(split_lines(text)):
        port = e.get("port")
        out[e.name] = (e.get("host"), int(port) if port and port.isdecimal() else 5432)
    return out


def point_databases(text: str, host: str, port: int, only: frozenset[str] | None = None) -> str:
    """``text`` with every ``[databases]`` entry (or those named in ``only``) set to ``host``/``port``.

    Only the spans of the host and port values change (a missing pair is appended to the entry); every other
    byte of the file stays. Returns ``text`` itself when nothing needed to change."""
    lines = split_lines(text)
    changed = False
    for entry in database_entries(lines):
        if only is not None and entry.name not in only:
            continue
        line = lines[entry.line]
        connstr = line[entry.value_start:entry.value_end]
        new = _set_pair(_set_pair(connstr, entry.pairs, "host", host), None, "port", str(port))
        if new != connstr:
            lines[entry.line] = line[:entry.value_start] + new + line[entry.value_end:]
            changed = True
    return "".join(lines) if changed else text


def _set_pair(connstr: str, pairs: tuple[Pair, ...] | None, key: str, value: str) -> str:
    pairs = parse_connstr(connstr) if pairs is None else pairs
    mine = [p for p in pairs if p.key == key]
    if mine:
        p = mine[-1]  # PgBouncer takes the last one
        if p.value == value:
            return connstr
        return connstr[:p.start] + quote(value) + connstr[p.end:]
    return f"{connstr} {key}={quote(value)}" if connstr else f"{key}={quote(value)}"
