from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenlens.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENLENS_HOME", str(tmp_path))
    monkeypatch.delenv("TOKENLENS_CONFIG", raising=False)


def test_env_prints_the_base_urls_for_each_shell() -> None:
    bash = runner.invoke(app, ["env"])
    assert bash.exit_code == 0
    assert bash.output.splitlines() == [
        "export ANTHROPIC_BASE_URL=http://localhost:8420/proxy/anthropic",
        "export OPENAI_BASE_URL=http://localhost:8420/proxy/openai/v1",
        "export GOOGLE_GEMINI_BASE_URL=http://localhost:8420/proxy/google",
        "export GOOGLE_AI_BASE_URL=http://localhost:8420/proxy/google",
    ]
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
