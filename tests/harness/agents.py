"""The real coding agents, Claude Code and Codex, from npm at pinned versions, for tests/e2e/test_agents.py.

Pinned to the newest versions that run on Node 20 (Claude Code 2.1.198 and later want Node 22). They are
installed into a cache directory outside the tracked files (``.cache/agents`` in the repository, or
``$TOKENLENS_AGENTS_DIR``) by ``scripts/install-agents``, which `.ci/run` calls before the tests; installing
again when the pinned versions are there does nothing. The tests themselves never download: without npm or
the packages they skip with the reason, and fail instead when ``CI`` is set.

This file only imports the standard library, so it also runs as a script (``python3 tests/harness/agents.py``)
before the test environment exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: agent command -> (npm package, exact version)
PACKAGES: dict[str, tuple[str, str]] = {
    "claude": ("@anthropic-ai/claude-code", "2.1.197"),
    "codex": ("@openai/codex", "0.171.0"),
}
ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run scripts/install-agents (npm install of the pinned versions, about 660 MB)"


def agents_dir() -> Path:
    return Path(os.environ.get("TOKENLENS_AGENTS_DIR") or ROOT / ".cache" / "agents")


def installed_version(directory: Path, package: str) -> str | None:
    try:
        manifest = json.loads((directory / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


def missing(directory: Path) -> list[str]:
    """The pinned ``package@version`` specs that are not installed in `directory` (with their command)."""
    out = []
    for command, (package, version) in PACKAGES.items():
        binary = directory / "node_modules" / ".bin" / command
        if installed_version(directory, package) != version or not os.access(binary, os.X_OK):
            out.append(f"{package}@{version}")
    return out


def install(directory: Path | None = None) -> bool:
    """Install the pinned agents into `directory`; False when they were already there."""
    directory = directory or agents_dir()
    specs = missing(directory)
    if not specs:
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: install Node.js 20 with npm to run the agents' tests")
    directory.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(directory), "--save-exact", "--no-audit", "--no-fund"]
    subprocess.run([*command, "--loglevel=error", *specs], check=True, stdin=subprocess.DEVNULL)
    left = missing(directory)
    if left:
        raise RuntimeError(f"npm install left {', '.join(left)} missing in {directory}")
    return True


@dataclass(frozen=True)
class Agents:
    """Paths of the installed agents' commands."""

    claude: Path
    codex: Path
    node: Path

    def path_env(self) -> str:
        """A minimal PATH for the agents: Node's directory (Codex's launcher is a Node script) and the system's."""
        return os.pathsep.join(dict.fromkeys([str(self.node.parent), "/usr/local/bin", "/usr/bin", "/bin"]))


def find_agents(directory: Path | None = None) -> Agents | str:
    """The installed agents, or why they cannot run."""
    directory = directory or agents_dir()
    node = shutil.which("node")
    if shutil.which("npm") is None or node is None:
        return f"npm/node not found: install Node.js 20 with npm, then {INSTALL_HINT}"
    specs = missing(directory)
    if specs:
        return f"{', '.join(specs)} not installed in {directory}: {INSTALL_HINT}"
    bin_dir = directory / "node_modules" / ".bin"
    return Agents(claude=bin_dir / "claude", codex=bin_dir / "codex", node=Path(node))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_agents() -> Agents:
    """The installed agents; otherwise the calling test skips with the reason (fails when CI is set)."""
    import pytest

    found = find_agents()
    if isinstance(found, str):
        if in_ci():
            pytest.fail(f"real agents unavailable in CI: {found}", pytrace=False)
        pytest.skip(found)
    return found


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else agents_dir()
    pins = ", ".join(f"{package}@{version}" for package, version in PACKAGES.values())
    started = time.monotonic()
    try:
        changed = install(directory)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"install-agents: {e}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    state = f"installed in {took:.1f} s" if changed else "already installed"
    print(f"install-agents: {pins} {state} ({directory})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
