"""Pending restart and pause, as the agent publishes them in its member data and /patroni status."""

from __future__ import annotations

from types import SimpleNamespace

from pgha.agent.member import member_data
from pgha.agent.report import api_status
from pgha.core.model import ClusterView, DataDir, LocalState, PgRole
from pgha.core.settings import Settings

CFG = SimpleNamespace(name="n-status", scope="s-status", tags={},
                      postgresql=SimpleNamespace(connect_address="127.0.0.1:5432", database="postgres"),
                      restapi=SimpleNamespace(connect_address="127.0.0.1:8008"))
RUNNING = LocalState(data_dir=DataDir.INITIALIZED, running=True, role=PgRole.PRIMARY, timeline=1,
                     wal_position=100)
REASON = {"wal_buffers": {"old_value": "2MB", "new_value": "16MB"}}


def test_pending_restart_and_pause_reach_status_and_member_data() -> None:
    status = api_status(CFG, Settings("n-status"), RUNNING, {"pending_restart_reason": REASON},
                        ClusterView(leader="n-status", config={"pause": True}), True, None, 0.0)
    assert status["pending_restart"] is True and status["pending_restart_reason"] == REASON
    assert status["pause"] is True
    data = member_data(CFG, RUNNING)  # what the status report noted for this member
    assert data["pending_restart"] is True and data["pending_restart_reason"] == REASON and data["pause"] is True
    api_status(CFG, Settings("n-status"), RUNNING, {}, ClusterView(leader="n-status", config={}), True, None, 0.0)
    data = member_data(CFG, RUNNING)
    assert "pending_restart" not in data and "pause" not in data


def test_a_stopped_postgres_is_never_pending_restart() -> None:
    stopped = LocalState(data_dir=DataDir.INITIALIZED, running=False, last_role=PgRole.REPLICA)
    status = api_status(CFG, Settings("n-status"), stopped, {"pending_restart_reason": REASON}, ClusterView(), False, None,
                        0.0)
    assert "pending_restart" not in status
    assert "pending_restart" not in member_data(CFG, stopped, status={"pending_restart": True})
