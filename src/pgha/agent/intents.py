"""The hand-off between REST handlers and the HA loop: operator requests waiting for a decision.

A handler ``submit()``s a request and waits (bounded) for its answer; the loop passes ``pending()`` to the core in
its observation and the executor ``answer()``s each one when the core's ``Answer`` action runs. Handlers never act
themselves (one loop owns decisions).

Rules
1. Thread-safe: handlers run in the API server's threads, the loop in its own.
2. Bounded: at most ``MAX_PENDING`` requests wait at once (more are refused at once: 503), and a handler that
   stops waiting withdraws its request, so a request nobody waits for is never acted on later.
3. A scheduled restart is kept here too (Patroni keeps it in the agent's memory and member data); it becomes a
   restart request once due.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from pgha.core.model import Request, RequestKind

MAX_PENDING = 8
MAX_WAIT = 3600.0  # no handler waits longer than this for the loop, whatever it asked for


@dataclass
class _Slot:
    request: Request
    done: threading.Event
    answer: tuple[int, str] | None = None
    orphan: bool = False


class Intents:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._slots: dict[int, _Slot] = {}
        self.scheduled_restart: dict[str, Any] | None = None  # {"schedule": iso, "at": unix, + conditions}
        self.failsafe_heard: float | None = None  # monotonic time of the last POST /failsafe this node accepted

    def submit(self, kind: RequestKind, *, force: bool = False, wait: float = 30.0) -> tuple[int, str]:
        """Queue a request and wait up to ``wait`` s for the loop's answer: (HTTP code, text)."""
        with self._lock:
            if len(self._slots) >= MAX_PENDING:
                return 503, f"too many requests waiting for this node's loop; {kind.value} refused"
            slot = _Slot(Request(next(self._ids), kind, force), threading.Event())
            self._slots[slot.request.id] = slot
        try:
            slot.done.wait(max(0.0, min(wait, MAX_WAIT)))
        finally:
            with self._lock:
                self._slots.pop(slot.request.id, None)
        if slot.answer is None:
            return 503, f"{kind.value} status unknown after {wait:.0f} seconds"
        return slot.answer

    def enqueue(self, kind: RequestKind) -> None:
        """A request nobody waits for (a reload, a scheduled restart now due): dropped once answered. One of a
        kind waits at a time: a second reload asked before the first ran adds nothing."""
        with self._lock:
            if any(s.orphan and s.request.kind is kind and s.answer is None for s in self._slots.values()):
                return
            slot = _Slot(Request(next(self._ids), kind), threading.Event())
            slot.orphan = True
            self._slots[slot.request.id] = slot

    def pending(self) -> tuple[Request, ...]:
        with self._lock:
            if not self._slots:
                return ()  # the common case, every tick
            return tuple(s.request for s in sorted(self._slots.values(), key=lambda s: s.request.id)
                         if s.answer is None)

    def answer(self, request_id: int, code: int, text: str) -> None:
        with self._lock:
            slot = self._slots.get(request_id)
            if slot is not None and slot.answer is None:
                slot.answer = (code, text)
                slot.done.set()
                if slot.orphan:
                    del self._slots[request_id]

    # --- scheduled restart (rule 3) ----------------------------------------------------------------------------
    def schedule_restart(self, entry: dict[str, Any]) -> bool:
        """False when one is already scheduled (Patroni's 409)."""
        with self._lock:
            if self.scheduled_restart is not None:
                return False
            self.scheduled_restart = dict(entry)
            return True

    def cancel_restart(self) -> bool:
        with self._lock:
            had, self.scheduled_restart = self.scheduled_restart is not None, None
            return had

    def due_restart(self, now: float | None = None) -> dict[str, Any] | None:
        """The scheduled restart, removed, once its time has come."""
        now = time.time() if now is None else now
        with self._lock:
            entry = self.scheduled_restart
            if entry is None or entry.get("at", 0) > now:
                return None
            self.scheduled_restart = None
            return entry
