"""How the CLI fails: `Error: <reason>` on stderr and exit code 1, as patronictl does."""

from __future__ import annotations

import click


class CliError(click.ClickException):
    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)
