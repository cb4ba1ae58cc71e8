"""The user documentation stays true to the code.

- Every command of the CLI has help text, is named in README.md's command table, and has its own section in
  docs/cli.md (`### tokenlens <command>`) that names every one of its options.
- Every relative link in README.md and docs/*.md points to a file that exists, and to a heading of it when the
  link names one (`gateway.md#metering`).
- Markdown table rows keep their columns: a `|` inside a code span in a table is escaped (`\\|`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from tokenlens.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CLI_DOC = (ROOT / "docs" / "cli.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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


def cli_section(name: str) -> str:
    """The text of `### tokenlens <name>` in docs/cli.md, up to the next heading of any level."""
    match = re.search(rf"^### tokenlens {re.escape(name)}\n(.*?)(?=^#|\Z)", CLI_DOC, re.M | re.S)
    assert match, f"docs/cli.md has no section '### tokenlens {name}'"
    return match.group(1)


def test_every_command_has_help_and_is_documented() -> None:
    for name, command in commands():
        assert command.help, f"tokenlens {name} has no help text"
        assert f"`tokenlens {name}`" in README, f"`tokenlens {name}` is not in README.md's command table"
        cli_section(name)


def test_every_option_is_in_its_commands_section() -> None:
    for name, command in commands():
        section = cli_section(name)
        for param in command.params:
            if param.param_type_name == "option":
                for flag in param.opts:
                    assert re.search(rf"{re.escape(flag)}(?![\w-])", section), (
                        f"option {flag} of `tokenlens {name}` is not in its section of docs/cli.md"
                    )


def test_the_cli_reference_names_no_command_that_does_not_exist() -> None:
    names = {name for name, _ in commands()}
    for heading in re.findall(r"^### tokenlens (.+)$", CLI_DOC, re.M):
        assert heading.strip() in names, f"docs/cli.md documents `tokenlens {heading}`, which does not exist"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links in code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} has links to missing files or headings: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_table_rows_do_not_split_inside_code(page: Path) -> None:
    bad = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("|"):
            for span in re.findall(r"`[^`]*`", line):
                if re.search(r"(?<!\\)\|", span):
                    bad.append(f"line {number}: {span}")
    assert not bad, f"{page.relative_to(ROOT)}: unescaped | in a table's code span: {bad}"


def test_readme_stays_short_and_names_the_test_command() -> None:
    assert len(README.encode()) <= 12_500, "README.md is for the quick start: move details to docs/"
    assert "Run the tests: `scripts/test`" in README
    assert "exec bash scripts/test" in (ROOT / ".ci" / "run").read_text()
