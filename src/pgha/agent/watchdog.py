"""The Linux watchdog device (`watchdog` section, Patroni's semantics): reset the machine if the leader's agent
stops feeding it.

pgha's own fencer (fencer.py) already stops PostgreSQL when the agent misses its lease deadline; the device goes
further for the failures a process cannot survive (a kernel hang): while this node leads, the agent opens the
device, sets its timeout to ``ttl - safety_margin`` and writes a keepalive every tick; on demotion or a clean
stop it disarms it with the magic 'V' close.

Rules
1. mode off: never touched. automatic: used when the device can be opened and the timeout is usable (at least
   loop_wait + 1 s), silently skipped otherwise. required: when it cannot be used, this node is not allowed to
   become leader (the agent treats it as nofailover and says so).
2. Setting the timeout uses WDIOC_SETTIMEOUT; a device that does not take it (a plain file or FIFO standing in
   for a device in tests) keeps being fed all the same.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct

log = logging.getLogger(__name__)

WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)


class Watchdog:
    def __init__(self, mode: str = "off", device: str = "/dev/watchdog", safety_margin: float = 5) -> None:
        self.mode = mode if mode in ("off", "automatic", "required") else "off"
        self.device = device
        self.safety_margin = safety_margin
        self.fd: int | None = None
        self.timeout: int | None = None

    def timeout_for(self, ttl: float) -> int:
        margin = ttl // 2 if self.safety_margin == -1 else self.safety_margin
        return int(ttl - margin)

    def usable(self, ttl: float, loop_wait: float) -> bool:
        """Can the device guard a leader with these timings? (Checked before promoting.)"""
        if self.mode == "off":
            return False
        return self.timeout_for(ttl) >= loop_wait + 1 and os.path.exists(self.device)

    def may_lead(self, ttl: float, loop_wait: float) -> bool:
        return self.mode != "required" or self.usable(ttl, loop_wait)

    def keepalive(self, ttl: float, loop_wait: float) -> None:
        """Called every tick while this node leads: open and arm on first use, then feed."""
        if not self.usable(ttl, loop_wait):
            return
        try:
            if self.fd is None:
                self.fd = os.open(self.device, os.O_WRONLY)
                self._set_timeout(self.timeout_for(ttl))
            os.write(self.fd, b"1")
        except OSError as e:
            log.warning("watchdog %s: %s", self.device, e)
            self.disable()

    def _set_timeout(self, seconds: int) -> None:
        assert self.fd is not None
        try:
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("I", seconds))
        except OSError:
            pass  # not a watchdog driver (a test's stand-in): feeding still works
        self.timeout = seconds

    def disable(self) -> None:
        """The magic close: the driver stops counting down (unless built with nowayout)."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, b"V")
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        self.timeout = None
