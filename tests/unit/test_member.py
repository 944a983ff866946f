"""The member data an agent publishes: Patroni's shapes, and the steps `pgha list` shows."""

from types import SimpleNamespace

from pgha.agent.member import member_data, member_state
from pgha.core.model import DataDir, Job, JobKind, JobState, LocalState, PgRole

CFG = SimpleNamespace(postgresql=SimpleNamespace(connect_address="10.0.0.1:5432", database="postgres"),
                      restapi=SimpleNamespace(connect_address="10.0.0.1:8008"), tags={"nofailover": False})


def test_urls_keep_patronis_shapes():
    data = member_data(CFG, LocalState(data_dir=DataDir.EMPTY))
    assert data["conn_url"] == "postgres://10.0.0.1:5432/postgres"
    assert data["api_url"] == "http://10.0.0.1:8008/patroni"
    assert data["role"] == "uninitialized" and data["state"] == "stopped"
    assert data["tags"] == {"nofailover": False}


def test_a_streaming_replica():
    local = LocalState(data_dir=DataDir.INITIALIZED, running=True, role=PgRole.REPLICA, timeline=3,
                       wal_position=900, receive_lsn=900, replay_lsn=800, streaming_from="10.0.0.2:5432")
    data = member_data(CFG, local)
    assert (data["role"], data["state"], data["timeline"], data["xlog_location"]) == ("replica", "running", 3, 900)
    assert data["replication_state"] == "streaming" and data["replay_lsn"] == 800


def test_steps_in_progress_are_shown():
    for kind, shown in [(JobKind.BOOTSTRAP, "initializing new cluster"), (JobKind.CLONE, "creating replica"),
                        (JobKind.REWIND, "rewinding"), (JobKind.START, "starting")]:
        local = LocalState(data_dir=DataDir.INITIALIZED, job=Job(kind, JobState.RUNNING, 0.0))
        assert member_state(local) == shown


def test_a_replica_being_cloned_is_never_published_as_primary():
    from pgha.agent.member import member_role
    cloning = LocalState(data_dir=DataDir.INITIALIZED, last_role=PgRole.PRIMARY,
                         job=Job(JobKind.CLONE, JobState.RUNNING, 0.0))
    assert member_role(cloning) == "uninitialized"
    assert member_role(LocalState(data_dir=DataDir.INITIALIZED, last_role=PgRole.REPLICA)) == "replica"
