"""The DCS contract (pgha.ports.Dcs): one suite, run against every backend.

``memory`` runs on a fake clock the harness advances; ``etcd`` runs against a real etcd (tests/support/etcd.py),
where "time passes" means polling a condition under a deadline (never a bare sleep) and TTLs are 2 s so expiry
stays short. Tests after the contract section exercise what only one backend has (endpoints, auth, watch thread,
fault hooks).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pgha.dcs import etcd3
from pgha.dcs.zookeeper import ZooKeeperDcs
from pgha.ports import DcsError
from tests.support.dcs import MEMBER, EtcdHarness, MemoryHarness, ZooKeeperHarness, silent_server
from tests.support.etcd import EtcdServer, free_port, http, make_test_certs
from tests.support.zookeeper import ZooKeeperMissing, ZooKeeperServer


@pytest.fixture(scope="module")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper for this module; tests keep apart by their own scope (znode prefix)."""
    try:
        server = ZooKeeperServer()
    except ZooKeeperMissing as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        yield server


@pytest.fixture(params=["memory", "etcd", "zookeeper"])
def h(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        harness: Any = MemoryHarness()
    elif request.param == "etcd":
        harness = EtcdHarness(request.getfixturevalue("etcd_server"))
    else:
        harness = ZooKeeperHarness(request.getfixturevalue("zookeeper_server"))
    yield harness
    harness.close()


@pytest.fixture
def e(etcd_server: EtcdServer) -> Iterator[EtcdHarness]:
    harness = EtcdHarness(etcd_server)
    yield harness
    harness.close()


# --- the contract -----------------------------------------------------------------------------------------
def test_acquire_is_exclusive(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert a.renew_lease() == h.ttl
    assert a.acquire_leader("a")
    assert not b.acquire_leader("b")
    assert not a.acquire_leader("a")  # create-only, even for the holder
    assert b.snapshot().leader == "a"


def test_refresh_keeps_the_leader_key_past_ttl(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert a.acquire_leader("a")
    start = h.now()
    h.run_for(h.ttl * 2, h.ttl / 4, lambda: None if a.refresh_leader("a") else pytest.fail("refresh failed"))
    assert h.now() - start >= h.ttl * 1.5
    assert b.snapshot().leader == "a"
    assert not b.refresh_leader("b")  # holds another name
    assert b.snapshot().leader == "a"


def test_refresh_is_false_when_the_key_is_gone(h: Any) -> None:
    a = h.agent()
    assert not a.refresh_leader("a")
    assert a.acquire_leader("a")
    h.delete_raw("leader")
    assert not a.refresh_leader("a")


def test_release_only_by_holder(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert a.acquire_leader("a")
    assert not b.release_leader("b")
    assert b.snapshot().leader == "a"
    assert a.release_leader("a")
    assert b.snapshot().leader is None
    assert not a.release_leader("a")
    assert b.acquire_leader("b")


def test_dead_agents_keys_vanish_after_ttl(h: Any) -> None:
    a, observer = h.agent(), h.agent()
    start = h.now()
    a.renew_lease()
    assert a.acquire_leader("a")
    a.touch_member("a", MEMBER)
    view = observer.snapshot()
    assert view.leader == "a" and view.member("a") is not None

    def gone() -> bool:
        v = observer.snapshot()
        return v.leader is None and v.member("a") is None

    assert h.until(gone, within=h.ttl + 3)
    assert h.now() - start >= h.ttl - 0.05  # not before the TTL ran out


def test_lease_expired_then_renew_grants_a_new_one(h: Any) -> None:
    a, observer = h.agent(), h.agent()
    a.renew_lease()
    assert a.acquire_leader("a")
    assert h.until(lambda: observer.snapshot().leader is None, within=h.ttl + 3)
    assert a.renew_lease() == h.ttl
    assert not a.refresh_leader("a")  # the lock was lost with the old lease
    assert a.acquire_leader("a")


def test_set_ttl_moves_keys_to_a_new_lease(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert a.acquire_leader("a")
    a.touch_member("a", MEMBER)
    old_lease = h.raw("leader")[2]
    a.set_ttl(h.ttl + 1)
    assert a.renew_lease() == h.ttl + 1
    assert a.refresh_leader("a")
    a.touch_member("a", MEMBER)  # unchanged data, but a new lease: written again
    assert h.raw("leader")[2] != old_lease and h.raw("members/a")[2] == h.raw("leader")[2]
    h.run_for(h.ttl + 1.5, 0.5, lambda: None if a.refresh_leader("a") else pytest.fail("refresh failed"))
    view = b.snapshot()
    assert view.leader == "a" and view.member("a") is not None


def test_member_json_round_trips(h: Any) -> None:
    a, b = h.agent(), h.agent()
    a.touch_member("pg1", MEMBER)
    assert json.loads(h.raw("members/pg1")[0]) == MEMBER
    assert ", " not in h.raw("members/pg1")[0] and ": " not in h.raw("members/pg1")[0]  # compact JSON
    m = b.snapshot().member("pg1")
    assert m is not None and m.data == MEMBER
    assert (m.conn_url, m.api_url, m.state, m.role) == (MEMBER["conn_url"], MEMBER["api_url"], "running", "replica")
    assert (m.xlog_location, m.timeline, m.nofailover) == (50331648, 2, True)
    a.touch_member("pg1", {**MEMBER, "state": "stopped"})
    assert b.snapshot().member("pg1").state == "stopped"


def test_touch_member_skips_unchanged_writes(h: Any) -> None:
    a = h.agent()
    a.touch_member("pg1", MEMBER)
    rev = h.raw("members/pg1")[1]
    a.snapshot()
    a.touch_member("pg1", MEMBER)
    assert h.raw("members/pg1")[1] == rev
    h.delete_raw("members/pg1")  # removed behind our back: the next snapshot notices, the next touch rewrites
    a.snapshot()
    a.touch_member("pg1", MEMBER)
    assert h.raw("members/pg1") is not None


def test_claim_initialize_is_won_by_exactly_one(h: Any) -> None:
    agents = [h.agent() for _ in range(3)]
    assert sum(x.claim_initialize() for x in agents) == 1
    assert agents[0].snapshot().initialize == ""
    agents[1].set_initialize("7300000000000000001")
    assert agents[2].snapshot().initialize == "7300000000000000001"
    assert not agents[2].claim_initialize()
    agents[1].cancel_initialize()
    assert agents[0].snapshot().initialize is None
    assert agents[2].claim_initialize()


def test_set_config_is_create_only(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert b.snapshot().config is None
    assert a.set_config({"ttl": 30, "loop_wait": 10, "postgresql": {"use_pg_rewind": True}})
    assert not b.set_config({"ttl": 99})
    assert b.snapshot().config == {"ttl": 30, "loop_wait": 10, "postgresql": {"use_pg_rewind": True}}


def test_put_key_compare_and_swap(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert b.snapshot().versions.get("failover", 0) == 0
    assert a.put_key("failover", {"leader": "pg1", "member": "pg2"}, version=0)  # create only if absent
    assert not b.put_key("failover", {"leader": "pg1"}, version=0)
    view = b.snapshot()
    assert (view.failover.leader, view.failover.member, view.failover.scheduled_at) == ("pg1", "pg2", None)
    version = view.versions["failover"]
    assert version > 0
    assert a.put_key("failover", {"leader": "pg1", "member": "pg3"}, version=version)
    assert not b.put_key("failover", {}, version=version)  # it changed since b read it
    assert not b.delete_key("failover", version=version)
    assert b.snapshot().failover.member == "pg3"
    assert b.delete_key("failover", version=b.snapshot().versions["failover"])
    assert b.snapshot().failover is None and "failover" not in b.snapshot().versions
    assert a.put_key("config", {"ttl": 7})  # no version: unconditional
    assert b.snapshot().config == {"ttl": 7}
    with pytest.raises(ValueError):
        a.put_key("leader", "pg1")  # the leader key is never written whole


def test_sync_key_round_trip(h: Any) -> None:
    """The sync key as the leader writes it (executor._WriteSync) comes back in the snapshot with its version."""
    from pgha.dcs.keys import sync_value
    a, b = h.agent(), h.agent()
    assert b.snapshot().sync is None and b.snapshot().versions.get("sync", 0) == 0
    assert a.put_key("sync", sync_value("pg1", (), 0), version=0)
    view = b.snapshot()
    assert (view.sync.leader, view.sync.voters, view.sync.quorum) == ("pg1", (), 0)
    version = view.versions["sync"]
    assert version > 0
    assert a.put_key("sync", sync_value("pg1", ("pg2", "pg3"), 1), version=version)
    assert not b.put_key("sync", sync_value("pg2", (), 0), version=version)  # it changed since b read it
    view = b.snapshot()
    assert (view.sync.leader, view.sync.voters, view.sync.quorum) == ("pg1", ("pg2", "pg3"), 1)
    assert view.versions["sync"] != version
    h.write_raw("sync", '{"leader":"PG1","sync_standby":"Pg2"}')  # Patroni's format, names case-insensitive
    assert a.snapshot().sync.voters == ("pg2",) and a.snapshot().sync.lists("PG2")
    h.write_raw("sync", "{}")
    assert a.snapshot().sync is None and a.snapshot().versions["sync"] > 0


def test_failover_key_formats(h: Any) -> None:
    a = h.agent()
    h.write_raw("failover", '{"leader":"pg1","scheduled_at":"2026-12-02T15:00:00+00:00"}')
    view = a.snapshot()
    assert view.failover.leader == "pg1" and view.failover.member is None
    assert view.failover.scheduled_at == 1796223600.0
    h.write_raw("failover", "{}")
    assert a.snapshot().failover is None
    h.write_raw("failover", "pg1:pg2")  # Patroni's legacy format
    assert (a.snapshot().failover.leader, a.snapshot().failover.member) == ("pg1", "pg2")
    h.write_raw("failover", '{"leader":"pg1","scheduled_at":"tomorrow"}')
    assert a.snapshot().failover is None
    assert any("scheduled_at" in w for w in a.last_warnings)


def test_history_and_status_round_trip(h: Any) -> None:
    a, b = h.agent(), h.agent()
    history = [[1, 50331648, "no recovery target specified", "2026-01-01T00:00:00+00:00", "pg1"], [2, 83886080]]
    a.set_history(history)
    a.set_status({"optime": 67108864, "slots": {"pg2": 67108864}, "retain_slots": ["pg2"]})
    view = b.snapshot()
    assert view.history == tuple(tuple(x) for x in history)
    assert view.status_optime == 67108864
    a.set_status({"optime": 67108999})
    assert b.snapshot().status_optime == 67108999


def test_unreadable_member_is_skipped_with_a_warning(h: Any) -> None:
    a, b = h.agent(), h.agent()
    a.touch_member("good", MEMBER)
    h.write_raw("members/bad", "{not json")
    h.write_raw("members/old", "postgres://rep:pw@10.0.0.9:5432/postgres?application_name=http://10.0.0.9:8008/patroni")
    view = b.snapshot()
    assert view.member("bad") is None and view.member("good") is not None
    assert view.member("old").api_url == "http://10.0.0.9:8008/patroni"
    assert any("members/bad" in w for w in b.last_warnings)


def test_unreachable_dcs_raises_dcserror_within_the_timeout(h: Any) -> None:
    dead = h.unreachable_agent()
    calls: list[Callable[[], Any]] = [
        lambda: dead.snapshot(timeout=1), lambda: dead.renew_lease(timeout=1),
        lambda: dead.acquire_leader("x", timeout=1), lambda: dead.refresh_leader("x", timeout=1),
        lambda: dead.release_leader("x", timeout=1), lambda: dead.touch_member("x", MEMBER, timeout=1),
        lambda: dead.claim_initialize(timeout=1), lambda: dead.set_config({}, timeout=1),
        lambda: dead.set_history([], timeout=1), lambda: dead.member_lease_alive("x", timeout=1)]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(DcsError):
            call()
        assert time.monotonic() - start < 1.5
    assert dead.wait_for_leader_change(0.1) is False
    dead.close(revoke=True)  # never raises


def test_member_lease_alive(h: Any) -> None:
    a, b = h.agent(), h.agent()
    assert b.member_lease_alive("pg1") is None
    a.renew_lease()
    a.touch_member("pg1", MEMBER)
    with h.keep_alive(a):
        assert b.member_lease_alive("pg1") is True
        assert a.member_lease_alive("pg1") is False  # our own lease is not "another agent"


def test_member_lease_alive_is_false_or_none_for_a_dead_agent(h: Any) -> None:
    a, b = h.agent(), h.agent()
    a.renew_lease()
    a.touch_member("pg1", MEMBER)
    assert b.member_lease_alive("pg1") is False  # granted, then never renewed
    assert h.until(lambda: b.snapshot().member("pg1") is None, within=h.ttl + 3)
    assert b.member_lease_alive("pg1") is None


def test_wait_for_leader_change_wakes_on_another_agents_acquire(h: Any) -> None:
    a, b = h.agent(), h.agent()
    a.snapshot()
    assert b.acquire_leader("b")
    start = time.monotonic()
    assert a.wait_for_leader_change(5) is True  # the change after a's snapshot is not lost
    assert time.monotonic() - start < 2
    assert a.wait_for_leader_change(0.2) is False
    assert b.release_leader("b")
    assert a.wait_for_leader_change(5) is True
    b.set_status({"optime": 1})
    assert a.wait_for_leader_change(0.3) is False  # other keys do not wake it


# --- etcd only --------------------------------------------------------------------------------------------

def test_etcd_first_endpoint_dead(e: EtcdHarness) -> None:
    a = e.agent(hosts=[("127.0.0.1", free_port()), ("127.0.0.1", e.server.port)])
    assert a.acquire_leader("a")
    assert a.snapshot().leader == "a"


def test_etcd_first_endpoint_silent_shares_the_deadline(e: EtcdHarness) -> None:
    with silent_server() as port:
        a = e.agent(hosts=[("127.0.0.1", port), ("127.0.0.1", e.server.port)])
        start = time.monotonic()
        assert a.snapshot(timeout=2).leader is None
        assert time.monotonic() - start < 2
        start = time.monotonic()
        a.snapshot(timeout=2)  # the endpoint that answered is remembered
        assert time.monotonic() - start < 0.5


def test_etcd_silent_server_times_out_naming_the_endpoint(e: EtcdHarness) -> None:
    with silent_server() as port:
        a = e.agent(hosts=[("127.0.0.1", port)])
        start = time.monotonic()
        with pytest.raises(DcsError, match=f"127.0.0.1:{port}"):
            a.snapshot(timeout=1)
        assert 0.9 < time.monotonic() - start < 1.4


def test_etcd_close_revokes_at_once_and_stops_the_watch(e: EtcdHarness) -> None:
    a, b = e.agent(ttl=30), e.agent()
    assert a.acquire_leader("a")
    a.touch_member("a", MEMBER)
    a.wait_for_leader_change(0.1)
    start = time.monotonic()
    a.close(revoke=True)
    assert time.monotonic() - start < 1.5
    assert not any(t.name.startswith(f"etcd-watch {e.prefix}") for t in threading.enumerate())
    view = b.snapshot()
    assert view.leader is None and view.member("a") is None


def _auth_admin(url: str, path: str, body: dict[str, Any], token: str = "") -> None:
    r = http.post(url + path, json=body, headers={"Authorization": token} if token else {}, timeout=5)
    assert r.status_code == 200, r.text


def test_etcd_auth_and_reauthentication() -> None:
    with EtcdServer() as server:
        url = f"{server.url}/v3"
        _auth_admin(url, "/auth/user/add", {"name": "root", "password": "s3cret-pw"})
        _auth_admin(url, "/auth/user/grant", {"user": "root", "role": "root"})
        _auth_admin(url, "/auth/enable", {})
        harness = EtcdHarness(server)
        try:
            a = harness.agent(username="root", password="s3cret-pw")
            assert a.acquire_leader("a")
            assert a.snapshot().leader == "a" and a.client.auth_count == 1
            token = http.post(url + "/auth/authenticate", json={"name": "root", "password": "s3cret-pw"},
                                  timeout=5).json()["token"]
            _auth_admin(url, "/auth/disable", {}, token)  # drops every token: a's is invalid from now on
            _auth_admin(url, "/auth/enable", {})
            assert a.refresh_leader("a")
            assert a.snapshot().leader == "a" and a.client.auth_count == 2
            bad = harness.agent(username="root", password="wrong-pw")
            with pytest.raises(DcsError) as err:
                bad.snapshot()
            assert "authentication" in str(err.value) and "wrong-pw" not in str(err.value)
            assert "s3cret" not in repr(a) and "s3cret" not in repr(a.client)
        finally:
            harness.close()


def test_etcd_watch_survives_idle_reconnects(e: EtcdHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd3._LeaderWatch, "IDLE", 0.3)  # the stream is re-opened every 0.3 s when idle
    a, b = e.agent(), e.agent()
    a.snapshot()
    assert a.wait_for_leader_change(1.2) is False
    assert b.acquire_leader("b")
    assert a.wait_for_leader_change(5) is True


def test_etcd_watch_reconnects_after_an_etcd_restart() -> None:
    with EtcdServer() as server:
        harness = EtcdHarness(server)
        try:
            a, b = harness.agent(ttl=10), harness.agent(ttl=10)
            a.snapshot()
            assert a.wait_for_leader_change(0.2) is False
            server.stop()
            with pytest.raises(DcsError):
                b.acquire_leader("b", timeout=0.5)
            server.start()
            assert b.acquire_leader("b")
            assert a.wait_for_leader_change(5) is True
        finally:
            harness.close()


def test_etcd_paused_server_times_out_then_recovers(e: EtcdHarness) -> None:
    a = e.agent()
    assert a.acquire_leader("a")
    e.server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(DcsError, match="timed out"):
            a.snapshot(timeout=1)
        assert time.monotonic() - start < 1.4
    finally:
        e.server.resume()
    assert a.refresh_leader("a")


def test_etcd_tls_with_client_certificate(tmp_path: Path) -> None:
    tls = make_test_certs(tmp_path)
    with EtcdServer(tls=tls) as server:
        harness = EtcdHarness(server)
        try:
            a = harness.agent(protocol="https", cacert=tls.cacert, cert=tls.cert, key=tls.key)
            assert a.acquire_leader("a") and a.snapshot().leader == "a"
            no_cert = harness.agent(protocol="https", cacert=tls.cacert)
            with pytest.raises(DcsError, match="SSL"):
                no_cert.snapshot(timeout=1)
            no_ca = harness.agent(protocol="https", cert=tls.cert, key=tls.key)
            with pytest.raises(DcsError, match="CERTIFICATE_VERIFY_FAILED"):
                no_ca.snapshot(timeout=1)
        finally:
            harness.close()


# --- memory only ------------------------------------------------------------------------------------------
def test_memory_partition_and_outage() -> None:
    h = MemoryHarness()
    a, b = h.agent(), h.agent()
    assert a.acquire_leader("a")
    h.store.set_reachable(a.agent_id, False)
    with pytest.raises(DcsError):
        a.refresh_leader("a")
    assert b.snapshot().leader == "a"
    assert h.until(lambda: b.snapshot().leader is None, within=h.ttl + 0.5)  # a's lease ran out meanwhile
    h.store.set_reachable(a.agent_id, True)
    assert not a.refresh_leader("a")
    assert b.acquire_leader("b")
    h.store.set_outage(True)
    for agent in (a, b):
        with pytest.raises(DcsError):
            agent.snapshot()
    h.t += h.ttl * 5
    h.store.set_outage(False)  # leases get a full TTL again, as etcd's new leader gives them
    assert a.snapshot().leader == "b"
    assert b.refresh_leader("b")


# --- zookeeper only ---------------------------------------------------------------------------------------
@pytest.fixture
def z(zookeeper_server: ZooKeeperServer) -> Iterator[ZooKeeperHarness]:
    harness = ZooKeeperHarness(zookeeper_server)
    yield harness
    harness.close()


def _ok(call: Callable[[], bool]) -> Callable[[], bool]:
    def attempt() -> bool:
        try:
            return call()
        except DcsError:
            return False
    return attempt


def test_zookeeper_znodes_are_patronis(z: ZooKeeperHarness) -> None:
    a = z.agent()
    a.renew_lease()
    assert a.acquire_leader("a") and a.claim_initialize()
    a.touch_member("a", MEMBER)
    a.set_status({"optime": 5})
    assert a.put_key("failover", {"leader": "a"}, version=0)
    session = a._client.session
    leader, member = z.zk.get(z.prefix + "leader"), z.zk.get(z.prefix + "members/a")
    assert leader[0] == b"a" and leader[1].ephemeralOwner == session  # a bare name, on our session
    assert json.loads(member[0]) == MEMBER and member[1].ephemeralOwner == session
    for rel, value in (("status", b'{"optime":5}'), ("initialize", b""), ("failover", b'{"leader":"a"}')):
        data, stat = z.zk.get(z.prefix + rel)
        assert (data, stat.ephemeralOwner) == (value, 0)  # persistent, compact JSON
    assert a.snapshot().versions["failover"] == z.zk.get(z.prefix + "failover")[1].mzxid


def test_zookeeper_close_revokes_at_once(z: ZooKeeperHarness) -> None:
    a, b = z.agent(ttl=30), z.agent()
    a.renew_lease()
    assert a.acquire_leader("a")
    a.touch_member("a", MEMBER)
    start = time.monotonic()
    a.close(revoke=True)
    assert time.monotonic() - start < 2
    view = b.snapshot()
    assert view.leader is None and view.member("a") is None


def test_zookeeper_close_without_revoke_lets_the_session_run_out(z: ZooKeeperHarness) -> None:
    a, b = z.agent(), z.agent()
    a.renew_lease()
    assert a.acquire_leader("a")
    a.close(revoke=False)
    assert b.snapshot().leader == "a"
    assert z.until(lambda: b.snapshot().leader is None, within=z.ttl + 3)


def test_zookeeper_first_host_dead(z: ZooKeeperHarness) -> None:
    a = z.agent(hosts=[("127.0.0.1", free_port()), ("127.0.0.1", z.server.port)])
    assert a.acquire_leader("a") and a.snapshot().leader == "a"


def test_zookeeper_silent_server_times_out_naming_the_ensemble(z: ZooKeeperHarness) -> None:
    with silent_server() as port:
        a = z.agent(hosts=[("127.0.0.1", port)])
        start = time.monotonic()
        with pytest.raises(DcsError, match=f"ZooKeeper 127.0.0.1:{port}: not connected"):
            a.snapshot(timeout=1)
        assert 0.9 < time.monotonic() - start < 1.4
        a.close()


def test_zookeeper_paused_server_times_out_then_recovers(z: ZooKeeperHarness) -> None:
    a = z.agent(ttl=10)
    a.renew_lease()
    assert a.acquire_leader("a")
    z.server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(DcsError, match="timed out"):
            a.snapshot(timeout=1)
        assert time.monotonic() - start < 1.4
    finally:
        z.server.resume()
    assert z.until(_ok(lambda: a.refresh_leader("a")), within=10)  # same session: the leader znode is still ours


def test_zookeeper_renew_counts_the_negotiated_timeout_and_half_on_a_follower(
        z: ZooKeeperHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    assert z.agent(ttl=100).renew_lease() == 60.0  # the server's maxSessionTimeout
    monkeypatch.setattr(ZooKeeperDcs, "_server_mode", lambda *_: "follower")
    assert z.agent().renew_lease() == z.ttl / 2


def test_zookeeper_set_ttl_retires_the_old_session(z: ZooKeeperHarness) -> None:
    a = z.agent()
    a.renew_lease()
    assert a.acquire_leader("a")
    a.touch_member("a", MEMBER)
    a.set_ttl(z.ttl + 1)
    assert a.renew_lease() == z.ttl + 1
    assert len(a._old) == 1 and a.snapshot().leader == "a" and len(a._old) == 1  # still owns our znodes
    assert a.refresh_leader("a")
    a.touch_member("a", MEMBER)
    assert a.snapshot().leader == "a" and a._old == []


def test_zookeeper_snapshot_is_consistent_under_writes(z: ZooKeeperHarness) -> None:
    a = z.agent()
    a.set_history([[0]])
    a.set_status({"optime": 0})
    stop = threading.Event()

    def writer() -> None:  # history and status always move together, in one multi; 50 times a second
        for n in range(1, 100000):
            if stop.wait(0.02):
                return
            tx = z.zk.transaction()
            tx.set_data(z.prefix + "history", json.dumps([[n]]).encode())
            tx.set_data(z.prefix + "status", json.dumps({"optime": n}).encode())
            tx.commit()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            view = a.snapshot(timeout=2)
            assert view.history[0][0] == view.status_optime
    finally:
        stop.set()
        thread.join(5)


def test_zookeeper_auth_data(z: ZooKeeperHarness) -> None:
    a = z.agent(auth_data=[("digest", "pgha:s3cret-pw")])
    assert a.acquire_leader("a") and a.snapshot().leader == "a"
    assert "s3cret" not in repr(a)
    bad = z.agent(auth_data=[("no-such-scheme", "x")])
    with pytest.raises(DcsError, match="authentication failed"):
        bad.snapshot(timeout=1.5)


def test_local_zookeeper_for_pgha_up(tmp_path: Path) -> None:
    from pgha.config import load_config, load_ctl_config
    from pgha.local import zookeeper as local_zk
    from pgha.local.layout import Layout, ctl_config, dump_yaml, node_config
    port = free_port()
    proc = local_zk.start_zookeeper(str(tmp_path / "zookeeper"), port, str(tmp_path / "zookeeper.log"))
    try:
        local_zk.wait_healthy(port, timeout=30, proc=proc)
        layout = Layout(str(tmp_path), 1, 20000)
        pw = collections.defaultdict(lambda: "pw-1")  # whatever passwords layout asks for
        node = local_zk.use_zookeeper(node_config(layout, 0, pw, {"ttl": 4, "loop_wait": 1}), port)
        (tmp_path / "node.yml").write_text(dump_yaml(node))
        cfg, _ = load_config(str(tmp_path / "node.yml"))
        assert cfg.etcd is None and cfg.zookeeper.hosts == (("127.0.0.1", port),)
        (tmp_path / "ctl.yml").write_text(dump_yaml(local_zk.use_zookeeper(ctl_config(layout), port)))
        assert load_ctl_config(str(tmp_path / "ctl.yml"), None, {}).dcs == cfg.zookeeper
        dcs = local_zk.local_dcs(port, "pgha-local")
        assert dcs.claim_initialize() and dcs.snapshot().initialize == ""
        dcs.close()
    finally:
        proc.kill()  # by the PID we started
        proc.wait(10)


def test_delete_cluster_removes_every_key_of_the_cluster_only(h: Any) -> None:
    a, b = h.agent(), h.agent()
    scope = h.scope
    h.scope = scope + "x"  # a neighbour whose prefix starts with ours: it must survive
    try:
        neighbour = h.agent()
    finally:
        h.scope = scope
    for dcs, name in ((a, "a"), (neighbour, "n")):
        assert dcs.renew_lease() and dcs.acquire_leader(name)
        dcs.touch_member(name, {**MEMBER, "state": "running"})
        assert dcs.claim_initialize() and dcs.set_config({"ttl": 30})
        dcs.set_history([[1, 1, "r"]])
        dcs.set_status({"optime": 5})
        assert dcs.put_key("failover", {"leader": name})
    b.delete_cluster()
    view = b.snapshot()
    assert (view.leader, view.members, view.initialize, view.config, view.history, view.failover) == (
        None, (), None, None, (), None)
    other = neighbour.snapshot()
    assert other.leader == "n" and other.config == {"ttl": 30} and other.initialize == ""
    b.delete_cluster()  # nothing left to delete: not an error
    neighbour.close()
