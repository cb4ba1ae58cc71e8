import socket
from pathlib import Path

from typer.testing import CliRunner

from tokenlens.cli import app

runner = CliRunner()


def test_port_in_use_is_one_sentence_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["daemon", "--port", str(port), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.output and "--port" in result.output
    assert "Traceback" not in result.output


def test_invalid_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("budgets:\n  daily_usd: lots\n")
    result = runner.invoke(app, ["daemon", "--config", str(config), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "budgets.daily_usd" in result.output


def test_missing_config_file_named_explicitly(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["daemon", "--config", str(tmp_path / "nope.yaml"), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_non_loopback_host_needs_an_api_token(tmp_path: Path) -> None:
    result = runner.invoke(app, ["daemon", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "server.api_token" in result.output
