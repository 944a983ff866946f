"""The write endpoints on a real server (127.0.0.1, ephemeral port) over the in-memory DCS: access rules, bad
bodies, the config key's compare-and-swap, scheduled restarts. The switchover itself runs end to end in
tests/integration/test_switchover.py."""

from __future__ import annotations

import base64
import datetime
import json
import time
from dataclasses import replace

import pytest

from pgha.agent.intents import Intents
from pgha.api import ApiServer, StatusBoard
from pgha.api.writes import Control, WriteHandler
from pgha.core.model import RequestKind
from pgha.dcs.memory import MemoryDcs, MemoryStore
from tests.unit.test_api_server import VIEW, cfg, make_status, request

GOOD = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def dcs():
    store = MemoryStore(time.monotonic)
    dcs = MemoryDcs(store, "/service", "demo", 10)
    dcs.set_config({"ttl": 10, "loop_wait": 1, "postgresql": {"parameters": {"work_mem": "4MB"}}})
    return dcs


@pytest.fixture
def intents():
    return Intents()


@pytest.fixture
def api(dcs, intents):
    control = Control(intents, dcs, lambda: 1.0, lambda members: ())
    board = StatusBoard(make_status(), replace(VIEW, config={"ttl": 4, "loop_wait": 1}))
    with ApiServer(cfg(username="admin", password="s3cret"), board, handler=WriteHandler, control=control) as api:
        yield api


WRITES = [("POST", "/switchover"), ("POST", "/failover"), ("DELETE", "/switchover"), ("POST", "/restart"),
          ("DELETE", "/restart"), ("POST", "/reload"), ("POST", "/reinitialize"), ("PATCH", "/config"),
          ("PUT", "/config")]


def test_every_write_endpoint_needs_authentication(api, dcs, intents):
    before = dcs.snapshot()
    for method, path in WRITES:
        code, headers, body, _ = request(api, method, path, b'{"leader": "n1"}', JSON)
        assert (method, path, code, body) == (method, path, 401, b"no auth header received")
        code, _, body, _ = request(api, method, path, b"{}", {**JSON, "Authorization": "Basic bm9wZQ=="})
        assert (method, path, code) == (method, path, 401)
    assert dcs.snapshot() == before and intents.pending() == ()


def test_bad_bodies_are_refused_and_change_nothing(api, dcs):
    before = dcs.snapshot()
    for method, path in (("POST", "/switchover"), ("PATCH", "/config"), ("PUT", "/config")):
        assert request(api, method, path, b"{oops", {**GOOD, **JSON})[0] == 400
        assert request(api, method, path, b"[1, 2]", {**GOOD, **JSON})[0] == 400
    code, _, body, _ = request(api, "PUT", "/config", b'{"ttl": "soon", "loop_wait": 1}', {**GOOD, **JSON})
    assert code == 400 and b"ttl" in body
    code, _, body, _ = request(api, "PATCH", "/config", b'{"maximum_lag_on_failover": -5}', {**GOOD, **JSON})
    assert code == 400 and b"maximum_lag_on_failover" in body
    assert dcs.snapshot() == before


def test_patch_config_merges_and_deletes_with_null(api, dcs):
    patch = {"loop_wait": 2, "postgresql": {"parameters": {"work_mem": None, "max_connections": 101}}}
    code, _, body, _ = request(api, "PATCH", "/config", json.dumps(patch).encode(), {**GOOD, **JSON})
    expected = {"ttl": 10, "loop_wait": 2, "postgresql": {"parameters": {"max_connections": 101}}}
    assert (code, json.loads(body)) == (200, expected)
    assert dcs.snapshot().config == expected
    code, _, body, _ = request(api, "PUT", "/config", b'{"ttl": 20, "loop_wait": 2}', {**GOOD, **JSON})
    assert code == 200 and dcs.snapshot().config == {"ttl": 20, "loop_wait": 2}


def test_patch_config_without_a_config_key_is_503(api, dcs):
    dcs.delete_key("config")
    assert request(api, "PATCH", "/config", b'{"ttl": 5}', {**GOOD, **JSON})[0] == 503


def test_scheduled_restart_can_be_deleted_once(api, intents):
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    body = json.dumps({"schedule": later, "role": "primary"}).encode()
    assert request(api, "POST", "/restart", body, {**GOOD, **JSON})[:3:2] == (202, b"Restart scheduled")
    assert request(api, "POST", "/restart", body, {**GOOD, **JSON})[:3:2] == \
        (409, b"Another restart is already scheduled")
    assert intents.scheduled_restart["role"] == "primary"
    assert request(api, "DELETE", "/restart", None, GOOD)[:3:2] == (200, b"scheduled restart deleted")
    assert request(api, "DELETE", "/restart", None, GOOD)[:3:2] == (404, b"no restarts are scheduled")
    api.source.publish(make_status(), VIEW)  # VIEW's config has pause: true
    assert request(api, "POST", "/restart", body, {**GOOD, **JSON})[:3:2] == \
        (500, b"Can't schedule restart in the paused state")


def test_restart_conditions_not_met_are_refused_before_the_loop(api, intents):
    code, _, body, _ = request(api, "POST", "/restart", b'{"role": "replica"}', {**GOOD, **JSON})
    assert (code, body) == (503, b"restart conditions are not satisfied")  # the status says primary
    code, _, body, _ = request(api, "POST", "/restart", b'{"postgres_version": "9.6"}', {**GOOD, **JSON})
    assert code == 400 and b"postgres_version" in body
    assert intents.pending() == ()


def test_reload_is_queued_for_the_loop(api, intents):
    assert request(api, "POST", "/reload", None, GOOD)[:3:2] == (202, b"reload scheduled")
    assert [r.kind for r in intents.pending()] == [RequestKind.RELOAD]


def test_switchover_checks_run_before_anything_is_written(api, dcs):
    dcs.put_key("config", {"ttl": 10})
    for body, code, text in [({"candidate": "n2"}, 400, b"Switchover could be performed only from a specific leader"),
                             ({"leader": "n9", "candidate": "n2"}, 412, b"leader name does not match")]:
        got = request(api, "POST", "/switchover", json.dumps(body).encode(), {**GOOD, **JSON})
        assert got[:3:2] == (code, text)
    assert dcs.snapshot().failover is None


def test_in_sync_mode_a_switchover_goes_only_to_a_synchronous_standby():
    from pgha.api import manual
    from pgha.core.model import ClusterView, Member, SyncState
    members = tuple(Member(name=n, api_url=f"http://127.0.0.1:1/{n}") for n in ("n1", "n2", "n3"))
    view = ClusterView(leader="n1", members=members, config={"synchronous_mode": "on"},
                       sync=SyncState("n1", ("n2",), 0))
    assert manual.targets(view, "n1", "n3", "switchover") == (412, "candidate name does not match with sync_standby")
    assert manual.targets(view, "n1", None, "switchover") == ["n2"]
    assert manual.targets(view, None, "n3", "failover") == ["n3"]  # a failover is the operator's choice
    nobody = replace(view, sync=SyncState("n1", (), 0))
    assert manual.targets(nobody, "n1", None, "switchover") == (412, "switchover is not possible: can not find "
                                                                     "sync_standby")
    off = replace(view, config={"synchronous_mode": "off"})
    assert manual.targets(off, "n1", "n3", "switchover") == ["n3"]
