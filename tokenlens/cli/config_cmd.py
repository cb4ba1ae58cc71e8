"""`tokenlens config ...`: check the configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tokenlens.config import ConfigError, config_path, load_settings, startup_problem

app = typer.Typer(help="Check the TokenLens configuration file.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Check the TokenLens configuration file."""


@app.command()
def validate(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Configuration file to check (default: $TOKENLENS_CONFIG or $TOKENLENS_HOME/config.yaml).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate a configuration file and say exactly what is wrong and where.

    Exit status: 0 valid, 1 invalid, 2 the named file does not exist.
    """
    path = file if file is not None else config_path()
    if not path.exists():
        if file is not None:
            typer.echo(f"{path}: no such file", err=True)
            raise typer.Exit(2)
        typer.echo(f"OK: {path} does not exist, so TokenLens runs on the defaults")
        return
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        where = f" (line {exc.line})" if exc.line is not None and exc.field else ""
        typer.echo(f"{path}: {exc}{where}", err=True)
        raise typer.Exit(1) from None
    problem = startup_problem(settings)
    if problem is not None:
        typer.echo(f"{path}: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"OK: {path}")
