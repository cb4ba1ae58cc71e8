"""What the commands share: the --config and --data-dir options, settings loading, reaching the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from tokenlens.config import (
    ConfigError,
    ServerSettings,
    Settings,
    config_path,
    is_loopback_host,
    load_settings,
    tokenlens_home,
)

HEALTH_TIMEOUT = 1.0

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Configuration file (default $TOKENLENS_CONFIG).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default $TOKENLENS_HOME, ~/.tokenlens).")
]


def load_cli_settings(config: Path | None, data_dir: Path | None) -> tuple[Settings, Path]:
    home = (data_dir or tokenlens_home()).expanduser()
    config_file = (config or config_path()).expanduser()
    if config is not None and not config_file.exists():
        typer.echo(f"Configuration file {config_file} does not exist.", err=True)
        raise typer.Exit(2)
    try:
        return load_settings(config_file), home
    except ConfigError as problem:
        typer.echo(f"Configuration error in {config_file}: {problem}", err=True)
        raise typer.Exit(2) from None


def daemon_url(server: ServerSettings) -> str:
    """The base URL of the daemon described by `server` (a wildcard address is reached on loopback)."""
    host = server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def auth_headers(server: ServerSettings) -> dict[str, str]:
    if server.api_token and not is_loopback_host(server.host):
        return {"Authorization": f"Bearer {server.api_token}"}
    return {}


def daemon_is_up(server: ServerSettings) -> bool:
    try:
        response = httpx.get(
            daemon_url(server) + "/healthz", timeout=HEALTH_TIMEOUT, headers=auth_headers(server)
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def daemon_get(server: ServerSettings, path: str, **params: Any) -> Any:
    """GET a JSON API path of the running daemon; httpx errors propagate."""
    response = httpx.get(daemon_url(server) + path, params=params, timeout=5.0, headers=auth_headers(server))
    response.raise_for_status()
    return response.json()


def not_running_message(server: ServerSettings) -> str:
    return (
        f"TokenLens is not running on {daemon_url(server)}; start it with `tokenlens daemon` "
        "(or `tokenlens install` to run it at login)."
    )
