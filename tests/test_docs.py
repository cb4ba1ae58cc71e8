"""Every command and option of the CLI is documented in the README, and every command has help text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tokenlens.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def commands() -> list[tuple[str, Any]]:
    """(name, click command) for every command and sub-command (typer ships its own click)."""
    root: Any = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            found.extend((f"{name} {sub}", subcommand) for sub, subcommand in command.commands.items())
        else:
            found.append((name, command))
    return found


def test_every_command_has_help_and_is_in_the_readme() -> None:
    for name, command in commands():
        assert command.help, f"tokenlens {name} has no help text"
        assert f"tokenlens {name}" in README, f"`tokenlens {name}` is not in README.md"


def test_every_option_is_in_the_readme() -> None:
    for name, command in commands():
        for param in command.params:
            if param.param_type_name == "option":
                flag = max(param.opts, key=len)
                assert flag in README, f"option {flag} of `tokenlens {name}` is not in README.md"
