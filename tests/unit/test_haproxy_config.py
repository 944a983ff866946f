"""The router's pure parts with plain values: the HAProxy configuration, the runtime API's `show servers state`
parsing, and the plan of a leader change (what is done at once, what is waited for)."""

from __future__ import annotations

from pgha.core.model import ClusterView, Member
from pgha.router.follow import Cmd, plan_change
from pgha.router.haproxy_config import (Checks, RouterPorts, Server, api_address, render, server_name,
                                        servers_from_view)
from pgha.router.runtime import parse_servers_state

SERVERS = [Server("node0", "127.0.0.1", 5440, "127.0.0.1", 5540),
           Server("node1", "127.0.0.1", 5441, "127.0.0.1", 5541)]
PORTS = RouterPorts(rw=5740, ro=5741, stats=5742)


def block(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"listen {name}")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")), len(lines))
    return [line.strip() for line in lines[start + 1:end]]


def test_rw_block_checks_primary_and_lists_every_member():
    rw = block(render(SERVERS, PORTS, "/tmp/h.sock"), "rw")
    assert "bind 127.0.0.1:5740" in rw
    assert "mode tcp" in rw
    assert "option httpchk OPTIONS /primary" in rw
    assert "http-check expect status 200" in rw
    assert "default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions" in rw
    assert "server node0 127.0.0.1:5440 maxconn 100 check port 5540" in rw
    assert "server node1 127.0.0.1:5441 maxconn 100 check port 5541" in rw


def test_ro_block_checks_replica():
    ro = block(render(SERVERS, PORTS, "/tmp/h.sock"), "ro")
    assert "bind 127.0.0.1:5741" in ro
    assert "option httpchk OPTIONS /replica" in ro
    assert "http-check expect status 200" in ro
    assert sum(line.startswith("server ") for line in ro) == 2


def test_stats_page_and_admin_socket():
    text = render(SERVERS, PORTS, "/tmp/h.sock")
    assert "    stats socket /tmp/h.sock mode 600 level admin" in text.splitlines()
    stats = block(text, "stats")
    assert "mode http" in stats and "bind 127.0.0.1:5742" in stats and "stats enable" in stats


def test_check_timing_and_bind_address_are_options():
    text = render(SERVERS, RouterPorts(5000, 5001, 7000, bind="0.0.0.0"), "/s",
                  Checks(inter="3s", fall=3, rise=2))
    rw = block(text, "rw")
    assert "bind 0.0.0.0:5000" in rw
    assert "default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions" in rw


def test_api_on_another_host_or_https():
    s = Server("a", "10.0.0.1", 5432, "10.0.0.2", 8008, api_tls=True)
    rw = block(render([s], PORTS, "/s"), "rw")
    assert "server a 10.0.0.1:5432 maxconn 100 check addr 10.0.0.2 port 8008 check-ssl verify none" in rw


def test_servers_from_view_reads_conn_and_api_urls_and_skips_unusable_members():
    view = ClusterView(leader="b", members=(
        Member("b", conn_url="postgres://127.0.0.1:5441/postgres", api_url="http://127.0.0.1:5541/patroni"),
        Member("a", conn_url="postgres://127.0.0.1:5440/postgres", api_url="https://127.0.0.1:5540/patroni"),
        Member("c", conn_url="", api_url="http://127.0.0.1:5542/patroni"),
        Member("d", conn_url="postgres://127.0.0.1:5443/postgres", api_url="not a url"),
    ))
    assert servers_from_view(view) == [Server("a", "127.0.0.1", 5440, "127.0.0.1", 5540, True),
                                       Server("b", "127.0.0.1", 5441, "127.0.0.1", 5541, False)]


def test_names_and_addresses():
    assert server_name("pg node/1") == "pg_node_1"
    assert server_name("node-1.a:b") == "node-1.a:b"
    assert api_address("http://h:8008/patroni") == ("h", 8008, False)
    assert api_address("https://h/patroni") == ("h", 443, True)
    assert api_address("ftp://h/") is None


def test_parse_servers_state():
    text = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
            "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
            "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n"
            "3 rw 1 node0 127.0.0.1 2 0 1 1 5 6 3 1 6 0 0 0 - 5440 -\n"
            "3 rw 2 node1 127.0.0.1 0 0 1 1 5 6 2 0 6 0 0 0 - 5441 -\n"
            "3 rw 3 node2 127.0.0.1 2 1 1 1 5 6 3 1 6 0 0 0 - 5442 -\n")
    states = parse_servers_state(text)
    assert [(s.name, s.port, s.up, s.maint) for s in states] == [
        ("node0", 5440, True, False), ("node1", 5441, False, False), ("node2", 5442, False, True)]
    assert parse_servers_state("Can't find backend.\n") == []


def test_plan_of_a_failover_downs_the_old_leader_at_once_and_waits_for_the_new_one():
    cmds, probes = plan_change("a", "b", now=100.0, ttl=4, rejoin_timeout=60)
    assert cmds == [Cmd("health", "rw", "a", "down"), Cmd("state", "rw", "a", "drain"), Cmd("shutdown", "rw", "a"),
                    Cmd("state", "rw", "b", "ready"), Cmd("health", "ro", "b", "down"),
                    Cmd("state", "ro", "b", "drain")]
    waits = {(p.member, p.path, p.want_ok): p for p in probes}
    new_up = waits[("b", "/primary", True)]
    assert new_up.on_success == [Cmd("health", "rw", "b", "up")] and new_up.deadline == 109.0
    assert new_up.interval == 0.05
    old_back = waits[("a", "/replica", True)]
    assert old_back.on_success == [Cmd("state", "ro", "a", "ready"), Cmd("health", "ro", "a", "up")]
    assert old_back.deadline == 160.0
    # drain never outlives its probe: on success and on timeout alike the server leaves it, marked down
    assert waits[("a", "/primary", False)].on_success == [Cmd("health", "rw", "a", "down"),
                                                         Cmd("state", "rw", "a", "ready")]
    assert waits[("b", "/replica", False)].on_success == [Cmd("health", "ro", "b", "down"),
                                                         Cmd("state", "ro", "b", "ready")]
    for key in (("a", "/primary", False), ("b", "/replica", False)):
        assert waits[key].on_success == waits[key].on_timeout


def test_plan_when_the_leader_key_vanishes_or_appears():
    cmds, probes = plan_change("a", None, now=0.0, ttl=4, rejoin_timeout=60)
    assert {c.member for c in cmds} == {"a"} and {p.member for p in probes} == {"a"}
    cmds, probes = plan_change(None, "b", now=0.0, ttl=4, rejoin_timeout=60)
    assert {c.member for c in cmds} == {"b"} and {(p.path, p.want_ok) for p in probes} == {
        ("/primary", True), ("/replica", False)}
    assert plan_change("a", "a", now=0.0, ttl=4, rejoin_timeout=60) == ([], [])
