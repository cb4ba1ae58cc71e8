"""`tokenlens report` and `tokenlens digest` read the store directly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from harness.clock import today_from
from tokenlens.cli.reports import register
from tokenlens.records import CallRecord
from tokenlens.store import open_store


def test_report_and_digest(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\nbudgets: {monthly_usd: 100}\n")
    store = open_store(None, tmp_path)
    now = time.time()
    store.insert_calls(
        [
            CallRecord(
                id=f"c{i}",
                ts=now - i * 86400,
                provider="openai",
                endpoint="/v1/chat/completions",
                source="agent" if i % 2 else "batch",
                model="gpt-4o-mini",
                input_tokens=1000,
                output_tokens=100,
                cost_usd=0.5,
                priced=True,
            )
            for i in range(10)
        ],
        store_bodies=False,
    )
    store.close()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    args = ["--config", str(config), "--data-dir", str(tmp_path)]
    result = runner.invoke(app, ["report", "--days", "5", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kpi"]["calls"] == 5 and data["kpi"]["total_cost_usd"] == 2.5
    assert {s["name"]: s["calls"] for s in data["sources"]} == {"agent": 2, "batch": 3}
    text = runner.invoke(app, ["report", "--days", "5", *args])
    assert text.exit_code == 0 and "Spend $2.50 over 5 calls" in text.output
    md = runner.invoke(app, ["report", "--format", "md", *args])
    assert md.output.startswith("# TokenLens report: last 30 days") and "| agent |" in md.output
    digest = runner.invoke(app, ["digest", *args])
    assert digest.exit_code == 0, digest.output
    assert "Spend $3.50 over 7 calls" in digest.output  # the 7 days before today
    assert runner.invoke(app, ["report", "--format", "xml", *args]).exit_code != 0


def test_report_and_digest_show_hostile_names_escaped(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\n")
    hostile_source = "a|b\x1b]0;pwned\x07"
    hostile_model = "[/]\u202e\x9b2J"
    store = open_store(None, tmp_path)
    now = time.time()
    store.insert_calls(
        [
            CallRecord(
                id=f"h{i}",
                ts=now - i * 86400,
                provider="openai",
                endpoint="/v1/chat/completions",
                source=hostile_source,
                model=hostile_model,
                input_tokens=10,
                output_tokens=1,
                cost_usd=0.01,
                priced=True,
            )
            for i in range(8)
        ],
        store_bodies=False,
    )
    store.close()
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    args = ["--config", str(config), "--data-dir", str(tmp_path)]
    for command in ("report", "digest"):
        for fmt in ("text", "md"):
            result = runner.invoke(app, [command, "--format", fmt, *args])
            assert result.exit_code == 0, result.output
            for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
                assert raw not in result.output
            shown = "[/]\\u202e\\x9b2J" if fmt == "text" else "[/]\\\\u202e\\\\x9b2J"  # md doubles "\\"
            assert shown in result.output, (command, fmt)
    text = runner.invoke(app, ["report", *args]).output
    assert "a|b\\x1b]0;pwned\\x07" in text
    md = runner.invoke(app, ["report", "--format", "md", *args]).output
    assert "| a\\|b\\\\x1b]0;pwned\\\\x07 |" in md  # a pipe in a name does not split the Markdown row


def test_report_amounts_are_never_zero_and_large_ones_grouped(tmp_path: Path) -> None:
    """Sub-cent spend shows its two significant digits; large spend has thousands separators."""
    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\n")
    store = open_store(None, tmp_path)
    now = today_from(240) + 240  # the calls go up to 4 minutes back: all today
    tiny = [0.0007, 0.0007]  # two gpt-4o-mini calls of $0.0007: $0.0014 together
    large = [1234.5, 0.06]  # a $1,234.50 batch and a 6-cent call: $1,234.56
    store.insert_calls(
        [
            CallRecord(
                id=f"t{i}",
                ts=now - 60 * (i + 1),
                provider="openai",
                endpoint="/v1/chat/completions",
                source=source,
                model="gpt-4o-mini",
                input_tokens=100,
                output_tokens=10,
                cost_usd=cost,
                priced=True,
            )
            for i, (source, cost) in enumerate([("tiny", c) for c in tiny] + [("large", c) for c in large])
        ],
        store_bodies=False,
    )
    store.close()
    app = typer.Typer()
    register(app)
    args = ["--config", str(config), "--data-dir", str(tmp_path)]
    out = CliRunner().invoke(app, ["report", "--days", "1", *args]).output
    total = sum(tiny) + sum(large)  # $1,234.5614 -> cents
    assert f"Spend ${total:,.2f} over 4 calls" in out, out
    assert "tiny   $0.0014" in out and "large  $1,234.56" in out, out  # the two sources' rows
    assert "$0.0000" not in out and "$0.00 " not in out.replace("saved $0.00.", ""), out


def test_digest_lines_name_source_model_and_amount_and_never_repeat(tmp_path: Path) -> None:
    """Issue 20: two waste lines about two models of one source read alike ("... in claude-code's prompts:
    about $0.0005 a month"). Each line names its source, model and amount; no two are equal."""
    from published_prices import PRICES
    from tokenlens.money import format_usd

    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\n")
    store = open_store(None, tmp_path)
    now = time.time()
    sonnet, haiku, mini = PRICES["claude-sonnet-4-6"], PRICES["claude-haiku-4-5"], PRICES["gpt-4o-mini"]
    calls = []
    # the same waste cost on two models of one source: 500 tokens at $3/M = 1,500 tokens at $1/M = $0.0015
    for i, (model, waste, rate) in enumerate(
        [("claude-sonnet-4-6", 500, sonnet), ("claude-haiku-4-5", 1500, haiku)]
    ):
        calls.append(
            CallRecord(
                id=f"w{i}",
                ts=now - 2 * 86400,
                provider="anthropic",
                endpoint="/v1/messages",
                source="claude-code",
                model=model,
                input_tokens=4000,
                output_tokens=10,
                cost_usd=(4000 * rate["input"] + 10 * rate["output"]) / 1e6,
                priced=True,
                waste_tokens=waste,
            )
        )
    calls.append(
        CallRecord(
            id="w2",
            ts=now - 2 * 86400,
            provider="openai",
            endpoint="/v1/chat/completions",
            source="batch",
            model="gpt-4o-mini",
            input_tokens=4000,
            output_tokens=10,
            cost_usd=(4000 * mini["input"] + 10 * mini["output"]) / 1e6,
            priced=True,
            waste_tokens=2000,
        )
    )
    # ten simple calls of claude-code on Sonnet: right-sized to Haiku (same line), saving 10 x (cost - Haiku's)
    for i in range(10):
        calls.append(
            CallRecord(
                id=f"s{i}",
                ts=now - 3 * 86400,
                provider="anthropic",
                endpoint="/v1/messages",
                source="claude-code",
                model="claude-sonnet-4-6",
                input_tokens=1000,
                output_tokens=100,
                cost_usd=(1000 * sonnet["input"] + 100 * sonnet["output"]) / 1e6,
                priced=True,
                complexity=1,
            )
        )
    store.insert_calls(calls, store_bodies=False)
    store.close()
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["digest", "--config", str(config), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    recos = lines[lines.index("Recommendations") + 1 :]
    assert len(recos) == 3 and len(set(recos)) == 3, recos
    saving = 10 * (
        (1000 * sonnet["input"] + 100 * sonnet["output"]) - (1000 * haiku["input"] + 100 * haiku["output"])
    )
    assert recos[0] == (
        "- Route simple calls of claude-code from claude-sonnet-4-6 to claude-haiku-4-5 (10 of 10 calls simple): "
        f"about {format_usd(saving / 1e6)} a month"
    )
    waste_amount = format_usd(500 * sonnet["input"] / 1e6)
    assert waste_amount == format_usd(1500 * haiku["input"] / 1e6) == "$0.0015"
    assert set(recos[1:]) == {
        "- Trim whitespace, filler and repeated instructions in claude-code's prompts to claude-sonnet-4-6 "
        f"(500 tokens in 30 days): about {waste_amount} a month",
        "- Trim whitespace, filler and repeated instructions in claude-code's prompts to claude-haiku-4-5 "
        f"(1,500 tokens in 30 days): about {waste_amount} a month",
    }
    (waste_line,) = [line for line in lines if line.startswith("Waste:")]
    assert waste_line == (
        f"Waste: 4,000 tokens, {format_usd((500 * sonnet['input'] + 1500 * haiku['input'] + 2000 * mini['input']) / 1e6)}"
        f"; most batch on gpt-4o-mini (2,000 tokens, {format_usd(2000 * mini['input'] / 1e6)}), "
        f"claude-code on claude-haiku-4-5 (1,500 tokens, {waste_amount}), "
        f"claude-code on claude-sonnet-4-6 (500 tokens, {waste_amount})."
    )


def test_recommendations_that_would_read_alike_are_told_apart() -> None:
    from tokenlens.analytics import _name_apart

    def reco(provider: str) -> dict[str, object]:
        return {
            "kind": "waste",
            "source": "app",
            "model": "claude-haiku-4-5",
            "provider": provider,
            "title": "Trim whitespace, filler and repeated instructions in app's prompts to claude-haiku-4-5",
            "saving_usd_month": 0.0005,
        }

    found = [reco("anthropic"), reco("bedrock"), reco("bedrock")]
    _name_apart(found)
    summaries = [r["summary"] for r in found]
    assert len(set(summaries)) == 3
    assert summaries[0].endswith("claude-haiku-4-5 [anthropic]: about $0.0005 a month")
    assert summaries[2].endswith("claude-haiku-4-5 [bedrock] [#3]: about $0.0005 a month")
