"""`tokenlens analyze FILE|-`: offline analysis of a request body or prompt (no daemon needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tokenlens.analyze import PROVIDERS, AnalyzeError, analyze_request, render_text
from tokenlens.cli.common import ConfigOption
from tokenlens.config import ConfigError, config_path, load_settings
from tokenlens.pricing import Pricer, pricer_for

FORMATS = ("text", "json")


def _pricer(config: Path | None) -> Pricer:
    """The pricer with the configuration's pricing overrides (the gateway's), or the plain price database."""
    path = (config or config_path()).expanduser()
    if config is None and not path.exists():
        return Pricer()
    try:
        return pricer_for(load_settings(path).pricing)
    except (ConfigError, ValueError, OSError) as problem:
        typer.echo(f"Configuration error in {path}: {problem}", err=True)
        raise typer.Exit(2) from None


def analyze(
    file: Annotated[
        str,
        typer.Argument(help="A request body (OpenAI, Anthropic or Gemini JSON) or a prompt; - for stdin."),
    ],
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    model: Annotated[
        str | None, typer.Option("--model", help="Model to price (default: the body's).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="openai, anthropic or google, when the body does not say."),
    ] = None,
    max_waste_pct: Annotated[
        float | None,
        typer.Option(
            "--max-waste-pct", help="Exit with status 1 when waste exceeds this share of the input (CI)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Analyse a request body or prompt offline: waste, heatmap, complexity, cost on this and cheaper models,
    suggestions."""
    if fmt not in FORMATS:
        raise typer.BadParameter("expected text or json", param_hint="--format")
    if provider is not None and provider not in PROVIDERS:
        raise typer.BadParameter(f"expected one of {', '.join(PROVIDERS)}", param_hint="--provider")
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).expanduser().read_bytes()
    except OSError as exc:
        typer.echo(f"Cannot read {file}: {exc.strerror or exc}.", err=True)
        raise typer.Exit(2) from None
    try:
        result = analyze_request(raw, provider=provider, model=model, pricer=_pricer(config))
    except AnalyzeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(render_text(result), nl=False)
    if max_waste_pct is not None and result["waste"]["pct"] > max_waste_pct:
        typer.echo(
            f"Waste {result['waste']['pct']}% is over the allowed {max_waste_pct}% of the input.", err=True
        )
        raise typer.Exit(1)
