"""Offline analysis: format detection, the same waste figures as the gateway's function, CI exit status."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tokenlens.analyze import analyze_request, detect_provider, parse_input
from tokenlens.cli import app
from tokenlens.waste import analyze_waste

DATA = Path(__file__).resolve().parents[1] / "data" / "analyze"


def test_detects_each_provider_format_and_plain_text() -> None:
    for name, provider in (
        ("openai_chat.json", "openai"),
        ("anthropic_messages.json", "anthropic"),
        ("google_generate.json", "google"),
    ):
        assert detect_provider(json.loads((DATA / name).read_text())) == provider
    provider, body, kind = parse_input("Write a haiku.", model="gpt-4o")
    assert (provider, kind) == ("openai", "text")
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Write a haiku."}]}
    assert parse_input("Write a haiku.", provider="google")[1]["contents"][0]["parts"] == [
        {"text": "Write a haiku."}
    ]


def test_waste_is_the_gateway_function_and_cost_is_priced_by_hand() -> None:
    raw = (DATA / "anthropic_messages.json").read_bytes()
    result = analyze_request(raw)
    body = json.loads(raw)
    expected = analyze_waste("anthropic", body, "claude-sonnet-4-6", provider="anthropic").to_dict()
    assert {k: v for k, v in result["waste"].items() if k != "pct"} == expected
    assert result["waste"]["pct"] == round(100 * expected["tokens"] / result["input_tokens_estimated"], 2)
    cost = result["cost"]
    assert cost["output_tokens_assumed"] == body["max_tokens"]
    by_hand = (cost["input_tokens"] * 3.00 + cost["output_tokens_assumed"] * 15.00) / 1_000_000
    assert abs(cost["cost_usd"] - by_hand) < 1e-12
    assert all(c["cost_usd"] < cost["cost_usd"] for c in cost["candidates"])
    assert any("Drop polite filler" in s for s in result["suggestions"])
    assert sum(result["heatmap"]["sections"].values()) == result["heatmap"]["estimated_total"]


def test_cli_json_text_and_max_waste_exit_status(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"TOKENLENS_HOME": str(tmp_path), "TOKENLENS_CONFIG": str(tmp_path / "none.yaml")}
    path = str(DATA / "openai_chat.json")
    done = runner.invoke(app, ["analyze", path, "--format", "json"], env=env)
    assert done.exit_code == 0, done.output
    pct = json.loads(done.stdout)["waste"]["pct"]
    assert pct > 5
    assert runner.invoke(app, ["analyze", path, "--max-waste-pct", str(pct)], env=env).exit_code == 0
    failing = runner.invoke(app, ["analyze", path, "--max-waste-pct", str(pct - 1)], env=env)
    assert failing.exit_code == 1 and "Waste:" in failing.stdout
    text = runner.invoke(app, ["analyze", "-", "--model", "gpt-4o"], input="Please, kindly say hi.", env=env)
    assert text.exit_code == 0 and "filler" in text.stdout
    assert runner.invoke(app, ["analyze", path, "--provider", "mistral"], env=env).exit_code == 2
    assert runner.invoke(app, ["analyze", str(tmp_path / "missing.json")], env=env).exit_code == 2


def test_heatmap_counts_inline_documents_as_the_gateway_does() -> None:
    """A RAG-style last user turn: `tokenlens analyze` puts the tagged documents in context, with the figures of
    the function the gateway's heatmap stage runs (`sections_of` over `request_parts`)."""
    from tokenlens.heatmap import sections_of
    from tokenlens.prompt_parts import request_parts
    from tokenlens.tokens import get_encoding

    enc = get_encoding("o200k_base")
    assert enc is not None
    documents = "<documents>\n" + "The pump must be primed before the first start. " * 20 + "\n</documents>"
    question = "Given the manual above, what must be done before the first start?"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": documents + "\n" + question}]}
    sections = analyze_request(json.dumps(body))["heatmap"]["sections"]
    assert sections["context"] == len(enc.encode_ordinary(documents))
    assert sections["query"] == len(enc.encode_ordinary(question)) + 4
    assert sections == sections_of(request_parts("openai", body), "openai", "gpt-4o").sections


def test_cli_infers_the_provider_from_the_model_name(tmp_path: Path) -> None:
    """`analyze - --model claude-sonnet-4-5` is an Anthropic request (the name says so), priced at Anthropic's
    list price ($3 / $15 per million tokens); a Gemini name is Google's ($0.30 / $2.50); without a model the
    body's shape decides."""
    runner = CliRunner()
    env = {"TOKENLENS_HOME": str(tmp_path), "TOKENLENS_CONFIG": str(tmp_path / "none.yaml")}
    prompt = "Summarise the attached release notes in three bullet points."
    for model, provider, rates in (
        ("claude-sonnet-4-5", "anthropic", (3.00, 15.00)),
        ("gemini-2.5-flash", "google", (0.30, 2.50)),
        ("gpt-4o-mini", "openai", (0.15, 0.60)),
    ):
        done = runner.invoke(
            app, ["analyze", "-", "--model", model, "--format", "json"], input=prompt, env=env
        )
        assert done.exit_code == 0, done.output
        result = json.loads(done.stdout)
        assert result["provider"] == provider, model
        cost = result["cost"]
        assert cost["output_tokens_assumed"] == 500  # no max_tokens: the assumed answer length
        by_hand = (cost["input_tokens"] * rates[0] + 500 * rates[1]) / 1_000_000
        assert cost["cost_usd"] is not None and abs(cost["cost_usd"] - by_hand) < 1e-12, model
    text = runner.invoke(app, ["analyze", "-", "--model", "claude-sonnet-4-5"], input=prompt, env=env)
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("anthropic messages request for claude-sonnet-4-5")
    assert "model not priced" not in text.stdout
    # an OpenAI-shaped body naming a Claude model is priced as Anthropic's
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": prompt}]}
    found = runner.invoke(app, ["analyze", "-", "--format", "json"], input=json.dumps(body), env=env)
    assert json.loads(found.stdout)["provider"] == "anthropic"
    # no model anywhere: the shape decides (a top-level system prompt is Anthropic's)
    assert (
        detect_provider({"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]})
        == "anthropic"
    )
    assert detect_provider({"messages": [{"role": "user", "content": "hi"}]}) == "openai"
    assert parse_input(prompt, model="an-unknown-model")[0] == "openai"
