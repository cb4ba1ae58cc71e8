"""The `tokenlens` command line: one sub-app per command group."""

from __future__ import annotations

import typer

from tokenlens.cli import analyze, ca, config_cmd, daemon, data, demo, info, prices, reports, service, top

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="TokenLens: a local AI gateway that meters every call to Anthropic, OpenAI and Google AI.",
)
app.command()(daemon.daemon)
app.command()(ca.ca)
app.command()(info.env)
app.command()(info.ui)
app.command()(info.status)
app.command()(top.top)
app.command()(demo.demo)
app.command()(service.install)
app.command()(service.uninstall)
app.command()(analyze.analyze)
app.add_typer(config_cmd.app, name="config")
app.add_typer(prices.app, name="prices")
data.register(app)
reports.register(app)


def main() -> None:
    app()
