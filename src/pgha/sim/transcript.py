"""The readable transcript of a simulated run: one line per thing that happened, formatted only when asked for.

Line shape: ``<sim time> <node> <what>``, e.g.::

      21.050 n2   race_won AcquireLeader Promote
      21.050 n2   pg promote tl=2 lsn=0/3A2F1C8
      30.000 --   FAULT kill n1 (heals at 45.000)

Rules
1. A node's tick is printed only when its reason code, its actions or their outcome differ from that node's last
   printed tick (steady states print once); a decision stopped by a failed action ends in ``-> FAILED: <error>``.
2. Fast runs (10,000 schedules) record nothing: a failing schedule is run again with a transcript (the simulator
   is deterministic, so the second run is the same run).
3. Transcripts are compared byte for byte by the scenario tests: keep the format stable.
"""

from __future__ import annotations

import dataclasses
import logging
from enum import Enum
from typing import Any

from pgha.core.model import lsn_text


def lsn(value: int | None) -> str:
    return "-" if value is None else lsn_text(value)


def _arg(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "primary" if value else "replica"
    if isinstance(value, tuple):
        return ",".join(_arg(v) for v in value) or "-"
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def action(a: Any) -> str:
    name = type(a).__name__
    if not dataclasses.is_dataclass(a):
        return name
    args = [_arg(getattr(a, f.name)) for f in dataclasses.fields(a)]
    while args and args[-1] == "-" and len(args) > 1:  # optional fields left at None (e.g. AwaitReplicated.member)
        args.pop()
    return f"{name}({','.join(args)})" if args else name


def line(t: float, who: str, text: str) -> str:
    return f"{t:8.3f} {who:<4} {text}"


class ErrorLog(logging.Handler):
    """Collects the executor's warnings and errors (why an action failed) while a transcript is recorded."""

    LOGGER = "pgha.agent.executor"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def drain(self) -> list[str]:
        out, self.messages = self.messages, []
        return out

    def install(self) -> None:
        logger = logging.getLogger(self.LOGGER)
        logger.addHandler(self)
        logger.setLevel(logging.WARNING)
        logger.propagate = False

    def remove(self) -> None:
        logger = logging.getLogger(self.LOGGER)
        logger.removeHandler(self)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
