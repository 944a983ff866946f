"""The REST API's write endpoints (Patroni 4.1, spec section 2): switchover, failover, restart, reload,
reinitialize, and the dynamic configuration.

Theory of operation
-------------------
``WriteHandler`` adds the write endpoints to the read-only ``Handler``. Every one first passes ``check_access``
(allowlist, client certificate, Basic auth: 403/401). The checks themselves are pure (manual.py); the handlers do
the I/O around them:
- switchover and failover are written to the DCS ``failover`` key, as Patroni does; the leader's loop acts on it
  (core/switchover.py). Unless scheduled, the handler then watches the DCS (bounded: 2 x max(10, loop_wait) s)
  and answers with the outcome.
- restart, reload and reinitialize are handed to this node's loop (agent/intents.py), which answers them;
  handlers never touch PostgreSQL.
- PATCH/PUT /config write the ``config`` key (compare-and-swap for PATCH); a configuration pgha cannot read is
  refused with 400 naming the field, and nothing is written.

Rules
1. Bad bodies: 411 without Content-Length, 400 when not a JSON object, 400 naming the field of a wrong type.
2. Every wait is bounded and polls; the DCS is read through the API's own client (``Control.dcs``), never the
   loop's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from pgha.api import manual
from pgha.api.server import Handler, requires_access
from pgha.core.dynamic import DynamicConfig
from pgha.core.model import ClusterView, Member, PeerStatus, RequestKind
from pgha.ports import Dcs, DcsError

log = logging.getLogger("pgha.api")

POLL = 0.1  # seconds between DCS reads while a switchover runs


@dataclass
class Control:
    """What the write endpoints need from the agent (the API server holds it as ``ApiServer.control``)."""

    intents: Any  # agent.intents.Intents
    dcs: Dcs
    loop_wait: Callable[[], float]
    ask: Callable[[tuple[Member, ...]], tuple[PeerStatus, ...]]  # fresh answers of members' REST APIs


class WriteHandler(Handler):
    @property
    def control(self) -> Control:
        return self.server.api.control

    def _cluster(self) -> ClusterView | None:
        """A fresh DCS read; None (after answering 503) when the DCS cannot be read."""
        try:
            return self.control.dcs.snapshot()
        except DcsError as e:
            log.warning("REST API: cannot read the DCS: %s", e)
            self.write_response(503, "DCS is not accessible")
            return None

    # --- switchover / failover ---------------------------------------------------------------------------------

    @requires_access
    def do_POST_switchover(self) -> None:
        self._failover("switchover")

    @requires_access
    def do_POST_failover(self) -> None:
        self._failover("failover")

    def _failover(self, action: str) -> None:
        body = self.read_json()
        if body is None:
            return
        view = self._cluster()
        if view is None:
            return
        error, value, action = manual.failover_request(body, action, view.paused, time.time())
        log.info("received %s request with leader=%s candidate=%s scheduled_at=%s", action, value.get("leader"),
                 value.get("member"), value.get("scheduled_at"))
        if error is None and "scheduled_at" not in value:
            error = self._possible(view, value.get("leader"), value.get("member"), action)
        if error is not None:
            self.write_response(*error)
            return
        try:
            written = self.control.dcs.put_key("failover", value)
        except DcsError:
            written = False
        if not written:
            self.write_response(503, "failed to write failover key into DCS")
        elif "scheduled_at" in value:
            self.write_response(202, f"{action.title()} scheduled")
        else:
            self.write_response(*self._outcome(view.leader, value.get("member"), action))

    def _possible(self, view: ClusterView, leader: str | None, candidate: str | None, action: str):
        names = manual.targets(view, leader, candidate, action)
        if isinstance(names, tuple):
            return names
        members = tuple(m for m in view.members if m.name in names)
        return manual.candidate_ok(view, self.control.ask(members), action)

    def _outcome(self, old_leader: str | None, candidate: str | None, action: str) -> tuple[int, str]:
        limit = 2 * max(10.0, self.control.loop_wait())
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(POLL)
            try:
                answer = manual.result(self.control.dcs.snapshot(), old_leader, candidate, action)
            except DcsError as e:
                log.debug("polling the %s result: %s", action, e)
                continue
            if answer is not None:
                return answer
        return 503, f"{action.title()} status unknown after {limit:.0f} seconds"

    @requires_access
    def do_DELETE_switchover(self) -> None:
        view = self._cluster()
        if view is None:
            return
        if view.failover is None or view.failover.scheduled_at is None:
            self.write_response(404, "no switchover is scheduled")
        elif self.control.dcs.delete_key("failover", version=view.versions.get("failover", 0)):
            self.write_response(200, "scheduled switchover deleted")
        else:
            self.send_error(409)

    # --- restart / reload / reinitialize -----------------------------------------------------------------------

    @requires_access
    def do_POST_restart(self) -> None:
        body = self.read_json(optional=True)
        if body is None:
            return
        view = self.server.api.source.cluster()
        error, filters = manual.restart_request(body, bool(view and view.paused), time.time())
        if error is not None:
            self.write_response(*error)
            return
        if "at" in filters:
            if self.control.intents.schedule_restart(filters):
                self.write_response(202, "Restart scheduled")
            else:
                self.write_response(409, "Another restart is already scheduled")
            return
        status = self.status()
        leader = status.get("role") == "primary"
        if not manual.restart_matches(filters, status, leader):
            self.write_response(503, "restart conditions are not satisfied")
            return
        timeout = filters.get("timeout", 60.0)
        before = status.get("postmaster_start_time")
        code, text = self.control.intents.submit(RequestKind.RESTART, wait=timeout)
        if code == 200 and not self._restarted_within(before, timeout):
            code, text = 503, "restart failed"
        self.write_response(code, text)

    def _restarted_within(self, before: Any, timeout: float) -> bool:
        """After the loop started PostgreSQL again: wait (bounded) until the published status shows it running
        with a new start time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("state") == "running" and status.get("postmaster_start_time") not in (None, before):
                return True
            time.sleep(POLL)
        return False

    @requires_access
    def do_DELETE_restart(self) -> None:
        if self.control.intents.cancel_restart():
            self.write_response(200, "scheduled restart deleted")
        else:
            self.write_response(404, "no restarts are scheduled")

    @requires_access
    def do_POST_reload(self) -> None:
        self.control.intents.enqueue(RequestKind.RELOAD)
        self.write_response(202, "reload scheduled")

    @requires_access
    def do_POST_reinitialize(self) -> None:
        body = self.read_json(optional=True)
        if body is None:
            return
        for field in ("force", "from_leader"):
            if body.get(field) is not None and not isinstance(body[field], bool):
                self.write_response(400, f"{field}: expected true or false, got {json.dumps(body[field])}")
                return
        code, text = self.control.intents.submit(RequestKind.REINITIALIZE, force=bool(body.get("force")))
        self.write_response(code, text)

    # --- failsafe mode (agent/failsafe.py) ----------------------------------------------------------------------

    def _failsafe_mode(self) -> bool:
        view = self.server.api.source.cluster()
        return bool(view is not None and view.config and view.config.get("failsafe_mode") is True)

    def do_POST_failsafe(self) -> None:
        """The primary's failsafe round: a replica accepts (and does not race for ttl); a primary refuses."""
        if not self.check_access(check_members=False):  # Patroni: the member allowlist is not applied here
            return
        if not self._failsafe_mode():
            self.send_error(502)
            return
        body = self.read_json()
        if body is None:
            return
        status = self.status()
        if status.get("role") == "primary":
            self.write_response(500, "Running as a leader")
            return
        self.control.intents.failsafe_heard = time.monotonic()
        xlog = status.get("xlog") or {}
        lsn = max([v for v in (xlog.get("received_location"), xlog.get("replayed_location")) if isinstance(v, int)],
                  default=0)
        self.write_response(200, "Accepted", headers={"lsn": str(lsn)})

    def do_GET_failsafe(self) -> None:
        view = self.server.api.source.cluster()
        if view is None or view.failsafe is None or not self._failsafe_mode():
            self.send_error(502)
        else:
            self.write_json(200, dict(view.failsafe))

    # --- dynamic configuration ---------------------------------------------------------------------------------

    @requires_access
    def do_PATCH_config(self) -> None:
        body = self.read_json()
        if body is None:
            return
        view = self._cluster()
        if view is None:
            return
        if view.config is None:
            self.send_error(503)
            return
        data = json.loads(json.dumps(view.config))
        manual.merge_patch(data, body)
        if self._invalid(data):
            return
        if data != view.config and not self.control.dcs.put_key("config", data, version=view.versions.get("config", 0)):
            self.send_error(409)
            return
        self.write_json(200, data)

    @requires_access
    def do_PUT_config(self) -> None:
        body = self.read_json()
        if body is None or self._invalid(body):
            return
        view = self._cluster()
        if view is None:
            return
        if view.config != body:
            try:
                self.control.dcs.put_key("config", body)
            except DcsError:
                self.send_error(502)
                return
        self.write_json(200, body)

    def _invalid(self, config: dict[str, Any]) -> bool:
        """400 naming the fields pgha cannot use; the DCS is left as it was."""
        _, errors = DynamicConfig.from_dict(config)
        if errors:
            self.write_response(400, "invalid configuration: " + "; ".join(errors))
            return True
        return False
