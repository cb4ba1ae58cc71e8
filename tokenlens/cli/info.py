"""`tokenlens env`, `tokenlens ui` and `tokenlens status`: how to point clients at the gateway, and what it is doing."""

from __future__ import annotations

import webbrowser
from enum import StrEnum
from typing import Annotated, Any

import httpx
import typer

from tokenlens.cli.common import (
    ConfigOption,
    DataDirOption,
    daemon_get,
    daemon_is_up,
    daemon_url,
    load_cli_settings,
    not_running_message,
)
from tokenlens.cli.terminal import printable
from tokenlens.config import ServerSettings
from tokenlens.money import format_usd

PortOption = Annotated[
    int | None, typer.Option("--port", help="The gateway's port (default server.port, 8420).")
]


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def base_url_variables(port: int, host: str = "localhost") -> dict[str, str]:
    """The base-URL variables of docs/cli.md."""
    root = f"http://{host}:{port}/proxy"
    return {
        "ANTHROPIC_BASE_URL": f"{root}/anthropic",
        "OPENAI_BASE_URL": f"{root}/openai/v1",
        "GOOGLE_GEMINI_BASE_URL": f"{root}/google",
        "GOOGLE_AI_BASE_URL": f"{root}/google",
    }


def export_lines(variables: dict[str, str], shell: Shell) -> list[str]:
    if shell is Shell.fish:
        return [f"set -gx {name} {value}" for name, value in variables.items()]
    return [f"export {name}={value}" for name, value in variables.items()]


def _server(config: Any, data_dir: Any, port: int | None) -> ServerSettings:
    settings, _ = load_cli_settings(config, data_dir)
    server = settings.server
    return ServerSettings(**{**server.__dict__, "port": port if port is not None else server.port})


def env(
    shell: Annotated[Shell, typer.Option("--shell", help="Syntax of the exports.")] = Shell.bash,
    port: PortOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the exports for base-URL mode: eval "$(tokenlens env)"."""
    server = _server(config, data_dir, port)
    variables = base_url_variables(server.port)
    for line in export_lines(variables, shell):
        typer.echo(line)
    typer.echo(
        "# Codex reads no variable for its base URL: `tokenlens install` writes it to ~/.codex/config.toml,"
    )
    typer.echo(
        f'# or put this first in that file yourself: openai_base_url = "{variables["OPENAI_BASE_URL"]}"'
    )


def ui(
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the URL without opening a browser.")
    ] = False,
    port: PortOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Open the dashboard in the browser (it is served by the running daemon)."""
    server = _server(config, data_dir, port)
    if not daemon_is_up(server):
        typer.echo(not_running_message(server), err=True)
        raise typer.Exit(1)
    url = daemon_url(server).replace("127.0.0.1", "localhost") + "/"
    typer.echo(url)
    if not no_open:
        webbrowser.open(url)


def _money(value: Any) -> str:
    return format_usd(None if value is None else float(value))


def status(
    port: PortOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Is the daemon up; today's and this month's spend against the caps; the last calls. Exit 1 when down."""
    server = _server(config, data_dir, port)
    try:
        state = daemon_get(server, "/api/status")
    except httpx.HTTPError:
        typer.echo(not_running_message(server), err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"TokenLens {printable(state.get('version', '?'))} is running on {daemon_url(server)} (up {_duration(state.get('uptime_s'))})"
    )
    typer.echo(f"Spend today {_money(state.get('today_usd'))}, this month {_money(state.get('month_usd'))}")
    try:
        caps = daemon_get(server, "/api/usage/budget-status").get("caps", [])
    except httpx.HTTPError:
        caps = []
    for cap in caps:
        typer.echo(
            f"  {printable(cap.get('scope'))} {printable(cap.get('period'))} cap {_money(cap.get('limit_usd'))}: "
            f"spent {_money(cap.get('spent_usd'))}, remaining {_money(cap.get('remaining_usd'))}"
        )
    if not caps:
        typer.echo("  no budget caps set (budgets.daily_usd, budgets.monthly_usd)")
    calls = daemon_get(server, "/api/calls", limit=5).get("calls", [])
    typer.echo("Last calls:" if calls else "No calls yet.")
    for call in calls:
        tokens = f"{call.get('input_tokens', 0)}→{call.get('output_tokens', 0)} tok"
        when = printable(str(call.get("ts", ""))[:19].replace("T", " "))
        source, model = printable(call.get("source", "?")), printable(call.get("model") or "-")
        typer.echo(
            f"  {when}  {source:<16} {model:<28} {printable(call.get('status') or '-'):>3} {tokens:>16} "
            f"{_money(call.get('cost_usd'))}"
        )


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
