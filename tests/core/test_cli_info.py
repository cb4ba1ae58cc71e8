from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tokenlens.cli import app, info

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENLENS_HOME", str(tmp_path))
    monkeypatch.delenv("TOKENLENS_CONFIG", raising=False)


def test_env_prints_the_base_urls_for_each_shell() -> None:
    bash = runner.invoke(app, ["env"])
    assert bash.exit_code == 0
    lines = bash.output.splitlines()
    assert lines[:4] == [
        "export ANTHROPIC_BASE_URL=http://localhost:8420/proxy/anthropic",
        "export OPENAI_BASE_URL=http://localhost:8420/proxy/openai/v1",
        "export GOOGLE_GEMINI_BASE_URL=http://localhost:8420/proxy/google",
        "export GOOGLE_AI_BASE_URL=http://localhost:8420/proxy/google",
    ]
    # the rest are comments (harmless to eval) saying how Codex, which reads no variable, is set up
    assert all(line.startswith("# ") for line in lines[4:]) and len(lines) > 4
    assert 'openai_base_url = "http://localhost:8420/proxy/openai/v1"' in bash.output
    fish = runner.invoke(app, ["env", "--shell", "fish", "--port", "9000"])
    assert fish.output.splitlines()[1] == "set -gx OPENAI_BASE_URL http://localhost:9000/proxy/openai/v1"


def test_env_uses_the_configured_port(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("server: {port: 8600}\n")
    assert "localhost:8600/proxy/anthropic" in runner.invoke(app, ["env", "--shell", "zsh"]).output


def test_ui_and_status_when_the_daemon_is_down_say_how_to_start_it(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("server: {port: 1}\n")
    for command in (["ui", "--no-open"], ["status"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert "not running" in result.output and "tokenlens daemon" in result.output
        assert "Traceback" not in result.output


HOSTILE_MODEL = "[/]\x1b]0;pwned\x07\x1b[2J"
HOSTILE_SOURCE = "\u202eevil\x9b2J"


def test_status_shows_hostile_call_data_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, Any] = {
        "/api/status": {"version": "1.0", "uptime_s": 5, "today_usd": 0.5, "month_usd": 1.5},
        "/api/usage/budget-status": {
            "caps": [{"scope": "source:\x1b[31mred", "period": "day", "limit_usd": 1}]
        },
        "/api/calls": {
            "calls": [
                {
                    "ts": "2026-12-07T03:04:05.000Z",
                    "source": HOSTILE_SOURCE,
                    "model": HOSTILE_MODEL,
                    "status": 200,
                    "input_tokens": 3,
                    "output_tokens": 4,
                    "cost_usd": 0.25,
                }
            ]
        },
    }
    monkeypatch.setattr(info, "daemon_get", lambda server, path, **params: answers[path])
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in result.output
    assert "[/]\\x1b]0;pwned\\x07\\x1b[2J" in result.output
    assert "\\u202eevil\\x9b2J" in result.output
    assert "source:\\x1b[31mred" in result.output


def test_status_shows_sub_cent_and_large_spend(monkeypatch: pytest.MonkeyPatch) -> None:
    """$0.0014 is not "$0.00"; $12,345.6 has its thousands separator and cents."""
    answers: dict[str, Any] = {
        "/api/status": {"version": "1.0", "uptime_s": 5, "today_usd": 0.0014, "month_usd": 12345.6},
        "/api/usage/budget-status": {"caps": []},
        "/api/calls": {
            "calls": [
                {
                    "ts": "2026-12-07T03:04:05.000Z",
                    "source": "s",
                    "model": "gpt-4o-mini",
                    "status": 200,
                    "input_tokens": 60,
                    "output_tokens": 3,
                    "cost_usd": 0.000011,
                }
            ]
        },
    }
    monkeypatch.setattr(info, "daemon_get", lambda server, path, **params: answers[path])
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "Spend today $0.0014, this month $12,345.60" in result.output
    assert "$0.000011" in result.output
