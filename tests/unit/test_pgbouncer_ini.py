"""The [databases] rewrite of pgbouncer.ini (src/pgha/pgbouncer/ini.py, files.py): plain values in, text out."""

from __future__ import annotations

import os
import stat

import pytest

from pgha.pgbouncer import files
from pgha.pgbouncer.ini import IniError, database_entries, parse_connstr, point_databases, quote, split_lines, targets

SAMPLE = (
    "; managed by hand, except host/port below\n"
    "[databases]\n"
    "appdb = host=10.0.0.1 port=5432 dbname=app pool_size=20\n"
    "  # an indented comment = host=nothing\n"
    "reports=dbname=reports host=10.0.0.1   port=5433  \n"
    "quoted = host='old host' password='it''s' port=5432\n"
    "* = host=10.0.0.1 port=5432\n"
    "%include /etc/pgbouncer/extra.ini\n"
    "\n"
    "[pgbouncer]\n"
    "listen_port = 6432 ; not a comment for PgBouncer\n"
    "host = 10.0.0.1\n"
    "auth_file = /etc/pgbouncer/userlist.txt\n"
)


def test_every_entry_points_at_the_new_leader_and_nothing_else_changes():
    out = point_databases(SAMPLE, "10.0.0.2", 6000)
    assert out.splitlines()[2] == "appdb = host=10.0.0.2 port=6000 dbname=app pool_size=20"
    assert out.splitlines()[4] == "reports=dbname=reports host=10.0.0.2   port=6000  "
    assert out.splitlines()[5] == "quoted = host=10.0.0.2 password='it''s' port=6000"
    assert out.splitlines()[6] == "* = host=10.0.0.2 port=6000"
    changed = {2, 4, 5, 6}
    old_lines, new_lines = SAMPLE.splitlines(keepends=True), out.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    for i, (a, b) in enumerate(zip(old_lines, new_lines)):
        if i not in changed:
            assert a == b, i  # comments, %include, [pgbouncer] (its own `host =` too): byte-identical
    assert targets(out) == {"appdb": ("10.0.0.2", 6000), "reports": ("10.0.0.2", 6000),
                            "quoted": ("10.0.0.2", 6000), "*": ("10.0.0.2", 6000)}


def test_nothing_to_change_returns_the_same_text():
    once = point_databases(SAMPLE, "10.0.0.2", 6000)
    assert point_databases(once, "10.0.0.2", 6000) is once


def test_missing_host_and_port_are_appended():
    text = "[databases]\nlocal = dbname=x\nbare =\n"
    out = point_databases(text, "127.0.0.1", 5441)
    assert out == "[databases]\nlocal = dbname=x host=127.0.0.1 port=5441\nbare =host=127.0.0.1 port=5441\n"


def test_crlf_endings_and_odd_bytes_are_kept():
    text = "[databases]\r\nappdb = host=a port=1\r\n[pgbouncer]\r\nx = \u00e9\udcff\r\n"
    out = point_databases(text, "b", 2)
    assert out == "[databases]\r\nappdb = host=b port=2\r\n[pgbouncer]\r\nx = \u00e9\udcff\r\n"


def test_only_the_named_entries_change():
    out = point_databases(SAMPLE, "10.0.0.9", 7000, only=frozenset({"appdb"}))
    assert targets(out)["appdb"] == ("10.0.0.9", 7000)
    assert targets(out)["reports"] == ("10.0.0.1", 5433)


def test_a_database_section_given_twice_and_other_sections_untouched():
    text = "[databases]\na = host=x\n[users]\nbob = pool_mode=session host=x\n[databases]\nb = port=1\n"
    out = point_databases(text, "y", 2)
    assert out == ("[databases]\na = host=y port=2\n[users]\nbob = pool_mode=session host=x\n"
                   "[databases]\nb = port=2 host=y\n")


def test_a_host_that_needs_quotes_is_quoted():
    assert quote("plain") == "plain" and quote("has space") == "'has space'" and quote("o'k") == "'o''k'"
    out = point_databases("[databases]\na = host=x port=1\n", "h h", 1)
    assert out == "[databases]\na = host='h h' port=1\n"
    assert targets(out) == {"a": ("h h", 1)}


def test_connstr_parsing_follows_pgbouncer():
    pairs = parse_connstr("host=a  port = 5 password='x y''z' dbname=d")
    assert [(p.key, p.value) for p in pairs] == [("host", "a"), ("port", "5"), ("password", "x y'z"), ("dbname", "d")]
    with pytest.raises(IniError):
        parse_connstr("host")
    with pytest.raises(IniError):
        parse_connstr("password='open")
    with pytest.raises(IniError, match="line 2"):
        database_entries(split_lines("[databases]\na = host='open\n"))


def test_split_lines_splits_on_newline_only():
    assert split_lines("a\x0cb\nc\rd\n\ne") == ["a\x0cb\n", "c\rd\n", "\n", "e"]


def test_replace_keeps_mode_and_owner_and_follows_a_symlink(tmp_path):
    real = tmp_path / "real.ini"
    real.write_bytes(SAMPLE.encode())
    os.chmod(real, 0o640)
    link = tmp_path / "pgbouncer.ini"
    link.symlink_to(real)
    before = os.stat(real)
    files.replace_ini(str(link), point_databases(files.read_ini(str(link)), "10.0.0.2", 6000))
    assert link.is_symlink()
    after = os.stat(real)
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert targets(real.read_text())["appdb"] == ("10.0.0.2", 6000)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pgha-")] == []  # no temporary file left


# --- the follower's decisions (pgbouncer/follow.py) with stand-ins: a DCS that returns set views, a console
# that records commands, REST answers set by the test -----------------------------------------------------------

from pgha.core.model import ClusterView, Failover, Member  # noqa: E402
from pgha.pgbouncer.follow import Bouncer  # noqa: E402


class FakeDcs:
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def snapshot(self, timeout=None) -> ClusterView:
        return self.view

    def wait_for_leader_change(self, timeout: float) -> bool:
        return True


class FakePending:
    def __init__(self, done: bool) -> None:
        self.done, self.error, self.closed = done, None, False
        self.sent = 0.0

    def poll(self, timeout: float = 0.0) -> bool:
        return self.done

    def close(self) -> None:
        self.closed = True


class FakeAdmin:
    dsn = "host=127.0.0.1 port=1 user=postgres"

    def __init__(self) -> None:
        self.log: list[str] = []
        self.servers: list[dict] = []
        self.pause_done = True

    def command(self, sql: str, timeout=None):
        self.log.append(sql)
        return self.servers if sql == "SHOW SERVERS" else []

    def send(self, sql: str):
        self.log.append(sql)
        return FakePending(self.pause_done)

    def keep_spare(self) -> None:
        pass

    def close(self) -> None:
        pass


def member(name: str, port: int) -> Member:
    return Member(name, conn_url=f"postgres://127.0.0.1:{port}/postgres",
                  api_url=f"http://127.0.0.1:{port + 100}/patroni", state="running")


MEMBERS = (member("node0", 5440), member("node1", 5441))


def view(leader, failover=None) -> ClusterView:
    return ClusterView(leader=leader, members=MEMBERS, failover=failover, config={"ttl": 5})


@pytest.fixture()
def bouncer(tmp_path):
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text("[databases]\npostgres = host=127.0.0.1 port=5440 dbname=postgres\n[pgbouncer]\nx = 1\n")
    codes = {}
    dcs, admin = FakeDcs(view("node0")), FakeAdmin()
    b = Bouncer(dcs, admin, str(ini), kill_after=0.0, probe_interval=0.0,
                is_primary=lambda server: codes.get((server.name, "/primary")) == 200)
    b.step()  # start-up: already on node0, nothing to do
    return b, dcs, admin, codes, ini


def test_start_up_on_the_leader_changes_nothing(bouncer):
    b, dcs, admin, codes, ini = bouncer
    assert admin.log == [] and b.switch is None


def test_failover_waits_for_primary_then_rewrites_reloads_and_reconnects(bouncer):
    b, dcs, admin, codes, ini = bouncer
    dcs.view = view("node1")
    b.step()
    assert admin.log == [] and targets(ini.read_text())["postgres"] == ("127.0.0.1", 5440)  # not promoted yet
    codes[("node1", "/primary")] = 200
    b.step()
    assert targets(ini.read_text())["postgres"] == ("127.0.0.1", 5441)
    assert ini.read_text().endswith("[pgbouncer]\nx = 1\n")
    assert admin.log == ["RELOAD", "RECONNECT"]
    admin.servers = [{"database": "postgres", "addr": "127.0.0.1", "port": "5440"},
                     {"database": "other", "addr": "127.0.0.1", "port": "5441"}]
    b.step()  # kill_after 0: the database still on the old leader is killed and resumed
    assert admin.log[2:] == ["SHOW SERVERS", 'KILL "postgres"', 'RESUME "postgres"']


def test_switchover_pauses_then_resumes_on_the_new_leader(bouncer):
    b, dcs, admin, codes, ini = bouncer
    dcs.view = view("node0", Failover(leader="node0", member="node1"))
    b.step()
    assert admin.log == ["PAUSE"] and b.paused_for == "node0"
    b.step()
    assert admin.log == ["PAUSE"]  # once
    dcs.view = view(None, Failover(leader="node0", member="node1"))  # the key between two holders
    b.step()
    assert admin.log == ["PAUSE"] and b.paused_for == "node0"
    dcs.view = view("node1", Failover(leader="node0", member="node1"))
    b.step()
    assert admin.log == ["PAUSE"]  # node1 not primary yet: clients stay held
    codes[("node1", "/primary")] = 200
    b.step()
    assert admin.log == ["PAUSE", "RELOAD", "RECONNECT", "RESUME"] and b.paused_for is None
    assert targets(ini.read_text())["postgres"] == ("127.0.0.1", 5441)


def test_a_request_that_goes_away_resumes(bouncer):
    b, dcs, admin, codes, ini = bouncer
    dcs.view = view("node0", Failover(leader="node0", member="node1"))
    b.step()
    dcs.view = view("node0")
    b.step()
    assert admin.log == ["PAUSE", "RESUME"] and b.paused_for is None
    assert targets(ini.read_text())["postgres"] == ("127.0.0.1", 5440)


def test_a_pause_is_bounded(bouncer):
    b, dcs, admin, codes, ini = bouncer
    b.max_pause = 0.0
    admin.pause_done = False
    dcs.view = view(None, Failover(leader="node0", member="node1"))
    b.leader = "node0"
    dcs.view = view("node0", Failover(leader="node0", member="node1"))
    b.step()
    assert admin.log[0] == "PAUSE"
    dcs.view = view(None)
    b.step()
    assert admin.log == ["PAUSE", "RESUME"] and b.paused_for is None


def test_a_scheduled_request_not_yet_due_does_not_pause(bouncer):
    import time as _time
    b, dcs, admin, codes, ini = bouncer
    dcs.view = view("node0", Failover(leader="node0", member="node1", scheduled_at=_time.time() + 60))
    b.step()
    assert admin.log == []


def test_a_scheduled_request_wakes_the_follower_before_it_is_due(bouncer):
    import time as _time
    b, dcs, admin, codes, ini = bouncer
    dcs.view = view("node0", Failover(leader="node0", member="node1", scheduled_at=_time.time() + 30))
    b.step()
    assert b.wake_at is not None and 29 < b.wake_at - _time.monotonic() < 30


def test_only_managed_databases_are_killed(bouncer):
    b, dcs, admin, codes, ini = bouncer
    ini.write_text("[databases]\npostgres = host=127.0.0.1 port=5440\nreplica = host=127.0.0.1 port=5440\n")
    b.databases = frozenset({"postgres"})
    codes[("node1", "/primary")] = 200
    dcs.view = view("node1")
    b.step()
    assert targets(ini.read_text()) == {"postgres": ("127.0.0.1", 5441), "replica": ("127.0.0.1", 5440)}
    admin.servers = [{"database": "postgres", "addr": "127.0.0.1", "port": "5440"},
                     {"database": "replica", "addr": "127.0.0.1", "port": "5440"},
                     {"database": "auto", "addr": "127.0.0.1", "port": "5440"}]
    b.step()
    assert [c for c in admin.log if c.startswith("KILL")] == ['KILL "postgres"']
