"""`tokenlens demo`: a realistic history in a separate data directory, and the gateway running on it (docs/cli.md).

The demo lives in `$TOKENLENS_HOME/demo` (its own store and `config.yaml`), so the user's own data is never
touched. Every run starts from a fresh store: the history is generated (`tokenlens.demo`) up to now and
imported through the store's import path, which prices the calls and builds the rollups.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from tokenlens import demo as history
from tokenlens.config import ConfigError, Settings, load_settings, tokenlens_home
from tokenlens.pricing import pricer_for
from tokenlens.store import ImportResult, open_store

MARKER = ".tokenlens-demo"
DEMO_CONFIG = """\
# The configuration of `tokenlens demo` (its own data directory; your real configuration is not used).
budgets: {daily_usd: 4.0, monthly_usd: 60.0}
quotas:
  kill_switches: []
  source_limits: [{source: code-agent, daily_usd: 2.5, monthly_usd: 35.0}]
  model_limits: [{model: claude-opus-4-1, daily_calls: 50}]
alerts: {daily_cost_threshold: 3.0}
dedup: {enabled: true, ttl_s: 300, max_entries: 10000}
"""


def demo_home() -> Path:
    """Where the demo keeps its data: `$TOKENLENS_HOME/demo`."""
    return tokenlens_home().expanduser() / "demo"


def reset_home(home: Path) -> None:
    """Empty a demo directory made by an earlier run (only one carrying the demo marker is removed)."""
    if home.exists() and (home / MARKER).exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `tokenlens demo`; removed and refilled on every run\n")


def fill_store(
    settings: Settings, home: Path, days: int, seed: int, now: float | None = None
) -> ImportResult:
    """Generate the history and import it into the store of `home` (priced, rollups built)."""
    pricer = pricer_for(settings.pricing)
    records = history.generate(days=days, seed=seed, now=now)
    store = open_store(settings.storage.url, home)
    try:
        return store.import_lines(history.lines(records, pricer), pricer, store_bodies=True)
    finally:
        store.close()


def demo(
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of history to generate.")] = 30,
    port: Annotated[int, typer.Option(help="Port for the demo gateway (default 8420).")] = 8420,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same history.")] = 7,
) -> None:
    """Fill $TOKENLENS_HOME/demo with a realistic history and run the gateway on it."""
    from tokenlens.cli.daemon import port_problem, run_gateway

    home = demo_home()
    problem = port_problem("127.0.0.1", port)
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(1)
    if home.exists() and any(home.iterdir()) and not (home / MARKER).exists():
        typer.echo(f"{home} exists and was not made by `tokenlens demo`; move it away first.", err=True)
        raise typer.Exit(1)
    reset_home(home)
    config_file = home / "config.yaml"
    config_file.write_text(DEMO_CONFIG)
    try:
        settings = load_settings(config_file)
    except ConfigError as error:  # pragma: no cover - the demo configuration is fixed
        typer.echo(f"Configuration error in {config_file}: {error}", err=True)
        raise typer.Exit(2) from None
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, port=port))
    started = time.monotonic()
    result = fill_store(settings, home, days, seed)
    typer.echo(
        f"Demo data: {result.imported} calls over {days} days in {home} ({time.monotonic() - started:.1f} s).",
        err=True,
    )
    run_gateway(settings, home, config_file)
