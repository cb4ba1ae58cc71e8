"""`tokenlens prices show` and `tokenlens prices update --from FILE` (issue 18)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tokenlens import price_data, pricing
from tokenlens.cli import app
from tokenlens.pricing import Pricer
from tokenlens.usage import Usage

runner = CliRunner()


@pytest.fixture(autouse=True)
def bundled_prices() -> Iterator[None]:
    """Each test starts and ends on the shipped price data."""
    pricing.set_snapshot(None)
    price_data._state.update(source="bundled", path=None, mtime=None, meta={}, checked=0.0)
    yield
    pricing.set_snapshot(None)
    price_data._state.update(source="bundled", path=None, mtime=None, meta={}, checked=0.0)


def data_file(path: Path, mini: tuple[float, float] = (7.0, 11.0), **extra: Any) -> Path:
    def provider(pid: str, models: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": pid, "name": pid.title(), "api_pattern": f"https://api\\.{pid}\\.com", "models": models}

    def model(mid: str, **prices: Any) -> dict[str, Any]:
        return {"id": mid, "match": {"equals": mid}, "prices": prices}

    data = [
        provider("openai", [model("gpt-4o-mini", input_mtok=mini[0], output_mtok=mini[1])]),
        provider("anthropic", [model("claude-haiku-4-5", input_mtok=1, output_mtok=5)]),
        provider("google", [model("gemini-2.5-flash", input_mtok=0.3, output_mtok=2.5)]),
    ]
    path.write_text(json.dumps(extra.get("raw", data)))
    return path


def run(*args: str, home: Path) -> Any:
    return runner.invoke(app, [*args, "--data-dir", str(home), "--config", str(home / "none.yaml")])


def test_show_lists_every_rate_its_source_and_dates(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("")
    result = run("prices", "show", "claude-opus-4-8", home=tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "price data: genai-prices" in out and "(bundled)" in out
    assert "anthropic/claude-opus-4-8" in out and "price_source: claude-opus-4-8" in out
    # published rates, USD per million tokens: $5 in, $25 out, 1-hour writes $10; batch $2.50; fast $10 / $50
    assert "input per 1M tokens" in out and "$5\n" in out and "$25\n" in out
    assert "cache write 1h per 1M tokens       $10" in out
    assert "when processing=batch, since 2026-10-14" in out and "$2.5\n" in out
    assert "when speed=fast" in out and "$50\n" in out


def test_show_says_a_guess_is_a_guess_and_json(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("")
    result = run("prices", "show", "gpt-4o-2099-01-01", home=tmp_path)
    assert result.exit_code == 0 and "price_source: inferred:gpt-4o" in result.output
    assert "a guess from gpt-4o" in result.output
    result = run("prices", "show", "gemini-2.5-flash-image", "--format", "json", home=tmp_path)
    data = json.loads(result.output)
    assert data["entry"]["rates"]["output image per 1M tokens"] == "$30"
    assert data["data"]["kind"] == "bundled" and data["data"]["age_days"] >= 0


def test_show_finds_other_providers_models(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("")
    result = run("prices", "show", "deepseek-chat", home=tmp_path)
    assert result.exit_code == 0 and "price data entry deepseek/deepseek-chat" in result.output
    assert "daily from 00:30 to 16:30 UTC" in result.output  # DeepSeek's time-of-day price


def test_show_an_override_and_an_unknown_model(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "pricing:\n  deepseek-r1:8b: {input: 0.1, output: 0.2, tiers: [{above: 1000, input: 0.3}],"
        " service_tiers: {batch: {input: 0.05}}}\n"
    )
    result = runner.invoke(
        app,
        [
            "prices",
            "show",
            "deepseek-r1:8b",
            "--provider",
            "ollama",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "priced by your override pricing.deepseek-r1:8b (this exact name only); price_source: override"
        in result.output
    )
    assert (
        "above 1,000 input tokens: input $0.3" in result.output
        and "service tier batch: input $0.05" in result.output
    )
    (tmp_path / "none.yaml").write_text("")
    result = run("prices", "show", "no-such-model-9", home=tmp_path)
    assert result.exit_code == 1 and "no price" in result.output


def test_update_from_file_validates_keeps_and_uses_the_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "none.yaml").write_text("")
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    before = Pricer().price("openai", "gpt-4o-mini", usage)
    assert before.cost_usd == pytest.approx(0.15 + 0.60)  # published: $0.15 in, $0.60 out per million
    source = data_file(tmp_path / "data.json")
    result = run("prices", "update", "--from", str(source), home=home)
    assert result.exit_code == 0, result.output
    assert "OK: 3 providers, 3 models" in result.output
    assert (home / "prices.json").read_bytes() == source.read_bytes()
    meta = json.loads((home / "prices.meta.json").read_text())
    assert meta["source"] == str(source.resolve()) and len(meta["sha256"]) == 64
    # the command's own process uses it; a gateway loads it (`load`) or notices it (`refresh`)
    assert Pricer().price("openai", "gpt-4o-mini", usage).cost_usd == pytest.approx(7 + 11)
    pricing.set_snapshot(None)
    price_data.load(home)
    assert Pricer().price("openai", "gpt-4o-mini", usage).cost_usd == pytest.approx(7 + 11)
    assert price_data.data_info()["kind"] == "file"
    assert not Pricer().price("openai", "gpt-4o", usage).priced  # not in the new data
    # a newer file replaces it, seen by refresh; removing it goes back to the shipped data
    result = run("prices", "update", "--from", str(data_file(tmp_path / "data2.json", (1.0, 2.0))), home=home)
    assert result.exit_code == 0
    price_data._state["mtime"] = -1.0  # as if loaded from an older file
    price_data._state["checked"] = 0.0
    price_data.refresh(home)
    assert Pricer().price("openai", "gpt-4o-mini", usage).cost_usd == pytest.approx(1 + 2)
    (home / "prices.json").unlink()
    price_data._state["checked"] = 0.0
    price_data.refresh(home)
    assert Pricer().price("openai", "gpt-4o-mini", usage).cost_usd == pytest.approx(0.15 + 0.60)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),  # nested past the parser's recursion limit
        ({"providers": []}, "a JSON list of providers"),
        ([{"id": "openai"}], "not the genai-prices data format"),
        (
            [
                {
                    "id": "openai",
                    "name": "O",
                    "api_pattern": "x",
                    "models": [{"id": "m", "match": {"equals": "m"}, "prices": {}}],
                }
            ],
            "no prices for provider 'anthropic'",
        ),
    ],
)
def test_update_refuses_bad_data_and_keeps_the_data_in_use(tmp_path: Path, raw: Any, message: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "none.yaml").write_text("")
    bad = tmp_path / "bad.json"
    bad.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    result = run("prices", "update", "--from", str(bad), home=home)
    assert result.exit_code == 1 and message in result.output
    assert not (home / "prices.json").exists()
    assert price_data.data_info()["kind"] == "bundled"


def test_a_price_file_copied_in_by_hand_is_not_described_by_the_last_updates_meta(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "none.yaml").write_text("")
    assert run("prices", "update", "--from", str(data_file(tmp_path / "a.json")), home=home).exit_code == 0
    by_hand = data_file(home / "prices.json", (1.0, 2.0)).read_bytes()
    price_data.load(home)
    info = price_data.data_info()
    assert info["sha256"] == hashlib.sha256(by_hand).hexdigest()
    assert info["source"] == f"prices.json from {home / 'prices.json'}" and info["fetched_at"] is None
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert Pricer().price("openai", "gpt-4o-mini", usage).cost_usd == pytest.approx(1 + 2)


def test_show_prints_no_escape_sequence_from_the_data(tmp_path: Path) -> None:
    """A price data file is data from the network: its names reach the terminal escaped (`update`'s refusal
    quotes the data through pydantic's repr, escaped already)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "none.yaml").write_text("")
    data = json.loads(data_file(tmp_path / "a.json").read_text())
    data[0]["models"][0]["name"] = "mini\x1b]0;owned\x07\x1b[2J"
    (tmp_path / "a.json").write_text(json.dumps(data))
    assert run("prices", "update", "--from", str(tmp_path / "a.json"), home=home).exit_code == 0
    result = run("prices", "show", "gpt-4o-mini", home=home)
    assert result.exit_code == 0 and "\x1b" not in result.output and "\x07" not in result.output
    assert "mini\\x1b]0;owned\\x07\\x1b[2J" in result.output


def test_a_gateway_ignores_a_price_file_it_cannot_parse_and_reads_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prices.json written by hand, nested too deeply to parse: the record path (`refresh` runs before each
    record is built) keeps the shipped prices and neither raises nor parses the same file again."""
    (tmp_path / "prices.json").write_text("[" * 100_000 + "]" * 100_000)
    price_data.refresh(tmp_path)
    assert "not used" in caplog.text
    assert price_data.data_info()["kind"] == "bundled"
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert Pricer().price("openai", "gpt-4o-mini", usage).cost_usd == pytest.approx(0.15 + 0.60)
    caplog.clear()
    price_data._state["checked"] = 0.0
    price_data.refresh(tmp_path)
    assert "not used" not in caplog.text


def test_update_without_network_says_how_to_do_it_offline(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("")
    result = run("prices", "update", "--url", "http://127.0.0.1:9/data.json", home=tmp_path)
    assert result.exit_code == 1 and "--from FILE" in result.output
