"""`tokenlens config validate`: exit codes and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenlens.cli.config_cmd import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENLENS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOKENLENS_CONFIG", raising=False)


def test_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("budgets:\n  daily_usd: 5\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"OK: {path}"
    assert result.stderr == ""


def test_example_file_is_valid() -> None:
    result = runner.invoke(app, ["validate", str(REPO / "config.example.yaml")])
    assert result.exit_code == 0, result.stderr


def test_invalid_value_names_path_field_problem_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 8420\nbudgets:\n  daily_usd: ten\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f'{path}: budgets.daily_usd: must be a number >= 0, got "ten" (line 4)'


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("routing:\n  alias: []\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f'{path}: routing.alias: unknown key; did you mean "aliases"?')


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("budgets:\n  daily_usd: 1\n   monthly_usd: 2\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}: invalid YAML at line 3, column")
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_loopback_host_without_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  host: 0.0.0.0\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}: server.api_token: ")


def test_missing_named_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{path}: no such file"


def test_default_path_without_a_file_is_zero_configuration(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0
    assert str(tmp_path / "home" / "config.yaml") in result.stdout
    assert "defaults" in result.stdout


def test_default_path_is_checked_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("dedup:\n  ttl_s: 0\n")
    monkeypatch.setenv("TOKENLENS_CONFIG", str(path))
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}: dedup.ttl_s: must be an integer >= 1, got 0")


def test_help_lists_validate() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "validate" in result.stdout
