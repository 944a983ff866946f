"""Tables and machine-readable output as patronictl prints them (``print_output`` in patroni/ctl.py).

Pure functions over (columns, rows); nothing here reads the DCS.

Rules
1. ``pretty``: prettytable's look: ``+---+`` frame, one space of padding, left-aligned except the columns named
   in ``right``; the first line carries ``title`` after its first ``+`` (cut to fit). When a cell holds several
   lines every row is framed (prettytable's ``hrules=ALL``).
2. ``json``/``yaml``: a list of objects; with a title (the member list) empty cells are left out, as patronictl
   does. YAML is ``yaml.safe_dump`` with sorted keys (patronictl's ``format_config_for_editing``).
3. ``tsv``: a header line and one line per row, cells joined by ``delimiter``.
4. No colour codes, ever: what is printed is the same on a terminal and in a pipe.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import yaml


def dump_yaml(data: Any, flow: bool = False) -> str:
    """patronictl's ``format_config_for_editing``."""
    return yaml.safe_dump(data, default_flow_style=flow, encoding=None, allow_unicode=True, width=200)


def pretty(columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = (), title: str = "") -> str:
    """Rule 1."""
    cells = [[("" if v is None else str(v)).split("\n") for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max([widths[i]] + [len(line) for line in lines])
    right_set = {i for i, c in enumerate(columns) if c in set(right)}
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    top = sep
    if title:
        head = title[:len(sep) - 2]
        top = sep[0] + head + sep[1 + len(head):]

    def line(values: Sequence[str], align: bool) -> str:
        return "|" + "|".join(f" {v.rjust(w) if align and i in right_set else v.ljust(w)} "
                              for i, (v, w) in enumerate(zip(values, widths))) + "|"

    out = [top, line(list(columns), False), sep]
    multi = any(len(lines) > 1 for row in cells for lines in row)
    for row in cells:
        height = max([len(lines) for lines in row] or [1])
        for k in range(height):
            out.append(line([lines[k] if k < len(lines) else "" for lines in row], True))
        if multi:
            out.append(sep)
    if not multi:
        out.append(sep)
    return "\n".join(out)


def render(columns: Sequence[str], rows: list[list[Any]], fmt: str, right: Iterable[str] = (), title: str = "",
           delimiter: str = "\t") -> str:
    """Rules 1-3 for one table; ``fmt`` is pretty, tsv, json, yaml or yml."""
    if fmt in ("json", "yaml", "yml"):
        elements = [{k: v for k, v in zip(columns, r) if not title or str(v)} for r in rows]
        return json.dumps(elements) if fmt == "json" else dump_yaml(elements).rstrip("\n")
    if fmt == "tsv":
        return "\n".join(delimiter.join(map(str, r)) for r in [list(columns)] + rows)
    return pretty(columns, rows, right, title)
