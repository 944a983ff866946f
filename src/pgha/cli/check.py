"""`pgha check primary|replica|read-only|health`: this node's role as an exit code, for keepalived's vrrp_script
(seed 002's chk_patroni_leader.sh) and other scripts.

It asks the node's own REST API, exactly as HAProxy does (GET /<role>: 200 means yes), so a script and the router
never disagree: exit 0 when the answer is 200, 1 otherwise, also when the API cannot be reached in time (a node
that does not answer must not hold a VIP). The API is the ``--url`` given, else ``restapi.connect_address`` of
the configuration file (`pgha -c NODE.yml check primary`), else http://127.0.0.1:8008.
"""

from __future__ import annotations

import sys

import click
import requests
import yaml

DEFAULT_URL = "http://127.0.0.1:8008"


def api_url(config_file: str | None) -> str:
    """The REST API of the node a configuration file describes (Patroni's restapi section)."""
    if not config_file:
        return DEFAULT_URL
    try:
        with open(config_file) as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise click.ClickException(f"cannot read {config_file}: {e}") from None
    restapi = raw.get("restapi") if isinstance(raw, dict) else None
    address = restapi.get("connect_address") if isinstance(restapi, dict) else None
    if not isinstance(address, str) or not address:
        return DEFAULT_URL
    scheme = "https" if restapi.get("certfile") else "http"
    return f"{scheme}://{address}"


@click.command("check")
@click.argument("role", type=click.Choice(["primary", "replica", "read-only", "health"]))
@click.option("--url", help="the node's REST API (default: restapi.connect_address of -c FILE, else "
                            f"{DEFAULT_URL})")
@click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(0.1, 60), help="seconds")
@click.option("-q", "--quiet", is_flag=True, help="no output, only the exit code")
@click.pass_obj
def check(obj: dict, role: str, url: str | None, timeout: float, quiet: bool) -> None:
    """Exit 0 when this node is ROLE (its REST API answers GET /ROLE with 200), else 1."""
    base = (url or api_url((obj or {}).get("config_file"))).rstrip("/")
    try:
        code = requests.get(f"{base}/{role}", timeout=timeout, verify=False).status_code
    except requests.RequestException as e:
        if not quiet:
            click.echo(f"{role}: no (the REST API at {base} did not answer: {type(e).__name__})", err=True)
        sys.exit(1)
    if not quiet:
        click.echo(f"{role}: {'yes' if code == 200 else 'no'} ({base}/{role} answered {code})")
    sys.exit(0 if code == 200 else 1)
