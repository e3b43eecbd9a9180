"""The `podyn-fast` command line: thin commands that build settings and call the library."""

from __future__ import annotations

from typing import Annotated

import typer

from podyn_fast import __version__

app = typer.Typer(
    name="podyn-fast",
    help="Move DynamoDB tables into PostgreSQL (or Citus) fast, and keep them in sync until cutover.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"podyn-fast {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Move DynamoDB tables into PostgreSQL (or Citus) fast, and keep them in sync until cutover."""


def main() -> None:
    app()
