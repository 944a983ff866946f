"""`pgha verify`: a bank workload against the cluster while faults are injected, then what was lost, what
stayed in doubt, whether the balances still sum up, and whether two nodes ever took writes at once.

    pgha -c /tmp/pgha-root/pgha.yml verify --fault kill-leader --fault switchover --duration 60 \\
        --json /tmp/verify.json --plot /tmp/verify.png

Rules
1. The cluster is `-c CLUSTER.yml`: DIR/pgha.yml of a `pgha up` cluster gives every fault (its state.json has
   the PIDs); any other ctl config gives the REST API and SQL faults only. Without `-c`, only `--fault none`.
2. Without --dsn the workload goes through the local cluster's HAProxy read-write port when HAProxy runs, else a
   libpq multi-host string of the members with target_session_attrs=read-write.
3. Exit status 0 when nothing acknowledged was lost, the sum held and no two nodes took writes at once; 1 when
   any of these failed (after printing the table and writing the files), and on errors.
"""

from __future__ import annotations

import json
import os

import click

from pgha.cli.errors import CliError


def _target(obj: dict):
    from pgha.verify.target import CtlTarget, LocalTarget, TargetError
    path = obj.get("config_file")
    if path is None and not obj.get("dcs_url"):
        return None
    try:
        local = LocalTarget.from_config(path) if path else None
        return local or CtlTarget(path, obj.get("dcs_url"))
    except TargetError as e:
        raise CliError(str(e)) from None


@click.command()
@click.option("--fault", "faults", multiple=True, metavar="NAME",
              help="a fault from the menu (repeat for several, injected in turn); see --list-faults")
@click.option("--duration", type=click.FloatRange(2, 24 * 3600), default=30, show_default=True,
              help="seconds of workload; cut into one window per fault")
@click.option("--dsn", "dsns", multiple=True, help="where the clients connect (repeat: clients spread over them)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the figures as JSON here")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="write the timeline PNG here")
@click.option("--clients", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="seeds the transfers and the fault choices")
@click.option("--rate", type=click.FloatRange(0, 10000), default=50, show_default=True,
              help="transactions per second per client (0: as fast as possible)")
@click.option("--accounts", type=click.IntRange(2, 100000), default=10, show_default=True)
@click.option("--min-gap", type=click.FloatRange(0, 3600), default=0.2, show_default=True,
              help="a pause in commits shorter than this is not counted as unavailability")
@click.option("--dcs-outage", type=click.FloatRange(1, 3600), default=None,
              help="kill-dcs-member: seconds before the DCS member is started again  [default: the cluster's ttl]")
@click.option("--list-faults", is_flag=True, help="print the fault menu and exit")
@click.pass_obj
def verify(obj: dict, faults: tuple[str, ...], duration: float, dsns: tuple[str, ...], json_path: str | None,
           plot_path: str | None, clients: int, seed: int, rate: float, accounts: int, min_gap: float,
           dcs_outage: float | None, list_faults: bool) -> None:
    """Run a bank workload while injecting FAULTs; report unavailability, loss, the invariant and split brain."""
    from pgha.verify.faults import FAULTS, FaultError, check_menu
    from pgha.verify.runner import Settings
    if list_faults:
        for fault in FAULTS.values():
            click.echo(f"{fault.name:28} {fault.help}")
        return
    target = _target(obj)
    try:
        check_menu(list(faults) or ["none"], target)
        settings = Settings(dsns=list(dsns) or _default_dsns(target), clients=clients, seed=seed, rate=rate,
                            accounts=accounts, min_gap=min_gap, dcs_outage=dcs_outage)
        _run(target, list(faults), duration, settings, json_path, plot_path)
    except FaultError as e:
        raise CliError(str(e)) from None
    finally:
        if target is not None:
            target.close()


def _default_dsns(target) -> list[str]:
    """Without --dsn: the cluster's router, or its libpq multi-host string."""
    from pgha.verify.target import TargetError
    if target is None:
        raise CliError("give --dsn, or -c CLUSTER.yml")
    try:
        return [target.default_dsn()]
    except TargetError as e:
        raise CliError(str(e)) from None


def _run(target, faults: list[str], duration: float, settings, json_path: str | None, plot_path: str | None) -> None:
    from pgha.verify.render import plot, redact, table, to_json
    from pgha.verify.report import ok
    from pgha.verify.runner import VerifyError, verify as run_verify
    from pgha.verify.target import TargetError
    click.echo(f"verify: {settings.clients} clients on {', '.join(redact(d) for d in settings.dsns)} for "
               f"{duration:.0f}s, faults: {', '.join(faults) or 'none'}")
    try:
        result = run_verify(settings, faults, duration, target, say=lambda line: click.echo(f"  {line}"))
    except (VerifyError, TimeoutError, TargetError) as e:
        raise CliError(str(e)) from None
    click.echo(table(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(to_json(result), f, indent=2)
            f.write("\n")
        click.echo(f"JSON: {os.path.abspath(json_path)}")
    if plot_path:
        plot(result, plot_path)
        click.echo(f"timeline: {os.path.abspath(plot_path)}")
    if not ok(result.report):
        raise SystemExit(1)
