"""``pgha validate [CONFIG]``: check a Patroni-format configuration without starting anything.

Output contract
- valid: ``<CONFIG>: valid`` on stdout, then each warning line as ``Warning: <text>``; exit status 0.
- invalid: one ``Error: <key.path>: <what was expected>`` line per problem on stderr; exit status 1.
Without CONFIG the configuration comes from ``PATRONI_CONFIGURATION`` or the ``PATRONI_*`` variables, as for
the agent. Secrets are never printed.
"""

from __future__ import annotations

from typing import Mapping

import click

from pgha.config import ConfigError, load_config


def check(path: str | None, env: Mapping[str, str] | None = None) -> tuple[int, list[str], list[str]]:
    """(exit status, stdout lines, stderr lines) of validating ``path`` -- the command without the terminal."""
    try:
        config, warnings = load_config(path, env)
    except ConfigError as exc:
        return 1, [], [f"Error: {e}" for e in exc.errors]
    return 0, [f"{path or config.source}: valid"] + [f"Warning: {w}" for w in warnings], []


@click.command("validate")
@click.argument("config", required=False, type=click.Path(dir_okay=True, file_okay=True))
def validate(config: str | None) -> None:
    """Check CONFIG (a YAML file or a directory of them) and report every problem by key path."""
    status, out, err = check(config)
    for line in out:
        click.echo(line)
    for line in err:
        click.echo(line, err=True)
    if status:
        raise SystemExit(status)
