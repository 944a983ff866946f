"""`pgha switchover` and `pgha failover`: patronictl's ``_do_failover_or_switchover`` flow.

Rules
1. Interactive unless ``--force``: the current topology, then ``Primary [leader]:``, ``Candidate [...] []:``,
   ``When should the switchover take place (e.g. ...) [now]:`` and the confirmation, as patronictl asks them.
   With ``--force`` the missing answers take their defaults (the current leader, any candidate, now).
2. The request goes to the leader's REST API (the candidate's when there is no leader); when no API answers it
   is written to the DCS ``failover`` key directly, as patronictl falls back.
3. While the REST call runs, progress lines (who holds the leader key) are printed; then the outcome, and the
   member table once the new leader runs (bounded wait). A refused request is ``Error: ...``, exit code 1.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import click

from pgha.cli.ctl import Ctl
from pgha.cli.errors import CliError
from pgha.cli.listing import render
from pgha.cli.members import next_hour, parse_scheduled, timestamp
from pgha.core.model import ClusterView


def candidates(view: ClusterView) -> list[str]:
    return sorted(m.name for m in view.members if m.name != view.leader and not m.nofailover)


def do_failover(ctl: Ctl, action: str, cluster_name: str | None, candidate: str | None, force: bool,
                leader: str | None = None, scheduled: str | None = None) -> None:
    scope = ctl.scope(cluster_name)
    view = ctl.view(scope)
    click.echo("Current cluster topology")
    click.echo(render(view, scope, "pretty"))
    current = view.leader
    if action == "switchover":
        leader = _ask_leader(view, scope, leader, force)
    candidate = _ask_candidate(view, scope, action, candidate, force)
    scheduled_at = _ask_schedule(view, scheduled, force) if action == "switchover" else None
    value: dict[str, Any] = {"candidate": candidate}
    if action == "switchover":
        value["leader"] = leader
    if scheduled_at:
        value["scheduled_at"] = scheduled_at.isoformat()
    if not force:
        _confirm(scope, action, current, value.get("scheduled_at"))
    target = view.member(current) if current else view.member(candidate or "")
    answer = _post_with_progress(ctl, scope, target, action, value, current) if target is not None else None
    if answer is None:
        _through_dcs(ctl, scope, action, value, current)
    else:
        code, text = answer
        if code not in (200, 202):
            raise CliError(f"{action.title()} failed, details: {code}, {text}")
        click.echo(f"{timestamp()} {text}")
        if code == 200:
            _wait_new_leader(ctl, scope, current, 30)
    click.echo(render(ctl.view(scope), scope, "pretty"))


def _ask_leader(view, scope: str, leader: str | None, force: bool) -> str:
    """A switchover's leader: given, or asked (the current one by default); it must be the current one."""
    if not view.leader:
        raise CliError("This cluster has no leader")
    if leader is None:
        leader = view.leader if force else click.prompt("Primary", type=str, default=view.leader)
    if leader != view.leader:
        raise CliError(f"Member {leader} is not the leader of cluster {scope}")
    return leader


def _ask_candidate(view, scope: str, action: str, candidate: str | None, force: bool) -> str | None:
    """The candidate (None: any, for a switchover), given or asked, checked against those that may take over."""
    names = candidates(view)
    if not names:
        raise CliError(f"No candidates found to {action} to")
    if candidate is None and not force:
        candidate = click.prompt(f"Candidate {names}", type=str, default="")
    candidate = candidate or None
    if action == "failover" and not candidate:
        raise CliError("Failover could be performed only to a specific candidate")
    if candidate and candidate not in names:
        if candidate == view.leader:
            raise CliError(f"Member {candidate} is already the leader of cluster {scope}")
        raise CliError(f"Member {candidate} does not exist in cluster {scope} or is tagged as nofailover")
    return candidate


def _ask_schedule(view, scheduled: str | None, force: bool):
    """A switchover's time (None: now), given or asked; a paused cluster takes none."""
    if scheduled is None and not force:
        scheduled = click.prompt(f"When should the switchover take place (e.g. {next_hour()} ) ", type=str,
                                 default="now")
    scheduled_at = parse_scheduled(scheduled)
    if scheduled_at and view.paused:
        raise CliError("Can't schedule switchover in the paused state")
    return scheduled_at


def _confirm(scope: str, action: str, current: str | None, scheduled_at: str | None) -> None:
    demote = f", demoting current leader {current}" if current else ""
    if scheduled_at:
        if not click.confirm(f"Are you sure you want to schedule switchover of cluster {scope} at "
                             f"{scheduled_at}{demote}?"):
            raise CliError(f"Aborting scheduled {action}")
    elif not click.confirm(f"Are you sure you want to {action} cluster {scope}{demote}?"):
        raise CliError(f"Aborting {action}")


def _through_dcs(ctl: Ctl, scope: str, action: str, value: dict[str, Any], current: str | None) -> None:
    """No REST API answered: the request goes into the failover key, as patronictl does."""
    click.echo(f"{timestamp()} Could not {action} using Patroni api, falling back to DCS")
    key = {"member": value["candidate"]}
    if action == "switchover":
        key = {"leader": value["leader"], "member": value["candidate"]}
    if value.get("scheduled_at"):
        key["scheduled_at"] = value["scheduled_at"]
    if not ctl.dcs(scope).put_key("failover", {k: v for k, v in key.items() if v}):
        raise CliError("failed to write the failover key into the DCS")
    if not value.get("scheduled_at"):
        _wait_new_leader(ctl, scope, current, 60)


def _post_with_progress(ctl: Ctl, scope: str, target, action: str, value: dict[str, Any],
                        old_leader: str | None) -> tuple[int, str] | None:
    """Rule 3: the REST call in a thread, a progress line whenever the leader key changes meanwhile."""
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["answer"] = ctl.request(target, "POST", action, value, timeout=90)
        except CliError as e:
            result["error"] = str(e)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    last = old_leader
    shown = False
    deadline = time.monotonic() + 120
    while worker.is_alive() and time.monotonic() < deadline:
        worker.join(1.0)
        if not worker.is_alive() or "scheduled_at" in value:
            break
        if not shown:
            click.echo(f"{timestamp()} {action.title()} in progress: waiting for "
                       f"{value.get('candidate') or 'a replica'} to take over from {old_leader or 'nobody'}")
            shown = True
        leader = _leader(ctl, scope)
        if leader != last:
            click.echo(f"{timestamp()} leader key: {leader or '(released)'}")
            last = leader
    worker.join(1.0)
    if "error" in result:
        click.echo(f"Warning: {result['error']}", err=True)
        return None
    return result.get("answer")


def _leader(ctl: Ctl, scope: str) -> str | None:
    try:
        return ctl.dcs(scope).snapshot(timeout=2).leader
    except Exception:
        return None


def _wait_new_leader(ctl: Ctl, scope: str, old: str | None, timeout: float) -> None:
    """Bounded: until another member holds the leader key and runs as primary, and every member runs again (the
    old leader as a replica), so the table printed last shows the cluster settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            view = ctl.dcs(scope).snapshot(timeout=2)
        except Exception:
            view = None
        if view is not None and view.leader and view.leader != old:
            member = view.member(view.leader)
            if member is not None and member.role == "primary" and all(m.state == "running" for m in view.members):
                return
        time.sleep(0.5)
