"""`tokenlens report` and `tokenlens digest`: spend reports read from the store (read-only, no daemon needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenlens import analytics
from tokenlens.alerts import pricer_of
from tokenlens.cli.terminal import printable
from tokenlens.config import (
    ConfigError,
    Settings,
    config_path,
    load_settings,
    resolve_timezone,
    tokenlens_home,
)
from tokenlens.money import format_usd
from tokenlens.store import SchemaError, Store, open_store

FORMATS = ("text", "json", "md")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Configuration file (default $TOKENLENS_CONFIG).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default $TOKENLENS_HOME, ~/.tokenlens).")
]
FormatOption = Annotated[str, typer.Option("--format", help="text, json or md.")]


def _open(config: Path | None, data_dir: Path | None) -> tuple[Settings, Store]:
    home = (data_dir or tokenlens_home()).expanduser()
    config_file = (config or config_path()).expanduser()
    try:
        settings = load_settings(config_file)
    except ConfigError as problem:
        typer.echo(f"Configuration error in {config_file}: {problem}", err=True)
        raise typer.Exit(2) from None
    try:
        return settings, open_store(settings, home, readonly=True)
    except FileNotFoundError:
        typer.echo(f"No TokenLens data in {home} yet.", err=True)
        raise typer.Exit(1) from None
    except SchemaError as problem:
        typer.echo(str(problem), err=True)
        raise typer.Exit(1) from None


def _usd(value: float | None) -> str:
    return format_usd(value)


def _shown(value: object, md: bool) -> str:
    """A name from call data as it may be printed: escaped for the terminal (and for a Markdown table)."""
    text = printable(value)
    return text.replace("\\", "\\\\").replace("|", "\\|") if md else text


def _table(rows: list[list[str]], md: bool) -> list[str]:
    if md:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _items(title: str, items: list[dict[str, Any]], md: bool) -> list[str]:
    rows = [["name", "cost", "calls", "input", "output"]] + [
        [
            _shown(i["name"], md),
            _usd(i["cost_usd"]),
            str(i["calls"]),
            str(i["input_tokens"]),
            str(i["output_tokens"]),
        ]
        for i in items
    ]
    head = f"## {title}" if md else title
    return ["", head, *(_table(rows, md) if items else ["(none)"])]


def render_report(data: dict[str, Any], fmt: str) -> str:
    """The `report` text (text or md) of `build_report`'s data."""
    md = fmt == "md"
    kpi, fc = data["kpi"], data["forecast"]
    lines = [
        f"# TokenLens report: last {data['days']} days"
        if md
        else f"TokenLens report: last {data['days']} days",
        "",
        f"Spend {_usd(kpi['total_cost_usd'])} over {kpi['calls']} calls "
        f"({kpi['unpriced_calls']} unpriced, {kpi['blocked_calls']} blocked, {kpi['error_calls']} errors); "
        f"saved {_usd(kpi['total_saved_usd'])}.",
        f"Month {fc['month']}: {_usd(fc['month_to_date_usd'])} so far, projected {_usd(fc['projected_month_usd'])} "
        f"({_usd(fc['low_usd'])} to {_usd(fc['high_usd'])}), trend {fc['trend']}, confidence {fc['confidence']}"
        + (f", budget {_usd(fc['budget_monthly_usd'])}" if fc["budget_monthly_usd"] is not None else "")
        + ".",
    ]
    lines += _items("Sources", data["sources"], md)
    lines += _items("Models", data["models"], md)
    rows = [["date", "cost", "calls"]] + [
        [d["date"], _usd(d["cost_usd"]), str(d["calls"])] for d in data["daily"]
    ]
    lines += ["", "## Daily" if md else "Daily", *_table(rows, md)]
    return "\n".join(lines) + "\n"


def build_report(store: Store, settings: Settings, days: int) -> dict[str, Any]:
    tz = resolve_timezone(settings.timezone)
    return {
        "days": days,
        "kpi": store.kpi(days, tz),
        "daily": analytics.daily(store, days, tz)["days"],
        "sources": analytics.sources(store, days, tz)["items"],
        "models": analytics.models(store, days, tz)["items"],
        "forecast": analytics.forecast(store, tz, settings.budgets.monthly_usd),
    }


def render_digest(d: dict[str, Any], fmt: str) -> str:
    md = fmt == "md"
    change = "" if d["change_pct"] is None else f" ({d['change_pct']:+.1f}% on the week before)"
    fc = d["forecast"]
    lines = [
        f"# Weekly digest {d['week_start']} to {d['week_end']}"
        if md
        else f"TokenLens weekly digest {d['week_start']} to {d['week_end']}",
        "",
        f"Spend {_usd(d['spend_usd'])} over {d['calls']} calls{change}.",
        f"Waste: {d['waste']['tokens']:,} tokens, {_usd(d['waste']['usd'])}"
        + "".join(
            f"{'; most' if i == 0 else ','} {printable(w['source'], None)} on {printable(w['model'], None)} "
            f"({w['tokens']:,} tokens, {_usd(w['usd'])})"
            for i, w in enumerate(d["waste"].get("top", []))
        )
        + ".",
        f"Month {fc['month']} projected {_usd(fc['projected_month_usd'])}"
        + (
            f" against a budget of {_usd(fc['budget_monthly_usd'])}"
            + (" (over)" if fc["projected_over_budget"] else "")
            if fc["budget_monthly_usd"] is not None
            else ""
        )
        + ".",
    ]
    lines += _items("Top sources", d["top_sources"], md)
    lines += _items("Top models", d["top_models"], md)
    lines += ["", "## Anomalies" if md else "Anomalies"]
    lines += [_anomaly_line(a) for a in d["anomalies"]] or ["(none)"]
    lines += ["", "## Recommendations" if md else "Recommendations"]
    lines += [
        f"- {printable(r.get('summary') or analytics.recommendation_text(r), None)}"
        for r in d["recommendations"]
    ] or ["(none)"]
    return "\n".join(lines) + "\n"


def _anomaly_line(a: dict[str, Any]) -> str:
    """An anomaly of the digest: the day, whose (a source or the total), the figure and its usual level."""
    shown = (
        _usd if a["metric"] == "spend" else (lambda v: f"{v:,.0f}" if isinstance(v, int | float) else str(v))
    )
    who = printable(a["source"]) if a["source"] else "all sources"
    return (
        f"- {a['date']} {who} {a['metric']}: {shown(a['value'])} "
        f"(14-day mean {shown(a['mean'])}, std {shown(a['std'])})"
    )


def _check_format(fmt: str) -> str:
    value = fmt.lower()
    if value not in FORMATS:
        raise typer.BadParameter("expected text, json or md", param_hint="--format")
    return value


def report(
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="Calendar days, today included.")] = 30,
    format: FormatOption = "text",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Spend report: totals, forecast, sources, models and daily spend."""
    fmt = _check_format(format)
    settings, store = _open(config, data_dir)
    try:
        data = build_report(store, settings, days)
    finally:
        store.close()
    typer.echo(json.dumps(data, indent=2) if fmt == "json" else render_report(data, fmt), nl=fmt == "json")


def digest(
    format: FormatOption = "text",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """The weekly digest (the 7 complete days ending yesterday)."""
    fmt = _check_format(format)
    settings, store = _open(config, data_dir)
    try:
        data = analytics.digest(
            store, resolve_timezone(settings.timezone), pricer_of(settings), settings.budgets.monthly_usd
        )
    finally:
        store.close()
    typer.echo(json.dumps(data, indent=2) if fmt == "json" else render_digest(data, fmt), nl=fmt == "json")


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(digest)
