"""Tests of pgha.config and ``pgha validate``: the seed fixtures load, and bad input is named by key path."""

from __future__ import annotations

import copy
import dataclasses
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pgha.cli.validate import check, validate
from pgha.config import Config, ConfigError, load_config, load_ctl_config, normalise_namespace
from pgha.config.postgres import find_bin_dir
from pgha.config.sources import patch_config

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
FIXTURES = sorted(SEEDS.glob("*.yml"))
SECRET = "s3cr3t-Pa55"

MINIMAL = {
    "scope": "batman",
    "name": "node1",
    "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
    "etcd3": {"hosts": "127.0.0.1:2379"},
    "postgresql": {
        "listen": "127.0.0.1:5432",
        "connect_address": "127.0.0.1:5432",
        "data_dir": "/tmp/pgha-test/node1",
        "authentication": {"replication": {"username": "replicator", "password": SECRET},
                           "superuser": {"username": "postgres", "password": SECRET}},
    },
}


def minimal() -> dict:
    return copy.deepcopy(MINIMAL)


def write(tmp_path: Path, data, name: str = "pgha.yml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def load(tmp_path: Path, data, env=None):
    return load_config(write(tmp_path, data), env or {})


def errors_of(tmp_path: Path, data, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data, env)
    return info.value.errors


# --- the seed fixtures -----------------------------------------------------------------------------------------

def test_there_is_a_fixture_for_every_seed():
    assert {p.name[:3] for p in FIXTURES} == {"000", "001", "002", "003", "004"}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_each_seed_fixture_validates(fixture):
    status, out, err = check(str(fixture), {})
    assert (status, err) == (0, [])
    assert out[0] == f"{fixture}: valid"
    assert len(out) <= 4


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_each_seed_fixture_uses_loopback_only(fixture):
    config, _ = load_config(str(fixture), {})
    for address in (config.restapi.listen, config.restapi.connect_address, config.postgresql.connect_address):
        assert address.startswith("127.0.0.1:")
    assert config.postgresql.listen_addresses == "127.0.0.1"
    assert all(host == "127.0.0.1" for host, _ in config.etcd.hosts)


def test_seed_fixtures_use_distinct_ports():
    ports = []
    for fixture in FIXTURES:
        config, _ = load_config(str(fixture), {})
        ports += [config.restapi.connect_address, config.postgresql.connect_address]
    assert len(ports) == len(set(ports))


def test_cli_validates_every_fixture():
    runner = CliRunner()
    for fixture in FIXTURES:
        result = runner.invoke(validate, [str(fixture)], env={"PATRONI_SCOPE": None})
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == f"{fixture}: valid"
        assert result.stderr == ""


def test_seed_000_reads_initdb_and_reports_bootstrap_users():
    config, warnings = load_config(str(SEEDS / "000_pg-patroni1.yml"), {})
    assert config.scope == "postgres" and config.name == "pg-patroni1" and config.namespace == "/service"
    assert config.bootstrap.initdb == ("--encoding=UTF8", "--data-checksums")
    assert config.bootstrap.pg_hba[-1] == "host all all 127.0.0.1/32 md5"
    assert config.bootstrap.dcs["postgresql"]["use_pg_rewind"] is True
    assert config.postgresql.bin_dir == "/usr/pgsql-12/bin" and config.postgresql.pgpass == "/tmp/pgpass"
    assert warnings == ["unknown keys (ignored): bootstrap.users"]


def test_seed_001_legacy_layout_is_read_like_patroni():
    config, warnings = load_config(str(SEEDS / "001_pg-srv1.yml"), {})
    assert (config.restapi.username, config.restapi.password) == ("patroni", "patroni")
    assert config.postgresql.replication.username == "replicator"
    assert config.postgresql.superuser.username == "postgres"
    assert config.postgresql.use_pg_rewind is True  # a pg_rewind section in the old layout
    assert config.postgresql.rewind is None
    assert config.watchdog_mode == "off"
    assert config.bootstrap.initdb == ()  # the guide's mis-indented initdb is a top-level key
    assert warnings == ["unknown keys (ignored): initdb"]


def test_seed_002_rendered_playbook():
    config, warnings = load_config(str(SEEDS / "002_node2.yml"), {})
    assert config.etcd.hosts == (("127.0.0.1", 2379), ("127.0.0.1", 2479), ("127.0.0.1", 2579))
    assert config.etcd.protocol == "https" and config.etcd.cert.endswith("node2.pem")
    assert config.etcd.endpoints()[0] == "https://127.0.0.1:2379"
    assert (config.restapi.username, config.restapi.password) == ("test_user", "test_pass")
    assert config.postgresql.use_unix_socket is True and config.postgresql.config_dir.endswith("node2")
    assert config.watchdog_mode == "automatic"
    assert warnings[0].startswith("not supported yet (ignored): log.level, log.format")
    assert "watchdog" not in warnings[0]  # mode, device and safety_margin are acted on
    assert warnings[1] == "unknown keys (ignored): bootstrap.users"


def test_seed_003_etcd_v2_section_is_served_over_v3():
    config, warnings = load_config(str(SEEDS / "003_node3.yml"), {})
    assert config.etcd.v2_section is True and config.etcd.hosts == (("127.0.0.1", 2379),)
    assert config.namespace == "/db" and config.prefix == "/db/postgres/"
    assert config.postgresql.parameters["unix_socket_directories"] == "."
    assert any("served over the etcd v3 API" in w for w in warnings)


def test_seed_004_rewind_role():
    config, warnings = load_config(str(SEEDS / "004_postgresql-2.yml"), {})
    assert config.postgresql.rewind.username == "rewind_user"
    assert config.namespace == "/postgres-multipass-0"
    assert config.bootstrap.dcs["postgresql"]["pg_hba"][0] == "host replication replicator 127.0.0.1/32 md5"
    assert warnings == []


# --- the Config value ------------------------------------------------------------------------------------------

def test_minimal_config_and_defaults(tmp_path):
    config, warnings = load(tmp_path, minimal())
    assert warnings == []
    assert isinstance(config, Config) and config.source.endswith("pgha.yml")
    assert config.namespace == "/service" and config.prefix == "/service/batman/"
    pg = config.postgresql
    assert (pg.listen, pg.listen_addresses, pg.port) == ("127.0.0.1:5432", "127.0.0.1", 5432)
    assert pg.pgpass == "/tmp/pgpass_node1" and pg.database == "postgres" and pg.pg_ctl_timeout == 60
    assert pg.create_replica_methods == ("basebackup",) and pg.use_pg_rewind is None and pg.rewind is None
    assert config.bootstrap.method == "initdb" and dict(config.bootstrap.dcs) == {}
    assert config.watchdog_mode == "automatic" and dict(config.tags) == {}
    assert config.etcd.hosts == (("127.0.0.1", 2379),) and config.etcd.protocol == "http"


def test_config_is_frozen(tmp_path):
    config, _ = load(tmp_path, minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "x"
    with pytest.raises(TypeError):
        config.raw["scope"] = "x"


def test_superuser_defaults_to_postgres(tmp_path):
    data = minimal()
    del data["postgresql"]["authentication"]["superuser"]
    config, _ = load(tmp_path, data)
    assert (config.postgresql.superuser.username, config.postgresql.superuser.password) == ("postgres", None)


def test_auth_ssl_settings_and_conn_kwargs(tmp_path):
    data = minimal()
    data["postgresql"]["authentication"]["replication"].update(sslmode="verify-full", sslrootcert="/ca.pem")
    config, _ = load(tmp_path, data)
    assert config.postgresql.replication.conn_kwargs() == {
        "user": "replicator", "password": SECRET, "sslmode": "verify-full", "sslrootcert": "/ca.pem"}


def test_listen_port_defaults_to_5432_and_several_hosts(tmp_path):
    data = minimal()
    data["postgresql"]["listen"] = "127.0.0.1, 127.0.0.2"
    assert load(tmp_path, data)[0].postgresql.port == 5432
    data["postgresql"]["listen"] = "127.0.0.1,10.0.0.1:6432"
    pg = load(tmp_path, data)[0].postgresql
    assert (pg.listen, pg.listen_addresses, pg.port) == ("127.0.0.1,10.0.0.1:6432", "127.0.0.1,10.0.0.1", 6432)
    data["postgresql"]["listen"] = "[::1]:5433"
    assert load(tmp_path, data)[0].postgresql.listen_addresses == "::1"


@pytest.mark.parametrize("section, expected", [
    ({"host": "127.0.0.1"}, ((("127.0.0.1", 2379),), "http")),
    ({"host": "127.0.0.1", "port": 2400}, ((("127.0.0.1", 2400),), "http")),
    ({"hosts": ["127.0.0.1:2379", "127.0.0.1:2380"]}, ((("127.0.0.1", 2379), ("127.0.0.1", 2380)), "http")),
    ({"hosts": "127.0.0.1:2379,127.0.0.1:2380"}, ((("127.0.0.1", 2379), ("127.0.0.1", 2380)), "http")),
    ({"url": "https://127.0.0.1:2379"}, ((("127.0.0.1", 2379),), "https")),
    ({"url": "http://127.0.0.1:1,http://127.0.0.1:2"}, ((("127.0.0.1", 1), ("127.0.0.1", 2)), "http")),
    ({"url": "https://127.0.0.1", "protocol": "http"}, ((("127.0.0.1", 2379),), "http")),
    ({"hosts": ["[::1]:2379"], "protocol": "https"}, ((("::1", 2379),), "https")),
])
def test_etcd_endpoints(tmp_path, section, expected):
    data = minimal()
    data["etcd3"] = section
    etcd = load(tmp_path, data)[0].etcd
    assert (etcd.hosts, etcd.protocol) == expected


def test_initdb_and_basebackup_rendering(tmp_path):
    data = minimal()
    data["bootstrap"] = {"initdb": ["data-checksums", {"encoding": "UTF8"}, {"locale": "C"}],
                         "post_init": "/bin/true"}
    data["postgresql"]["basebackup"] = {"max-rate": "100M", "checkpoint": "fast"}
    config, _ = load(tmp_path, data)
    assert config.bootstrap.initdb == ("--data-checksums", "--encoding=UTF8", "--locale=C")
    assert config.bootstrap.post_bootstrap == "/bin/true"
    assert config.postgresql.basebackup == ("--max-rate=100M", "--checkpoint=fast")


def test_callbacks_tags_and_local_settings(tmp_path):
    data = minimal()
    data["postgresql"].update(callbacks={"on_role_change": "/bin/cb.sh", "on_start": ""}, use_pg_rewind=True,
                              pg_hba=["local all all trust"], remove_data_directory_on_rewind_failure=True,
                              parameters={"work_mem": "4MB"})
    data["tags"] = {"nofailover": False, "failover_priority": 2, "zone": "a"}
    config, _ = load(tmp_path, data)
    pg = config.postgresql
    assert dict(pg.callbacks) == {"on_role_change": "/bin/cb.sh"}
    assert pg.use_pg_rewind is True and pg.pg_hba == ("local all all trust",)
    assert pg.remove_data_directory_on_rewind_failure is True and pg.parameters["work_mem"] == "4MB"
    assert dict(config.tags) == {"nofailover": False, "failover_priority": 2, "zone": "a"}


@pytest.mark.parametrize("namespace, expected", [
    ("/service", "/service"), ("/db/", "/db"), ("db", "/db"), ("//a//b/", "/a/b"), ("/", ""),
])
def test_namespace_is_normalised(namespace, expected):
    assert normalise_namespace(namespace) == expected


@pytest.mark.parametrize("mode, expected", [(False, "off"), ("off", "off"), ("required", "required"),
                                            ("automatic", "automatic")])
def test_watchdog_mode(tmp_path, mode, expected):
    data = minimal()
    data["watchdog"] = {"mode": mode}
    assert load(tmp_path, data)[0].watchdog_mode == expected


# --- bad input: every error names its key path -----------------------------------------------------------------

def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return change


_DELETE = object()

BAD = [
    ("scope", _DELETE, "scope: required, expected a cluster name (string)"),
    ("scope", 42, "scope: expected a cluster name (string), got 42"),
    ("name", _DELETE, "name: required, expected a member name (string)"),
    ("name", "__patroni_strict_sync_replica_placeholder__",
     "name: expected a member name other than the reserved __patroni_strict_sync_replica_placeholder__"),
    ("namespace", ["x"], "namespace: expected a string, got ['x']"),
    ("restapi.listen", _DELETE, "restapi.listen: required, expected host:port"),
    ("restapi.connect_address", _DELETE, "restapi.connect_address: required, expected host:port"),
    ("restapi.connect_address", "foo", "restapi.connect_address: expected host:port, got 'foo'"),
    ("restapi.connect_address", 8008, "restapi.connect_address: expected host:port, got 8008"),
    ("restapi.connect_address", "127.0.0.1:0",
     "restapi.connect_address: expected host:port with a port in 1..65535, got '127.0.0.1:0'"),
    ("restapi.listen", "127.0.0.1:70000",
     "restapi.listen: expected host:port with a port in 1..65535, got '127.0.0.1:70000'"),
    ("restapi.connect_address", "0.0.0.0:8008",
     "restapi.connect_address: expected host:port with one host others can reach (not a wildcard), "
     "got '0.0.0.0:8008'"),
    ("restapi.verify_client", "always",
     "restapi.verify_client: expected one of none, optional, required, got 'always'"),
    ("restapi.allowlist", "10.0.0.0/8",
     "restapi.allowlist: expected a list of hosts or networks (strings), got '10.0.0.0/8'"),
    ("restapi.allowlist_include_members", "maybe",
     "restapi.allowlist_include_members: expected a boolean (true/false), got 'maybe'"),
    ("restapi.authentication", {"username": "u"}, "restapi.authentication.password: required, expected a string"),
    ("restapi.auth", "no-colon", "restapi.auth: expected username:password"),
    ("restapi", "127.0.0.1:8008", "restapi: expected a mapping, got '127.0.0.1:8008'"),
    ("etcd3.hosts", ["127.0.0.1:2379", "127.0.0.1:99999"],
     "etcd3.hosts[1]: expected host:port with a port in 1..65535, got '127.0.0.1:99999'"),
    ("etcd3.hosts", 2379, "etcd3.hosts: expected host:port entries (a list or a comma-separated string), got 2379"),
    ("etcd3.hosts", _DELETE, "etcd3.hosts: required, expected host:port entries (or host, or url)"),
    ("etcd3.url", "ftp://127.0.0.1:2379", None),  # hosts wins over url: no error
    ("etcd3.protocol", "grpc", "etcd3.protocol: expected one of http, https, got 'grpc'"),
    ("etcd3.cacert", 5, "etcd3.cacert: expected a string, got 5"),
    ("etcd3.port", "x", "etcd3.port: expected an integer >= 1, got 'x'"),
    ("bootstrap.dcs.ttl", "abc", "bootstrap.dcs.ttl: expected an integer >= 2, got 'abc'"),
    ("bootstrap.dcs.loop_wait", 0, "bootstrap.dcs.loop_wait: expected a number >= 0.1, got 0"),
    ("bootstrap.dcs.synchronous_mode", "sometimes",
     "bootstrap.dcs.synchronous_mode: expected on, off or quorum, got 'sometimes'"),
    ("bootstrap.dcs.postgresql", {"use_slots": "x"},
     "bootstrap.dcs.postgresql.use_slots: expected a boolean (true/false), got 'x'"),
    ("bootstrap.dcs", ["ttl"], "bootstrap.dcs: expected a mapping, got ['ttl']"),
    ("bootstrap.method", "wal_g",
     "bootstrap.method: expected initdb (custom bootstrap methods are not supported yet), got 'wal_g'"),
    ("bootstrap.initdb", "data-checksums",
     "bootstrap.initdb: expected a list of options (name, or name: value), got 'data-checksums'"),
    ("bootstrap.initdb", ["data-checksums", {"encoding": "UTF8", "locale": "C"}],
     "bootstrap.initdb[1]: expected an option name or a one-key mapping name: value, got a mapping"),
    ("bootstrap.initdb", ["pgdata"], "bootstrap.initdb[0]: expected an option other than pgdata (pgha sets it itself)"),
    ("bootstrap.pg_hba", "host all all 0/0 md5",
     "bootstrap.pg_hba: expected a list of pg_hba.conf lines (strings), got 'host all all 0/0 md5'"),
    ("postgresql.listen", _DELETE, "postgresql.listen: required, expected host:port"),
    ("postgresql.listen", "127.0.0.1:port",
     "postgresql.listen: expected host:port with a port in 1..65535, got '127.0.0.1:port'"),
    ("postgresql.connect_address", "127.0.0.1", "postgresql.connect_address: expected host:port, got '127.0.0.1'"),
    ("postgresql.connect_address", "*:5432",
     "postgresql.connect_address: expected host:port with one host others can reach (not a wildcard), "
     "got '*:5432'"),
    ("postgresql.data_dir", _DELETE, "postgresql.data_dir: required, expected a path"),
    ("postgresql.data_dir", "", "postgresql.data_dir: expected a path, got ''"),
    ("postgresql.bin_dir", 15, "postgresql.bin_dir: expected a path, got 15"),
    ("postgresql.authentication.replication", _DELETE,
     "postgresql.authentication.replication.username: required, expected a role name (string)"),
    ("postgresql.authentication.replication", "replicator:pw",
     "postgresql.authentication.replication: expected a mapping with username and password"),
    ("postgresql.pg_ctl_timeout", -1, "postgresql.pg_ctl_timeout: expected an integer >= 0, got -1"),
    ("postgresql.use_unix_socket", "sure", "postgresql.use_unix_socket: expected a boolean (true/false), got 'sure'"),
    ("postgresql.parameters", ["a"], "postgresql.parameters: expected a mapping, got ['a']"),
    ("postgresql.callbacks", {"on_start": ["a"]},
     "postgresql.callbacks.on_start: expected a command line (string), got ['a']"),
    ("postgresql.create_replica_methods", "basebackup",
     "postgresql.create_replica_methods: expected a list of method names (strings), got 'basebackup'"),
    ("postgresql.basebackup", ["format"],
     "postgresql.basebackup[0]: expected an option other than format (pgha sets it itself)"),
    ("tags.nofailover", "perhaps", "tags.nofailover: expected a boolean (true/false), got 'perhaps'"),
    ("tags.failover_priority", -1, "tags.failover_priority: expected an integer >= 0, got -1"),
    ("tags.replicatefrom", 3, "tags.replicatefrom: expected a member name (string), got 3"),
    ("watchdog.mode", "sometimes", "watchdog.mode: expected off, automatic or required, got 'sometimes'"),
    ("watchdog.safety_margin", -2, "watchdog.safety_margin: expected an integer >= -1, got -2"),
]


@pytest.mark.parametrize("path, value, error", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_input_names_the_key(tmp_path, path, value, error):
    data = minimal()
    _set(path, value)(data)
    if error is None:
        load(tmp_path, data)
        return
    assert errors_of(tmp_path, data) == [error]


def test_every_problem_is_reported_at_once(tmp_path):
    data = minimal()
    data["bootstrap"] = {"dcs": {"ttl": "abc", "retry_timeout": "x"}}
    data["restapi"]["connect_address"] = "foo"
    del data["postgresql"]["data_dir"]
    errors = errors_of(tmp_path, data)
    assert errors == ["restapi.connect_address: expected host:port, got 'foo'",
                      "bootstrap.dcs.ttl: expected an integer >= 2, got 'abc'",
                      "bootstrap.dcs.retry_timeout: expected a number >= 0.5, got 'x'",
                      "postgresql.data_dir: required, expected a path"]
    assert str(ConfigError(errors)) == "\n".join(errors)


@pytest.mark.parametrize("dcs", ["kubernetes", "raft", "exhibitor"])
def test_other_dcs_are_not_supported_yet(tmp_path, dcs):
    data = minimal()
    del data["etcd3"]
    data[dcs] = {"host": "127.0.0.1:8500"}
    assert errors_of(tmp_path, data) == [
        f"{dcs}: not supported yet, only etcd3 (and etcd, served over v3), zookeeper and consul"]


def test_a_dcs_section_is_required(tmp_path):
    data = minimal()
    del data["etcd3"]
    assert errors_of(tmp_path, data) == [
        "etcd3: required, expected a DCS section (etcd3, or etcd served over the v3 API)"]


def test_only_one_dcs_section(tmp_path):
    data = minimal()
    data["etcd"] = {"host": "127.0.0.1:2379"}
    assert errors_of(tmp_path, data) == ["etcd3: expected exactly one DCS section, found both etcd and etcd3"]


def test_srv_discovery_is_not_supported_yet(tmp_path):
    data = minimal()
    data["etcd3"] = {"srv": "example.org"}
    assert errors_of(tmp_path, data) == [
        "etcd3: expected host, hosts or url (srv and proxy discovery are not supported yet)"]


def test_original_consul_seed_validates(tmp_path):
    data = yaml.safe_load((SEEDS / "000_pg-patroni1.yml").read_text())
    del data["etcd3"]
    data["consul"] = {"host": "127.0.0.1:8500", "protocol": "http"}
    status, out, err = check(write(tmp_path, data), {})
    assert status == 0 and not any(line.startswith("Error") for line in err)


# --- secrets ---------------------------------------------------------------------------------------------------

def _with_secrets() -> dict:
    data = minimal()
    data["restapi"]["authentication"] = {"username": "admin", "password": SECRET}
    data["etcd3"].update(username="root", password=SECRET)
    data["postgresql"]["authentication"]["rewind"] = {"username": "rewind", "password": SECRET,
                                                      "sslpassword": SECRET}
    return data


def test_repr_never_shows_passwords(tmp_path):
    config, _ = load(tmp_path, _with_secrets())
    text = repr(config)
    assert SECRET not in text and "'***'" in text
    assert SECRET not in repr(config.postgresql.rewind) and SECRET not in repr(config.etcd)
    assert config.postgresql.rewind.password == SECRET and config.etcd.password == SECRET


@pytest.mark.parametrize("path, value", [
    ("postgresql.authentication.superuser.password", 12345),
    ("postgresql.authentication.superuser", f"postgres:{SECRET}"),
    ("restapi.authentication.password", 12345),
    ("restapi.authentication", f"admin:{SECRET}"),
    ("restapi.keyfile_password", [SECRET]),
    ("etcd3.password", {"x": SECRET}),
])
def test_errors_never_show_secrets(tmp_path, path, value):
    data = _with_secrets()
    _set(path, value)(data)
    errors = errors_of(tmp_path, data)
    assert errors and all(SECRET not in e and "12345" not in e for e in errors)
    assert errors[0].startswith(path)


def test_yaml_error_names_file_and_line_without_the_text(tmp_path):
    path = write(tmp_path, f"scope: x\nname: y\npostgresql:\n  password: {SECRET}\n    bad: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    (message,) = info.value.errors
    assert message.startswith(f"{path}: invalid YAML at line 5")
    assert SECRET not in message


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.errors == [f"{path}: expected a YAML mapping at the top level, got a list"]


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yml"), {})
    assert info.value.errors == [f"{tmp_path / 'nope.yml'}: no such file or directory"]
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.errors == [f"{path}: empty configuration, expected a YAML mapping of settings"]


# --- warnings --------------------------------------------------------------------------------------------------

def test_unsupported_and_unknown_keys_make_two_lines(tmp_path):
    data = minimal()
    data.update(log={"level": "INFO", "dir": "/var/log"}, ctl={"insecure": True}, thread_pool_size=5,
                typo_scope="x", watchdog={"mode": "required", "device": "/dev/watchdog"})
    data["restapi"]["ciphers"] = "HIGH"
    data["restapi"]["listenn"] = "x"
    data["bootstrap"] = {"dcs": {"standby_cluster": {"host": "h"}, "slots": {}, "ttll": 3}, "users": {}}
    data["postgresql"].update(pg_ident=["a"], use_slots=False, recovery_conf={}, foo=1)
    data["postgresql"]["authentication"]["replication"]["sslmodee"] = "x"
    config, warnings = load(tmp_path, data)
    assert warnings == [
        "not supported yet (ignored): restapi.ciphers, postgresql.pg_ident, postgresql.recovery_conf, "
        "log.level, log.dir, ctl.insecure, thread_pool_size, "
        "bootstrap.dcs.standby_cluster, bootstrap.dcs.slots",
        "unknown keys (ignored): restapi.listenn, postgresql.authentication.replication.sslmodee, "
        "postgresql.use_slots, postgresql.foo, typo_scope, bootstrap.dcs.ttll, bootstrap.users",
    ]
    assert config.watchdog_mode == "required"


def test_watchdog_off_is_not_a_warning(tmp_path):
    data = minimal()
    data["watchdog"] = {"mode": "off", "device": "/dev/watchdog"}
    assert load(tmp_path, data)[1] == []


def test_other_replica_methods_are_listed(tmp_path):
    data = minimal()
    data["postgresql"].update(create_replica_methods=["wal_g", "basebackup"], wal_g={"command": "x"},
                              basebackup={"checkpoint": "fast"})
    config, warnings = load(tmp_path, data)
    assert warnings == ["not supported yet (ignored): postgresql.wal_g"]
    assert config.postgresql.create_replica_methods == ("wal_g", "basebackup")


def test_warnings_never_show_values(tmp_path):
    data = minimal()
    data["ctl"] = {"authentication": {"username": "u", "password": SECRET}}
    _, warnings = load(tmp_path, data)
    assert warnings == ["not supported yet (ignored): ctl.authentication"]


# --- sources: directories and the environment ------------------------------------------------------------------

def test_directory_is_merged_in_sorted_order(tmp_path):
    data = minimal()
    restapi = data.pop("restapi")
    write(tmp_path, data, "10-base.yml")
    write(tmp_path, {"restapi": restapi, "tags": {"nosync": True}}, "20-restapi.yaml")
    write(tmp_path, {"name": "node9", "tags": None}, "30-override.yml")
    write(tmp_path, {"name": "ignored"}, "40-not-yaml.txt")
    config, _ = load_config(str(tmp_path), {})
    assert config.name == "node9" and config.restapi.listen == "127.0.0.1:8008"
    assert dict(config.tags) == {}  # null removes the key, as in Patroni
    assert config.source == str(tmp_path)


def test_patch_config_semantics():
    config = {"a": {"b": 1, "c": 2}, "d": 1}
    patch_config(config, {"a": {"b": 3, "c": None}, "d": {"e": 1}, "f": [1]})
    assert config == {"a": {"b": 3}, "d": {"e": 1}, "f": [1]}


def test_environment_overrides_the_file(tmp_path):
    env = {
        "PATRONI_NAME": "envnode", "PATRONI_SCOPE": "envscope", "PATRONI_NAMESPACE": "/envns/",
        "PATRONI_RESTAPI_LISTEN": "127.0.0.1:9008", "PATRONI_RESTAPI_CONNECT_ADDRESS": "127.0.0.1:9008",
        "PATRONI_RESTAPI_USERNAME": "admin", "PATRONI_RESTAPI_PASSWORD": "envpw",
        "PATRONI_RESTAPI_CERTFILE": "/c.pem", "PATRONI_RESTAPI_KEYFILE": "/k.pem", "PATRONI_RESTAPI_CAFILE": "/ca",
        "PATRONI_RESTAPI_VERIFY_CLIENT": "optional",
        "PATRONI_POSTGRESQL_LISTEN": "127.0.0.1:6432", "PATRONI_POSTGRESQL_CONNECT_ADDRESS": "127.0.0.1:6432",
        "PATRONI_POSTGRESQL_DATA_DIR": "/data/env", "PATRONI_POSTGRESQL_CONFIG_DIR": "/conf/env",
        "PATRONI_POSTGRESQL_PGPASS": "/tmp/pgpass_env", "PATRONI_POSTGRESQL_BIN_DIR": "/pg/bin",
        "PATRONI_SUPERUSER_USERNAME": "su", "PATRONI_SUPERUSER_PASSWORD": "supw",
        "PATRONI_REPLICATION_USERNAME": "rep", "PATRONI_REPLICATION_PASSWORD": "reppw",
        "PATRONI_REWIND_USERNAME": "rw", "PATRONI_REWIND_PASSWORD": "rwpw",
        "PATRONI_ETCD3_HOSTS": "127.0.0.1:3379,127.0.0.1:3380", "PATRONI_ETCD3_PROTOCOL": "https",
        "PATRONI_ETCD3_USERNAME": "root", "PATRONI_ETCD3_PASSWORD": "etcdpw", "PATRONI_ETCD3_CACERT": "/e/ca",
        "PATRONI_ETCD3_CERT": "/e/c", "PATRONI_ETCD3_KEY": "/e/k",
    }
    config, _ = load(tmp_path, minimal(), env)
    assert (config.name, config.scope, config.namespace) == ("envnode", "envscope", "/envns")
    r = config.restapi
    assert (r.listen, r.connect_address, r.username, r.password) == ("127.0.0.1:9008",) * 2 + ("admin", "envpw")
    assert (r.certfile, r.keyfile, r.cafile, r.verify_client) == ("/c.pem", "/k.pem", "/ca", "optional")
    pg = config.postgresql
    assert (pg.port, pg.data_dir, pg.config_dir, pg.pgpass, pg.bin_dir) == (
        6432, "/data/env", "/conf/env", "/tmp/pgpass_env", "/pg/bin")
    assert (pg.superuser.username, pg.superuser.password) == ("su", "supw")
    assert (pg.replication.username, pg.replication.password) == ("rep", "reppw")
    assert (pg.rewind.username, pg.rewind.password) == ("rw", "rwpw")
    e = config.etcd
    assert e.hosts == (("127.0.0.1", 3379), ("127.0.0.1", 3380)) and e.protocol == "https"
    assert (e.username, e.password, e.cacert, e.cert, e.key) == ("root", "etcdpw", "/e/ca", "/e/c", "/e/k")


def test_environment_only(tmp_path):
    env = {"PATRONI_NAME": "n1", "PATRONI_SCOPE": "s", "PATRONI_RESTAPI_LISTEN": "127.0.0.1:8008",
           "PATRONI_RESTAPI_CONNECT_ADDRESS": "127.0.0.1:8008", "PATRONI_ETCD3_HOST": "127.0.0.1:2379",
           "PATRONI_POSTGRESQL_LISTEN": "127.0.0.1:5432", "PATRONI_POSTGRESQL_CONNECT_ADDRESS": "127.0.0.1:5432",
           "PATRONI_POSTGRESQL_DATA_DIR": str(tmp_path), "PATRONI_REPLICATION_USERNAME": "rep",
           "PATRONI_ETCD_URL": ""}  # empty variables are ignored
    config, warnings = load_config(None, env)
    assert config.source == "environment" and config.name == "n1" and warnings == []
    assert config.etcd.hosts == (("127.0.0.1", 2379),)


def test_environment_only_reports_missing_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"PATRONI_NAME": "n1"})
    assert "scope: required, expected a cluster name (string)" in info.value.errors
    assert "postgresql.data_dir: required, expected a path" in info.value.errors


def test_nothing_at_all():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"HOME": "/root"})
    assert info.value.errors == ["environment: empty configuration, expected a YAML mapping of settings"]


def test_patroni_configuration_variable_wins_over_other_variables():
    text = (SEEDS / "004_postgresql-1.yml").read_text()
    config, _ = load_config(None, {"PATRONI_CONFIGURATION": text, "PATRONI_NAME": "ignored"})
    assert config.name == "postgresql-1" and config.source == "environment"


def test_patroni_configuration_yaml_error():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"PATRONI_CONFIGURATION": "a: [\n"})
    assert info.value.errors[0].startswith("PATRONI_CONFIGURATION: invalid YAML at line 2")


def test_environment_for_an_unsupported_dcs(tmp_path):
    data = minimal()
    del data["etcd3"]
    assert errors_of(tmp_path, data, {"PATRONI_EXHIBITOR_HOSTS": "127.0.0.1"}) == [
        "exhibitor: not supported yet, only etcd3 (and etcd, served over v3), zookeeper and consul"]


def test_environment_values_are_parsed(tmp_path):
    env = {"PATRONI_RESTAPI_ALLOWLIST": "127.0.0.1, 10.0.0.0/8", "PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS": "true",
           "PATRONI_LOG_LEVEL": "DEBUG", "PATRONI_ETCD3_HOSTS": "['127.0.0.1:4001']"}
    config, warnings = load(tmp_path, minimal(), env)
    assert config.restapi.allowlist == ("127.0.0.1", "10.0.0.0/8") and config.restapi.allowlist_include_members
    assert config.etcd.hosts == (("127.0.0.1", 4001),)
    assert warnings == ["not supported yet (ignored): log.level"]


def test_environment_value_that_cannot_be_parsed(tmp_path):
    errors = errors_of(tmp_path, minimal(), {"PATRONI_RESTAPI_ALLOWLIST": "[unclosed"})
    assert errors == ["PATRONI_RESTAPI_ALLOWLIST: expected a YAML list"]


# --- bin_dir discovery and the CLI -----------------------------------------------------------------------------

def test_bin_dir_is_the_real_directory_of_pg_ctl_on_path(tmp_path):
    real = tmp_path / "pg" / "17" / "bin"
    real.mkdir(parents=True)
    (real / "pg_ctl").write_text("#!/bin/sh\n")
    (real / "pg_ctl").chmod(stat.S_IRWXU)
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(real / "pg_ctl", links / "pg_ctl")
    assert find_bin_dir({"PATH": str(links)}) == str(real)
    data = minimal()
    assert load(tmp_path, data, {"PATH": f"{tmp_path / 'nothing'}:{links}"})[0].postgresql.bin_dir == str(real)


def test_bin_dir_without_pg_ctl_on_path_is_never_an_error(tmp_path):
    found = find_bin_dir({"PATH": str(tmp_path)})
    assert found == "" or os.path.isfile(os.path.join(found, "pg_ctl"))


def test_cli_reports_errors_on_stderr(tmp_path):
    data = minimal()
    data["bootstrap"] = {"dcs": {"ttl": "abc"}}
    data["restapi"]["connect_address"] = "foo"
    result = CliRunner().invoke(validate, [write(tmp_path, data)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == ["Error: restapi.connect_address: expected host:port, got 'foo'",
                                          "Error: bootstrap.dcs.ttl: expected an integer >= 2, got 'abc'"]


def test_cli_prints_warnings_after_valid(tmp_path):
    data = minimal()
    data["log"] = {"level": "INFO"}
    path = write(tmp_path, data)
    result = CliRunner().invoke(validate, [path])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"{path}: valid", "Warning: not supported yet (ignored): log.level"]


# --- the operator verbs' view ----------------------------------------------------------------------------------

def test_ctl_config_from_a_seed_file():
    ctl = load_ctl_config(str(SEEDS / "003_node1.yml"), None, {})
    assert (ctl.scope, ctl.namespace, ctl.username, ctl.dbname, ctl.pgpass) == (
        "postgres", "/db", "postgres", "postgres", "/tmp/pgpass")
    assert ctl.etcd.hosts == (("127.0.0.1", 2379),)


def test_ctl_config_is_lenient_about_agent_settings(tmp_path):
    path = write(tmp_path, {"scope": "batman", "etcd3": {"host": "127.0.0.1:2379"}})
    ctl = load_ctl_config(path, None, {})
    assert ctl.scope == "batman" and ctl.username is None and ctl.namespace == "/service"


@pytest.mark.parametrize("url, hosts, protocol, namespace", [
    ("etcd3://127.0.0.1:2381", (("127.0.0.1", 2381),), "http", "/service"),
    ("etcd://127.0.0.1/custom/", (("127.0.0.1", 2379),), "http", "/custom"),
    ("https://127.0.0.1:2379", (("127.0.0.1", 2379),), "https", "/service"),
    ("127.0.0.1:2390", (("127.0.0.1", 2390),), "http", "/service"),
])
def test_ctl_dcs_url_replaces_the_dcs_section(url, hosts, protocol, namespace):
    ctl = load_ctl_config(None, url, {})
    assert (ctl.etcd.hosts, ctl.etcd.protocol, ctl.namespace, ctl.scope) == (hosts, protocol, namespace, None)


@pytest.mark.parametrize("url, error", [
    ("exhibitor://127.0.0.1:8181",
     "dcs_url: exhibitor is not supported yet, only etcd3 (and etcd, served over v3), zookeeper and consul"),
    ("ftp://127.0.0.1", "dcs_url: expected etcd3://host:port, got 'ftp://127.0.0.1'"),
])
def test_ctl_bad_dcs_url(url, error):
    with pytest.raises(ConfigError) as info:
        load_ctl_config(None, url, {})
    assert info.value.errors == [error]


def test_ctl_config_needs_a_dcs():
    with pytest.raises(ConfigError) as info:
        load_ctl_config(None, None, {"PATRONI_SCOPE": "x"})
    assert info.value.errors == ["etcd3: required, expected a DCS section (etcd3, or etcd served over the v3 API)"]


# --- the zookeeper section -------------------------------------------------------------------------------------

def _zk(data: dict, section) -> dict:
    del data["etcd3"]
    data["zookeeper"] = section
    return data


@pytest.mark.parametrize("hosts", [["127.0.0.1:2181", "10.0.0.2:2182", "zk3"], "127.0.0.1:2181,10.0.0.2:2182,zk3"])
def test_zookeeper_section_hosts_as_list_or_string(tmp_path, hosts):
    config, warnings = load(tmp_path, _zk(minimal(), {"hosts": hosts}))
    assert config.etcd is None and config.zookeeper is config.dcs
    assert config.zookeeper.hosts == (("127.0.0.1", 2181), ("10.0.0.2", 2182), ("zk3", 2181))
    assert (config.zookeeper.use_ssl, config.zookeeper.verify, config.zookeeper.auth_data) == (False, True, ())
    assert warnings == []


def test_zookeeper_section_tls_acls_and_auth(tmp_path):
    section = {"hosts": ["zk1:2281"], "use_ssl": True, "cacert": "/etc/zk/ca.pem", "cert": "/etc/zk/c.pem",
               "key": "/etc/zk/c.key", "key_password": "s3cret-key", "verify": False,
               "set_acls": {"CN=principal1": ["CREATE", "read"], "CN=principal2": ["ALL"]},
               "auth_data": {"digest": "user:s3cret-pw"}}
    config, warnings = load(tmp_path, _zk(minimal(), section))
    zk = config.zookeeper
    assert (zk.use_ssl, zk.cacert, zk.cert, zk.key, zk.key_password, zk.verify) == (
        True, "/etc/zk/ca.pem", "/etc/zk/c.pem", "/etc/zk/c.key", "s3cret-key", False)
    assert dict(zk.set_acls) == {"CN=principal1": ("CREATE", "READ"), "CN=principal2": ("ALL",)}
    assert zk.auth_data == (("digest", "user:s3cret-pw"),)
    assert "s3cret" not in repr(zk) and "s3cret" not in repr(config) and warnings == []


def test_zookeeper_section_errors(tmp_path):
    assert errors_of(tmp_path, _zk(minimal(), {"host": "zk1:2181"})) == [
        "zookeeper.hosts: required, expected host:port entries (a list or a comma-separated string)"]
    assert errors_of(tmp_path, _zk(minimal(), {"hosts": ["zk1:2181", "zk2:99999"]})) == [
        "zookeeper.hosts[1]: expected host:port with a port in 1..65535, got 'zk2:99999'"]
    bad = {"hosts": "zk1", "set_acls": {"CN=x": ["FLY"]}, "auth_data": "digest:user:s3cret", "key_password": 5}
    errors = errors_of(tmp_path, _zk(minimal(), bad))
    assert errors[0].startswith("zookeeper.key_password: expected a string")
    assert errors[1:] == ["zookeeper.set_acls.CN=x: expected a list of permissions (READ, WRITE, CREATE, DELETE, "
                          "ADMIN, ALL), got ['FLY']",
                          "zookeeper.auth_data: expected a mapping of scheme: credential (or [scheme, credential] "
                          "pairs)"]
    assert not any("s3cret" in e or "5" in e.split(":", 1)[1] for e in errors[:1])


def test_zookeeper_and_etcd_together_is_an_error(tmp_path):
    data = minimal()
    data["zookeeper"] = {"hosts": ["zk1:2181"]}
    assert errors_of(tmp_path, data) == ["etcd3: expected exactly one DCS section, found both etcd3 and zookeeper"]


def test_zookeeper_from_the_environment(tmp_path):
    data = minimal()
    del data["etcd3"]
    env = {"PATRONI_ZOOKEEPER_HOSTS": "['127.0.0.1:2181', '127.0.0.1:2182']", "PATRONI_ZOOKEEPER_USE_SSL": "true"}
    config, _ = load(tmp_path, data, env)
    assert config.zookeeper.hosts == (("127.0.0.1", 2181), ("127.0.0.1", 2182)) and config.zookeeper.use_ssl


def test_ctl_config_with_zookeeper(tmp_path):
    path = write(tmp_path, {"scope": "batman", "zookeeper": {"hosts": "127.0.0.1:2181"}})
    ctl = load_ctl_config(path, None, {})
    assert ctl.etcd is None and ctl.dcs.hosts == (("127.0.0.1", 2181),)
    ctl = load_ctl_config(None, "zookeeper://10.0.0.1/db", {})
    assert (ctl.zookeeper.hosts, ctl.namespace) == ((("10.0.0.1", 2181),), "/db")


def test_dcs_from_config_builds_the_named_backend(tmp_path):
    from pgha.dcs import Etcd3Dcs, dcs_from_config
    from pgha.dcs.zookeeper import ZooKeeperDcs
    zk_config, _ = load(tmp_path, _zk(minimal(), {"hosts": ["127.0.0.1:2181"], "set_acls": {"CN=a": ["ALL"]}}))
    dcs = dcs_from_config(zk_config.dcs, namespace="/db", scope="batman", ttl=30)
    assert isinstance(dcs, ZooKeeperDcs) and dcs.ensemble == "127.0.0.1:2181" and dcs.root == "/db/batman"
    assert [(a.id.scheme, a.id.id, a.perms) for a in dcs._options["default_acl"]] == [("x509", "CN=a", 31)]
    etcd_config, _ = load(tmp_path, minimal())
    assert isinstance(dcs_from_config(etcd_config.dcs, scope="batman", ttl=30), Etcd3Dcs)


# --- seeds 000 and 001 with their Consul sections, seed 004 with its ZooKeeper section (issue #9) ----------------

# The DCS sections as the seeds (/work/shared/seeds) wrote them; the fixtures had them replaced by etcd3.
_SEED_DCS = {
    "000": {"consul": {"host": "127.0.0.1:8500", "protocol": "http"}},
    "001": {"consul": {"host": "localhost:8500", "register_service": True}},
    "004": {"zookeeper": {"hosts": ["127.0.0.1:2181", "127.0.0.1:2182", "127.0.0.1:2183"]}},
}


@pytest.mark.parametrize("fixture", [p for p in FIXTURES if p.name[:3] in _SEED_DCS], ids=lambda p: p.name)
def test_seed_with_its_original_dcs_section_validates(tmp_path, fixture):
    data = yaml.safe_load(fixture.read_text())
    del data["etcd3"]
    data.update(copy.deepcopy(_SEED_DCS[fixture.name[:3]]))
    path = write(tmp_path, data)
    config, warnings = load_config(path, {})
    if fixture.name.startswith("004"):
        assert config.etcd is None and config.consul is None
        assert config.dcs.hosts == (("127.0.0.1", 2181), ("127.0.0.1", 2182), ("127.0.0.1", 2183))
    else:
        assert config.etcd is None and config.zookeeper is None and config.dcs is config.consul
        assert (config.consul.host, config.consul.port) == (
            ("127.0.0.1", 8500) if fixture.name.startswith("000") else ("localhost", 8500))
        assert config.consul.register_service is fixture.name.startswith("001")
    if fixture.name.startswith("000"):  # Patroni's consul section has no `protocol`: reported, not an error
        assert any("consul.protocol" in w for w in warnings if w.startswith("unknown keys"))
    status, _, err = check(path, {})
    assert status == 0 and not any(line.startswith("Error") for line in err)
