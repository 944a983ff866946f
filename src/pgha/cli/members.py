"""The verbs that act on chosen members through their REST APIs: restart, reload, reinit, flush (patronictl's
``get_members``/``confirm_members_action`` flow, its prompts, texts and order).

Rules
1. ``CLUSTER`` comes first as in patronictl. When it is not a cluster but a member of the configured scope's
   cluster (`pgha reinit node3` with `-c` naming the scope), it is read as a member name.
2. Interactive unless ``--force``: the member table, then the questions patronictl asks, with its defaults.
3. Each member's answer is printed as patronictl prints it (``Success: ...`` / ``Failed: ...``); when any member
   failed the command ends with ``Error: ...`` and exit code 1.
4. ``restart`` goes one member at a time, replicas first and the leader last, waiting (bounded) for each to be
   running again before the next: a rolling restart that never takes two nodes down at once.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import click

from pgha.cli.ctl import Ctl
from pgha.cli.errors import CliError
from pgha.cli.listing import render
from pgha.core.model import ClusterView, Member

ROLES = ("leader", "primary", "standby-leader", "replica", "standby", "any")
role_choice = click.Choice(ROLES)
option_force = click.option("--force", is_flag=True, help="Do not ask for confirmation at any point")


def timestamp(precision: int = 6) -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:precision - 7]


def resolve(ctl: Ctl, cluster_name: str, member_names: tuple[str, ...]) -> tuple[str, ClusterView, list[str]]:
    """Rule 1: (scope, view, member names)."""
    view = ctl.view(cluster_name)
    configured = ctl.target.scope
    if cluster_name != configured and configured and not view.members and view.initialize is None:
        home = ctl.view(configured)
        if home.member(cluster_name) is not None:
            return configured, home, [cluster_name, *member_names]
    return cluster_name, view, list(member_names)


def members_with_role(view: ClusterView, role: str) -> list[Member]:
    """patronictl's ``get_all_members``."""
    leader = view.member(view.leader) if view.leader else None
    if role in ("leader", "primary", "standby-leader"):
        if leader is None:
            return []
        standby = leader.role == "standby_leader"
        if role == "leader" or (role == "standby-leader" and standby) or (role == "primary" and not standby):
            return [leader]
        return []
    return [m for m in view.members if role == "any" or m.name != view.leader]


def get_members(view: ClusterView, scope: str, names: list[str], role: str, force: bool, action: str,
                ask_confirmation: bool = True) -> list[Member]:
    """patronictl's ``get_members`` (rule 2)."""
    members = members_with_role(view, role)
    candidates = {m.name for m in members}
    if not names and not candidates:
        raise CliError(f"{scope} cluster doesn't have any members")
    click.echo(render(view, scope, "pretty"))
    if names:
        unknown = [n for n in names if view.member(n) is None]
        if unknown:
            raise CliError(f"{', '.join(unknown)} is not a member of cluster")
        names = [n for n in names if n in candidates]
        if not names:
            raise CliError(f"No {role} among provided members")
    elif action != "reinitialize":
        names = sorted(candidates)
    if not names and not force:
        names = [click.prompt(f"Which member do you want to {action} [{', '.join(sorted(candidates))}]?",
                              type=str, default="")]
    for name in names:
        if name not in candidates:
            raise CliError(f"{name} is not a member of cluster" if view.member(name) is None
                           else f"{name} is not a {role} member")
    chosen = [m for m in members if m.name in names]
    if ask_confirmation:
        confirm_members_action(chosen, force, action)
    return chosen


def confirm_members_action(members: list[Member], force: bool, action: str,
                           scheduled_at: datetime.datetime | None = None, pending: bool = False) -> None:
    if force:
        return
    if scheduled_at:
        if pending:
            question = ("The nodes needing a restart will be identified at the scheduled time, and might be "
                        "different from the ones showing pending restart right now. Is this fine?")
        else:
            question = (f"Are you sure you want to schedule {action} of members "
                        f"{', '.join(m.name for m in members)} at {scheduled_at}?")
        if not click.confirm(question):
            raise CliError(f"Aborted scheduled {action}")
    elif not click.confirm(f"Are you sure you want to {action} members {', '.join(m.name for m in members)}?"):
        raise CliError(f"Aborted {action}")


def parse_scheduled(value: str | None) -> datetime.datetime | None:
    """``now``/empty/None -> None; an ISO 8601 time (local time zone when none is given)."""
    if value is None or (value or "now") == "now":
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"Unable to parse scheduled timestamp ({value}). It should be in an unambiguous format "
                       "(e.g. ISO 8601)") from None
    return moment if moment.tzinfo else moment.astimezone()


def next_hour() -> str:
    return (datetime.datetime.now() + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


def check_response(code: int, text: str, member: str, action: str, silent_success: bool = False) -> bool:
    if code >= 400:
        click.echo(f"Failed: {action} for member {member}, status code={code}, ({text})")
        return False
    if not silent_success:
        click.echo(f"Success: {action} for member {member}")
    return True


def rolling_order(view: ClusterView, members: list[Member]) -> list[Member]:
    """Rule 4: replicas (by name) first, the leader last."""
    return sorted(members, key=lambda m: (m.name == view.leader, m.name))


def _wait_running(ctl: Ctl, scope: str, name: str, timeout: float) -> None:
    """Bounded: until the DCS shows ``name`` running again (a replica streaming), so the next restart never
    overlaps this one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            view = ctl.dcs(scope).snapshot(timeout=3)
        except Exception:
            view = None
        member = view.member(name) if view else None
        if member is not None and member.state == "running" and (
                name == view.leader or member.data.get("replication_state") == "streaming"):
            return
        time.sleep(0.5)
    click.echo(f"Warning: {name} is not back to running after {timeout:.0f} s; going on")


def do_restart(ctl: Ctl, cluster_name: str, member_names: tuple[str, ...], role: str, p_any: bool,
               scheduled: str | None, version: str | None, pending: bool, timeout: str | None,
               force: bool) -> None:
    from pgha.api.manual import version_number
    scope, view, names = resolve(ctl, cluster_name, member_names)
    members = get_members(view, scope, names, role, force, "restart", ask_confirmation=False)
    if scheduled is None and not force:
        scheduled = click.prompt(f"When should the restart take place (e.g. {next_hour()}) ", type=str,
                                 default="now")
    scheduled_at = parse_scheduled(scheduled)
    content: dict[str, Any] = {}
    if pending:
        content["restart_pending"] = True
        if not scheduled_at:
            members = [m for m in members if m.data.get("pending_restart")]
            if not members:
                click.echo("No member is pending a restart")
                return
    if p_any:
        import random
        members = [random.choice(members)] if members else []
    confirm_members_action(members, force, "restart", scheduled_at, pending)
    if version is None and not force:
        version = click.prompt("Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ", type=str,
                               default="")
    if version:
        if version_number(version) is None:
            raise CliError(f"--pg-version: expected a PostgreSQL version such as 15.4 or 9.6.24, got {version!r}")
        content["postgres_version"] = version
    if scheduled_at:
        if view.paused:
            raise CliError("Can't schedule restart in the paused state")
        content["schedule"] = scheduled_at.isoformat()
    if timeout is not None:
        content["timeout"] = timeout
    failed = []
    ordered = rolling_order(view, members)
    for i, member in enumerate(ordered):
        if "schedule" in content and force and member.data.get("scheduled_restart"):
            check_response(*ctl.request(member, "DELETE", "restart"), member.name, "flush scheduled restart", True)
        code, text = ctl.request(member, "POST", "restart", content, timeout=float(timeout or 0) + 120)
        if code == 200:
            click.echo(f"Success: restart on member {member.name}")
            if i + 1 < len(ordered):
                _wait_running(ctl, scope, member.name, 60)
        elif code == 202:
            click.echo(f"Success: restart scheduled on member {member.name}")
        elif code == 409:
            click.echo(f"Failed: another restart is already scheduled on member {member.name}")
            failed.append(member.name)
        else:
            click.echo(f"Failed: restart for member {member.name}, status code={code}, ({text})")
            failed.append(member.name)
    if failed:
        raise CliError(f"restart failed on {', '.join(failed)}")


def do_reload(ctl: Ctl, cluster_name: str, member_names: tuple[str, ...], role: str, force: bool) -> None:
    scope, view, names = resolve(ctl, cluster_name, member_names)
    failed = []
    for member in get_members(view, scope, names, role, force, "reload"):
        code, text = ctl.request(member, "POST", "reload")
        if code == 200:
            click.echo(f"No changes to apply on member {member.name}")
        elif code == 202:
            loop_wait = (view.config or {}).get("loop_wait") or 10
            click.echo(f"Reload request received for member {member.name} and will be processed within "
                       f"{loop_wait} seconds")
        else:
            click.echo(f"Failed: reload for member {member.name}, status code={code}, ({text})")
            failed.append(member.name)
    if failed:
        raise CliError(f"reload failed on {', '.join(failed)}")


def do_reinit(ctl: Ctl, cluster_name: str, member_names: tuple[str, ...], force: bool, from_leader: bool,
              wait: bool, wait_timeout: float = 900.0) -> None:
    scope, view, names = resolve(ctl, cluster_name, member_names)
    members = get_members(view, scope, names, "replica", force, "reinitialize")
    waiting: dict[str, tuple[Member, Any]] = {}
    failed = []
    for member in members:
        body = {"force": force, "from_leader": from_leader}
        before = _start_time(ctl, member)
        while True:
            code, text = ctl.request(member, "POST", "reinitialize", body)
            started = check_response(code, text, member.name, "reinitialize")
            if not started and text.endswith(" already in progress") and not body["force"] \
                    and click.confirm("Do you want to cancel it and reinitialize anyway?"):
                body["force"] = True
                continue
            break
        if not started:
            failed.append(member.name)
        elif wait:
            waiting[member.name] = (member, before)
    _wait_reinit(ctl, waiting, wait_timeout)
    if failed:
        raise CliError(f"reinitialize failed on {', '.join(failed)}")


def _start_time(ctl: Ctl, member: Member) -> Any:
    try:
        return ctl.patroni_status(member, timeout=3).get("postmaster_start_time")
    except CliError:
        return None


def _wait_reinit(ctl: Ctl, waiting: dict[str, tuple[Member, Any]], timeout: float) -> None:
    """--wait: until each member runs again on a new postmaster (its fresh copy), bounded by ``timeout``."""
    if not waiting:
        return
    shown: list[str] = []
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        if sorted(waiting) != shown:
            shown = sorted(waiting)
            click.echo(f"Waiting for reinitialize to complete on: {', '.join(shown)}")
        time.sleep(1)
        for name, (member, before) in list(waiting.items()):
            try:
                status = ctl.patroni_status(member, timeout=3)
            except CliError:
                continue
            if status.get("state") == "running" and status.get("postmaster_start_time") not in (None, before):
                click.echo(f"Reinitialize is completed on: {name}")
                del waiting[name]
    if waiting:
        raise CliError(f"reinitialize did not complete within {timeout:.0f} s on {', '.join(sorted(waiting))}")


def do_flush(ctl: Ctl, cluster_name: str, member_names: tuple[str, ...], target: str, role: str,
             force: bool) -> None:
    scope, view, names = resolve(ctl, cluster_name, member_names)
    if target == "restart":
        for member in get_members(view, scope, names, role, force, "flush"):
            code, text = ctl.request(member, "DELETE", "restart")
            if code == 404:
                click.echo(f"No scheduled restart for member {member.name}")
            else:
                check_response(code, text, member.name, "flush scheduled restart")
        return
    failover = view.failover
    if failover is None or failover.scheduled_at is None:
        click.echo("No pending scheduled switchover")
        return
    ordered = sorted((m for m in view.members if m.api_url), key=lambda m: m.name != view.leader)
    for member in ordered:
        try:
            code, text = ctl.request(member, "DELETE", "switchover")
        except CliError as e:
            click.echo(f"Warning: {e}", err=True)
            continue
        if code in (200, 404):
            click.echo(f"{'Success' if code == 200 else 'Failed'}: {text}")
            return
        click.echo(f"Failed: member={member.name}, status_code={code}, ({text})")
    click.echo(f"{timestamp()} Could not find any accessible member of cluster {scope}")
    if not ctl.dcs(scope).delete_key("failover", version=view.versions.get("failover", 0)):
        raise CliError("the failover key changed meanwhile; nothing was deleted")
