"""`pgha check ROLE`: the exit code follows the node's REST API (a real server on 127.0.0.1, a published status)."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from pgha.api import ApiServer, StatusBoard
from pgha.cli.main import cli
from tests.unit.test_api_server import VIEW, cfg, make_status


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_exit_code_follows_the_rest_api():
    board = StatusBoard(make_status(), VIEW)  # a running primary holding the lock
    with ApiServer(cfg(), board) as api:
        url = f"http://127.0.0.1:{api.port}"
        assert run("check", "primary", "--url", url).exit_code == 0
        assert run("check", "replica", "--url", url).exit_code == 1
        board.publish(make_status(role="replica", lock_holder=False, xlog={"received_location": 1,
                                  "replayed_location": 1}, replication_state="streaming"), VIEW)
        result = run("check", "primary", "--url", url)
        assert result.exit_code == 1 and "primary: no" in result.output
        assert run("check", "replica", "--url", url, "-q").exit_code == 0


def test_an_unreachable_api_is_a_no(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("check", "primary", "--url", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert result.exit_code == 1 and "did not answer" in result.output
    node = tmp_path / "node.yml"
    node.write_text(f"restapi:\n  connect_address: 127.0.0.1:{port}\n")
    assert run("-c", str(node), "check", "primary", "--timeout", "0.5").exit_code == 1


def test_a_bad_role_is_refused():
    result = run("check", "leaderish")
    assert result.exit_code == 2 and "leaderish" in result.output
