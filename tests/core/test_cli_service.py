"""install / uninstall against a temporary HOME; the service manager is a fake `systemctl` on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenlens.cli import app

runner = CliRunner()
BASHRC = "# my bashrc\nalias ll='ls -l'\nexport PATH=$HOME/bin:$PATH"  # no final newline on purpose
ZSHRC = "setopt autocd\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    user_home = tmp_path / "home"
    user_home.mkdir()
    (user_home / ".bashrc").write_text(BASHRC)
    (user_home / ".zshrc").write_text(ZSHRC)
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("TOKENLENS_CONFIG", raising=False)
    monkeypatch.setenv("TOKENLENS_HOME", str(user_home / ".tokenlens"))
    return user_home


def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_session: bool = True) -> Path:
    """A `systemctl` that logs its arguments (and fails `show-environment` without a user session)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bin_dir / "systemctl"
    fail = (
        ""
        if user_session
        else 'case "$*" in *show-environment*) echo "Failed to connect to bus" >&2; exit 1;; esac\n'
    )
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{fail}exit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_then_uninstall_leaves_home_byte_identical(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_systemctl(tmp_path, monkeypatch)
    before = snapshot(home)
    result = runner.invoke(app, ["install", "--port", "8555"])
    assert result.exit_code == 0, result.output
    unit = home / ".config/systemd/user/tokenlens.service"
    text = unit.read_text()
    assert "ExecStart=" in text and "-m tokenlens daemon --port 8555" in text and "Restart=on-failure" in text
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.startswith(BASHRC + "\n# >>> tokenlens >>>\n")
    assert "export OPENAI_BASE_URL=http://localhost:8555/proxy/openai/v1" in bashrc
    assert "export ANTHROPIC_BASE_URL=http://localhost:8555/proxy/anthropic" in bashrc
    assert "export GOOGLE_GEMINI_BASE_URL=http://localhost:8555/proxy/google" in bashrc
    assert "export GOOGLE_AI_BASE_URL=http://localhost:8555/proxy/google" in (home / ".zshrc").read_text()
    assert (home / ".bashrc.tokenlens-backup").read_text() == BASHRC
    assert "--user enable --now tokenlens.service" in log.read_text()
    assert "started" in result.output

    installed = snapshot(home)
    again = runner.invoke(app, ["install", "--port", "8555"])
    assert again.exit_code == 0 and snapshot(home) == installed  # idempotent

    removed = runner.invoke(app, ["uninstall"])
    assert removed.exit_code == 0, removed.output
    assert snapshot(home) == before
    assert not (home / ".config").exists() and not (home / ".tokenlens").exists()
    assert "--user disable --now tokenlens.service" in log.read_text()


def test_without_systemd_user_services_it_explains_and_exits_0(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_systemctl(tmp_path, monkeypatch, user_session=False)
    result = runner.invoke(app, ["install"])
    assert result.exit_code == 0
    assert "systemd user services are not available" in result.output and "tokenlens daemon" in result.output
    assert (home / ".config/systemd/user/tokenlens.service").exists()


def test_dry_run_changes_nothing(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_systemctl(tmp_path, monkeypatch)
    before = snapshot(home)
    result = runner.invoke(app, ["install", "--dry-run"])
    assert result.exit_code == 0 and "Would write" in result.output and "# >>> tokenlens >>>" in result.output
    assert snapshot(home) == before and not log.exists()


def test_shell_of_the_user_gets_a_file_when_none_exists(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_systemctl(tmp_path, monkeypatch)
    (home / ".bashrc").unlink()
    (home / ".zshrc").unlink()
    monkeypatch.setenv("SHELL", "/usr/bin/fish")
    assert runner.invoke(app, ["install"]).exit_code == 0
    fish = home / ".config/fish/config.fish"
    assert "set -gx OPENAI_BASE_URL http://localhost:8420/proxy/openai/v1" in fish.read_text()
    assert runner.invoke(app, ["uninstall"]).exit_code == 0
    assert not fish.exists() and not (home / ".config").exists()


def test_purge_asks_first(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(tmp_path, monkeypatch)
    data = home / ".tokenlens"
    data.mkdir()
    (data / "tokenlens.db").write_bytes(b"x")
    kept = runner.invoke(app, ["uninstall", "--purge"], input="n\n")
    assert kept.exit_code == 0 and (data / "tokenlens.db").exists()
    gone = runner.invoke(app, ["uninstall", "--purge"], input="y\n")
    assert gone.exit_code == 0 and not data.exists()


CODEX_TOML = 'model = "gpt-6.2-sol"\n\n[model_providers.local]\nname = "local"\nbase_url = "http://x"\n'


def test_codex_gets_its_base_url_first_in_config_toml_and_uninstall_restores_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex reads no environment variable for its base URL (issue 16): install writes `openai_base_url` as
    a top-level key (before every table, where TOML needs it); uninstall leaves the file byte-identical."""
    import tomllib

    fake_systemctl(tmp_path, monkeypatch)
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text(CODEX_TOML)
    before = snapshot(home)
    for _ in range(2):  # twice: nothing more the second time
        result = runner.invoke(app, ["install", "--port", "8555"])
        assert result.exit_code == 0, result.output
    parsed = tomllib.loads(codex.read_text())
    assert parsed["openai_base_url"] == "http://localhost:8555/proxy/openai/v1"
    assert parsed["model"] == "gpt-6.2-sol" and parsed["model_providers"]["local"]["base_url"] == "http://x"
    assert codex.read_text().count("openai_base_url") == 1
    result = runner.invoke(app, ["uninstall"])
    assert result.exit_code == 0, result.output
    assert snapshot(home) == before


def test_a_codex_base_url_the_user_set_is_left_alone(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_systemctl(tmp_path, monkeypatch)
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text('openai_base_url = "https://gw.example/v1"\n')
    result = runner.invoke(app, ["install"])
    assert result.exit_code == 0 and "sets openai_base_url already" in result.output
    assert codex.read_text() == 'openai_base_url = "https://gw.example/v1"\n'


def test_codex_home_is_honoured(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    fake_systemctl(tmp_path, monkeypatch)
    codex_home = tmp_path / "codex-home"
    monkeypatch.setenv("CODEX_HOME", str(codex_home))
    assert runner.invoke(app, ["install"]).exit_code == 0
    assert tomllib.loads((codex_home / "config.toml").read_text())["openai_base_url"].endswith(
        "/proxy/openai/v1"
    )
    assert runner.invoke(app, ["uninstall"]).exit_code == 0
    assert not (codex_home / "config.toml").exists() and not codex_home.exists()
