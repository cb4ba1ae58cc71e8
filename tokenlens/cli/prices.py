"""`tokenlens prices ...`: the rates a model is priced at, and newer price data on demand (docs/cli.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenlens import price_data, pricing
from tokenlens.cli.common import ConfigOption, DataDirOption, load_cli_settings
from tokenlens.cli.terminal import printable

app = typer.Typer(help="Show the rates a model is priced at; fetch newer price data.", no_args_is_help=True)

_PROVIDERS = ("openai", "anthropic", "google")


@app.callback()
def _group() -> None:
    """Show the rates a model is priced at; fetch newer price data."""


def _money(value: Any) -> str:
    return f"${value.normalize():f}" if hasattr(value, "normalize") else f"${value}"


def _rate(value: Any) -> str:
    from genai_prices import types as gp

    if isinstance(value, gp.TieredPrices):
        steps = ", ".join(f"{_money(t.price)} above {t.start:,} input tokens" for t in value.tiers)
        return f"{_money(value.base)} ({steps})"
    return _money(value)


def _unit_label(key: str) -> str:
    for suffix, per in (
        ("_mtok", "per 1M tokens"),
        ("_kcount", "per 1,000"),
        ("_mchars", "per 1M characters"),
    ):
        if key.endswith(suffix):
            return f"{key.removesuffix(suffix).replace('_', ' ')} {per}"
    return key.replace("_", " ")


def _rates(model_price: Any) -> list[tuple[str, str]]:
    return [
        (_unit_label(key), _rate(value))
        for key, value in model_price.__dict__.items()
        if not key.startswith("_") and value is not None
    ]


def _since(constraint: Any) -> str:
    start = getattr(constraint, "start_date", None)
    if start is not None:
        return f"since {start.isoformat()}"
    if constraint is None:
        return "from the start of the data"
    start_time, end_time = getattr(constraint, "start_time", None), getattr(constraint, "end_time", None)
    if start_time is not None and end_time is not None:
        return f"daily from {start_time:%H:%M} to {end_time:%H:%M} UTC"
    return f"while {constraint}"


def _entry_report(provider: str, model: str, when: datetime) -> dict[str, Any] | None:
    found = pricing.resolve(provider, model)
    if found is None:
        return None
    gp_provider, info, exact = found
    periods = info.prices if isinstance(info.prices, list) else None
    current_since = "from the start of the data"
    history = []
    if periods:
        active = None
        for period in reversed(periods):
            if period.constraint is None or period.constraint.active(when):
                active = period
                break
        active = active or periods[0]
        current_since = _since(active.constraint)
        history = [
            {"period": _since(p.constraint), "rates": dict(_rates(p.prices))}
            for p in periods
            if p is not active
        ]
    variants = [
        {
            "when": dict(v.when),
            "since": _since(v.constraint),
            "active": v.constraint is None or v.constraint.active(when),
            "rates": dict(_rates(v.prices)),
        }
        for v in info.price_variants or ()
    ]
    return {
        "provider": gp_provider.id,
        "entry": info.id,
        "name": info.name,
        "price_source": info.id if exact else f"inferred:{info.id}",
        "rates": dict(_rates(info.get_prices(when))),
        "since": current_since,
        "other_periods": history,
        "variants": variants,
        "comments": info.price_comments,
    }


@app.command()
def show(
    model: Annotated[str, typer.Argument(help="Model name as a call names it, e.g. gpt-4o-2024-08-06.")],
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="Provider name (default: the first of openai, anthropic, google that knows it).",
        ),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Every rate that applies to MODEL and where it comes from: your pricing override, or the price data
    entry (dated and inferred matches said as such), with the date each rate took effect, the service-tier
    variants and context tiers. Exit 1 when nothing prices it."""
    if output_format not in ("text", "json"):
        typer.echo("--format: expected text or json", err=True)
        raise typer.Exit(2)
    settings, home = load_cli_settings(config, data_dir)
    price_data.load(home)
    now = datetime.now(UTC)
    pricer = pricing.pricer_for(settings.pricing)
    result: dict[str, Any] = {"model": model, "data": price_data.data_info()}
    override = pricer.override_for(model)
    if override is not None:
        name, ov = override
        result["override"] = {
            "name": name,
            "family": ov.family,
            "rates": pricing.rates_of(ov),
            "tiers": [{"above": t.above, **pricing.rates_of(t)} for t in ov.tiers],
            "service_tiers": {k: pricing.rates_of(v) for k, v in ov.service_tiers.items()},
        }
    snapshot = pricing.current_snapshot()
    others = [p.id for p in snapshot.providers if p.id not in _PROVIDERS]
    try:  # the provider genai-prices itself would pick for this name first (deepseek-chat: deepseek)
        guessed = snapshot.find_provider_model(model.lower(), None, None, None)[0].id
        others = [guessed, *(o for o in others if o != guessed)]
    except LookupError:
        pass
    candidates = [provider.lower()] if provider else [*_PROVIDERS, *others]
    for name in candidates:
        entry = _entry_report(name, model, now)
        if entry is not None:
            result["entry"] = entry
            break
    if output_format == "json":
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        _print_text(result)
    if "override" not in result and "entry" not in result:
        raise typer.Exit(1)


def _print_text(result: dict[str, Any]) -> None:
    data = result["data"]

    def echo(line: str) -> None:  # names and labels come from a price data file: nothing a terminal acts on
        typer.echo(printable(line, None))

    echo(f"{result['model']}")
    echo(f"  price data: {data['source']}, dated {data['date'] or 'unknown'} ({data['age_days']} days old)")
    override = result.get("override")
    if override is not None:
        scope = "and its dated names (family: true)" if override["family"] else "this exact name only"
        echo(f"  priced by your override pricing.{override['name']} ({scope}); price_source: override")
        for key, value in override["rates"].items():
            echo(f"    {key:<24} ${value:g} per 1M tokens")
        for tier in override["tiers"]:
            rates = ", ".join(f"{k} ${v:g}" for k, v in tier.items() if k != "above")
            echo(f"    above {tier['above']:,} input tokens: {rates}")
        for tier_name, rates_map in override["service_tiers"].items():
            echo(f"    service tier {tier_name}: " + ", ".join(f"{k} ${v:g}" for k, v in rates_map.items()))
    entry = result.get("entry")
    if entry is not None:
        used = (
            "not used (the override wins)"
            if override is not None
            else f"price_source: {entry['price_source']}"
        )
        echo(f"  price data entry {entry['provider']}/{entry['entry']} ({entry['name']}); {used}")
        if entry["price_source"].startswith("inferred:"):
            echo(f"    the name is not one this entry lists: a guess from {entry['entry']}")
        echo(f"    rates {entry['since']}:")
        for label, value in entry["rates"].items():
            echo(f"      {label:<34} {value}")
        for variant in entry["variants"]:
            when = ", ".join(f"{k}={v}" for k, v in variant["when"].items())
            state = "" if variant["active"] else " (not yet in force)"
            echo(f"    when {when}, {variant['since']}{state}:")
            for label, value in variant["rates"].items():
                echo(f"      {label:<34} {value}")
        for period in entry["other_periods"]:
            echo(
                f"    other period, {period['period']}: "
                + ", ".join(f"{k} {v}" for k, v in period["rates"].items())
            )
    if override is None and entry is None:
        echo(
            f"  no price: {result['model']} is not in the price data and has no override (calls are unpriced)"
        )


@app.command()
def update(
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Read the price data from this file (genai-prices' data.json) instead of fetching it.",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Fetch from this URL (default: where genai-prices publishes its data)."),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Fetch the newest price data genai-prices publishes (or read it from --from FILE), validate it and keep
    it in the data directory as prices.json: the running gateway uses it from its next call, without a
    restart. Only this command fetches; nothing updates prices on its own. Exit 1 when the data cannot be
    read or is not valid."""
    _, home = load_cli_settings(config, data_dir)
    if from_file is not None:
        try:
            raw = from_file.expanduser().read_bytes()
        except OSError as exc:
            typer.echo(f"cannot read {from_file}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        source = str(from_file.expanduser().resolve())
    else:
        import httpx

        source = url or price_data.update_url()
        try:
            response = httpx.get(source, timeout=30, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            typer.echo(f"cannot fetch {source}: {exc}; use --from FILE with a downloaded copy", err=True)
            raise typer.Exit(1) from None
        raw = response.content
    try:
        meta = price_data.install(home, raw, source)
    except price_data.PriceDataError as exc:
        typer.echo(f"not used: {source}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"OK: {meta['providers']} providers, {meta['models']} models (newest price from "
        f"{meta['newest_price_date'] or 'unknown'}) kept in {home / price_data.DATA_FILE}; "
        "a running gateway uses it from its next call"
    )
