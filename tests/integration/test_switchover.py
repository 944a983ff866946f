"""Planned switchover, manual failover and the other write endpoints, end to end on a real 3-node cluster.

Real etcd, PostgreSQL 15 and agents (LocalCluster). Every wait polls a condition under a deadline.
"""

from __future__ import annotations

import datetime

import pytest
import requests

from .conftest import api_auth, connect, wait_for
from .test_cluster import leader_and_replicas, snapshot

pytestmark = pytest.mark.integration


def api(cluster, i: int, path: str) -> str:
    return f"http://127.0.0.1:{cluster.layout.api_port(i)}{path}"


def post(cluster, i: int, path: str, body=None, timeout: float = 60, method: str = "POST", auth=True):
    credentials = api_auth(cluster.layout) if auth else None
    return requests.request(method, api(cluster, i, path), json=body, timeout=timeout, auth=credentials)


def settled(cluster):
    """One leader running as primary, every other member streaming from it, no request pending."""
    view = snapshot(cluster)
    if view.leader is None or view.failover is not None:
        return None
    leader = view.member(view.leader)
    others = [m for m in view.members if m.name != view.leader]
    if leader is None or leader.role != "primary" or len(others) != cluster.layout.nodes - 1:
        return None
    if not all(m.data.get("replication_state") == "streaming" for m in others):
        return None
    return view


def written_everywhere(cluster, leader: int, marker: str) -> None:
    with connect(cluster.layout, leader) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS handover (note text primary key)")
        conn.execute("INSERT INTO handover VALUES (%s)", (marker,))
    for i in range(cluster.layout.nodes):
        with connect(cluster.layout, i) as conn:
            wait_for(lambda: conn.execute("SELECT 1 FROM handover WHERE note = %s", (marker,)).fetchone(), 30,
                     f"{marker} on node{i}")


def test_switchover_to_a_named_candidate(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    old, replicas = leader_and_replicas(cluster)
    written_everywhere(cluster, old, "before")
    target = f"node{replicas[0]}"
    r = post(cluster, replicas[1], "/switchover", {"leader": view.leader, "candidate": target})
    assert (r.status_code, r.text) == (200, f'Successfully switched over to "{target}"')
    # the old leader stops saying primary at once, not a ttl later (HAProxy's checks must not send writes there)
    wait_for(lambda: requests.get(api(cluster, old, "/primary"), timeout=2).status_code == 503, 1.5,
             "the old leader's /primary to answer 503", interval=0.05)
    after = wait_for(lambda: settled(cluster), 60, "the old leader streaming from the new one")
    assert after.leader == target
    assert any(line[-1] == target for line in after.history if len(line) >= 5)
    written_everywhere(cluster, replicas[0], "after named switchover")  # nothing lost: "before" is still there
    with connect(cluster.layout, old) as conn:
        assert conn.execute("SELECT count(*) FROM handover WHERE note = 'before'").fetchone()[0] == 1
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_switchover_without_candidate_and_failover_naming_a_member(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    r = post(cluster, 0, "/switchover", {"leader": view.leader})
    assert r.status_code == 200 and r.text.startswith("Successfully switched over to ")
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    target = next(m.name for m in view.members if m.name != view.leader)
    r = post(cluster, 0, "/failover", {"candidate": target})
    assert (r.status_code, r.text) == (200, f'Successfully failed over to "{target}"')
    assert wait_for(lambda: settled(cluster), 60, "a settled cluster").leader == target


def test_impossible_requests_get_patronis_codes_and_change_nothing(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    other = next(m.name for m in view.members if m.name != view.leader)
    cases = [
        ("/switchover", {"candidate": other}, 400, "Switchover could be performed only from a specific leader"),
        ("/failover", {"leader": view.leader}, 400, "Failover could be performed only to a specific candidate"),
        ("/switchover", {"leader": view.leader, "candidate": view.leader}, 400,
         "Switchover target and source are the same"),
        ("/switchover", {"leader": other, "candidate": view.leader}, 412, "leader name does not match"),
        ("/switchover", {"leader": view.leader, "candidate": "nobody"}, 412, "candidate does not exists"),
        ("/failover", {"candidate": other, "scheduled_at": "2030-01-01T00:00:00+00:00"}, 400,
         "Failover can't be scheduled"),
        ("/switchover", {"leader": view.leader, "scheduled_at": "2001-01-01T00:00:00+00:00"}, 422,
         "Cannot schedule switchover in the past"),
        ("/switchover", {"leader": view.leader, "scheduled_at": "2030-01-01T00:00:00"}, 400,
         "Timezone information is mandatory for the scheduled switchover"),
        ("/switchover", {"leader": 7}, 400, "leader: expected a string, got int"),
        ("/restart", {"role": "boss"}, 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
        ("/restart", {"colour": "red"}, 400, "Unknown filter for the scheduled restart: colour"),
        ("/reinitialize", {"force": "yes"}, 400, 'force: expected true or false, got "yes"'),
    ]
    for path, body, code, text in cases:
        r = post(cluster, 0, path, body)
        assert (r.status_code, r.text) == (code, text), (path, body)
    bad = requests.post(api(cluster, 0, "/switchover"), data=b"{not json", timeout=5,
                        headers={"Content-Type": "application/json"}, auth=api_auth(cluster.layout))
    assert bad.status_code == 400
    anonymous = post(cluster, 0, "/switchover", {"leader": view.leader, "candidate": other}, auth=False)
    assert (anonymous.status_code, anonymous.text) == (401, "no auth header received")
    assert snapshot(cluster).leader == view.leader and snapshot(cluster).failover is None


def test_scheduled_switchover_runs_at_its_time_and_can_be_deleted(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    r = post(cluster, 0, "/switchover", {"leader": view.leader, "scheduled_at": later})
    assert (r.status_code, r.text) == (202, "Switchover scheduled")
    assert snapshot(cluster).failover.scheduled_at is not None
    r = post(cluster, 0, "/switchover", method="DELETE")
    assert (r.status_code, r.text) == (200, "scheduled switchover deleted")
    assert post(cluster, 0, "/switchover", method="DELETE").status_code == 404
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=4)).isoformat()
    assert post(cluster, 0, "/switchover", {"leader": view.leader, "scheduled_at": soon}).status_code == 202
    assert wait_for(lambda: snapshot(cluster).leader not in (None, view.leader), 40,
                    "the scheduled switchover to happen")
    wait_for(lambda: settled(cluster), 60, "a settled cluster")


def test_restart_reload_and_reinitialize_go_through_the_loop(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    leader, replicas = leader_and_replicas(cluster)
    replica = replicas[0]
    started = requests.get(api(cluster, replica, "/patroni"), timeout=5).json()["postmaster_start_time"]
    r = post(cluster, replica, "/restart", {})
    assert (r.status_code, r.text) == (200, "restarted successfully")
    assert requests.get(api(cluster, replica, "/patroni"), timeout=5).json()["postmaster_start_time"] != started
    assert post(cluster, replica, "/restart", {"role": "primary"}).text == "restart conditions are not satisfied"

    r = post(cluster, leader, "/reinitialize", {})
    assert (r.status_code, r.text) == (503, "I am the leader, can not reinitialize")
    r = post(cluster, replica, "/reinitialize", {"force": True})
    assert (r.status_code, r.text) == (200, "reinitialize started")
    wait_for(lambda: settled(cluster), 120, "the reinitialized replica streaming again")
    assert snapshot(cluster).leader == view.leader

    r = post(cluster, leader, "/config", {"postgresql": {"parameters": {"work_mem": "7MB"}}}, method="PATCH")
    assert r.status_code == 200 and r.json()["postgresql"]["parameters"]["work_mem"] == "7MB"
    for i in range(cluster.layout.nodes):
        with connect(cluster.layout, i) as conn:
            wait_for(lambda: conn.execute("SHOW work_mem").fetchone()[0] == "7MB", 30, f"work_mem on node{i}")
    r = post(cluster, leader, "/config", {"ttl": "soon"}, method="PATCH")
    assert r.status_code == 400 and "ttl" in r.text
    assert snapshot(cluster).config["ttl"] != "soon"
    assert (post(cluster, leader, "/reload", {}).status_code, post(cluster, leader, "/reload").text) == \
        (202, "reload scheduled")


def test_promotion_skips_timeline_ids_claimed_in_the_dcs(cluster):
    """A claimed id (a node that promoted and died before anyone saw it) is never reused: the next promotion
    lands past it, and the whole cluster follows the jump."""
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    current = view.member(view.leader).timeline
    claimed = current + 3
    dcs = cluster.dcs()
    try:
        dcs.set_status({"optime": view.status_optime or 0, "pgha_timeline": claimed}, timeout=5)
    finally:
        dcs.close(revoke=False)
    target = next(m.name for m in view.members if m.name != view.leader)
    r = post(cluster, 0, "/switchover", {"leader": view.leader, "candidate": target})
    assert r.status_code == 200, r.text
    after = wait_for(lambda: settled(cluster), 60, "the cluster settled after the switchover")
    assert after.leader == target and after.member(target).timeline == claimed + 1
    written_everywhere(cluster, int(target.removeprefix("node")), f"after the jump to {claimed + 1}")


def test_a_scheduled_restart_runs_at_its_time(cluster):
    view = wait_for(lambda: settled(cluster), 60, "a settled cluster")
    replica = next(int(m.name.removeprefix("node")) for m in view.members if m.name != view.leader)
    started = requests.get(api(cluster, replica, "/patroni"), timeout=5).json()["postmaster_start_time"]
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)).isoformat()
    r = post(cluster, replica, "/restart", {"schedule": soon, "role": "replica"})
    assert (r.status_code, r.text) == (202, "Restart scheduled")
    wait_for(lambda: (snapshot(cluster).member(f"node{replica}").data.get("scheduled_restart") or {}).get(
        "schedule") == soon, 10, "the scheduled restart in the member key")
    wait_for(lambda: requests.get(api(cluster, replica, "/patroni"), timeout=5).json().get(
        "postmaster_start_time") not in (None, started), 40, "the scheduled restart to happen")
    assert post(cluster, replica, "/restart", method="DELETE").status_code == 404  # done: nothing scheduled
