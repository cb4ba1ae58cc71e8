"""`tokenlens install` / `tokenlens uninstall`: the gateway as a login service, and the base-URL exports.

install writes a systemd user unit (Linux) or a launchd agent (macOS) that starts `tokenlens daemon` at login
and restarts it on failure, and a marked block in the shell start-up files that exports the base-URL
variables. What it did is kept in `$TOKENLENS_HOME/install.json`, so that uninstall removes exactly that: the
start-up files end byte-identical to before, and every file install created is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from tokenlens.cli.common import load_cli_settings
from tokenlens.cli.info import Shell, base_url_variables, export_lines
from tokenlens.config import tokenlens_home

BEGIN = "# >>> tokenlens >>>"
END = "# <<< tokenlens <<<"
UNIT_NAME = "tokenlens.service"
LAUNCHD_LABEL = "dev.tokenlens.daemon"
MANIFEST = "install.json"
BACKUP_SUFFIX = ".tokenlens-backup"


@dataclass
class ShellEdit:
    path: str
    created: bool  # the file did not exist before install
    separator: str  # what install put between the file's last line and the block ("" or "\n")
    backup: str | None = None
    at_start: bool = False  # the block opens the file (TOML: top-level keys must precede every table)


@dataclass
class Manifest:
    service_file: str | None = None
    service_kind: str = "systemd"
    created_dirs: list[str] = field(default_factory=list)
    shell_edits: list[ShellEdit] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        edits = [ShellEdit(**e) for e in data.pop("shell_edits", [])]
        return cls(**data, shell_edits=edits)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def shell_block(port: int, shell: Shell) -> str:
    lines = [BEGIN, "# Added by `tokenlens install`; `tokenlens uninstall` removes it."]
    lines += export_lines(base_url_variables(port), shell)
    return "\n".join([*lines, END]) + "\n"


def codex_config(home: Path) -> Path | None:
    """Codex's config.toml when Codex is set up on this machine ($CODEX_HOME or ~/.codex, or `codex` on
    PATH): Codex reads its base URL from there, not from OPENAI_BASE_URL."""
    codex_home = Path(os.environ["CODEX_HOME"]) if os.environ.get("CODEX_HOME") else home / ".codex"
    if codex_home.is_dir() or os.environ.get("CODEX_HOME") or shutil.which("codex"):
        return codex_home / "config.toml"
    return None


def codex_block(port: int) -> str:
    lines = [BEGIN, "# Added by `tokenlens install`; `tokenlens uninstall` removes it."]
    lines.append(f'openai_base_url = "{base_url_variables(port)["OPENAI_BASE_URL"]}"')
    return "\n".join([*lines, END]) + "\n"


def sets_key_outside_block(text: str, key: str) -> bool:
    """Whether a TOML text sets `key` itself (outside TokenLens' block), so a second one would be an error."""
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        inside = (inside or stripped == BEGIN) and stripped != END
        if not inside and stripped.split("=", 1)[0].strip() == key and "=" in stripped:
            return True
    return False


def shell_targets(home: Path) -> list[tuple[Path, Shell]]:
    """The start-up files present (bash, zsh, fish); the login shell's own file when none is."""
    candidates = [
        (home / ".bashrc", Shell.bash),
        (home / ".zshrc", Shell.zsh),
        (home / ".config" / "fish" / "config.fish", Shell.fish),
    ]
    present = [c for c in candidates if c[0].exists()]
    if present:
        return present
    login = Path(os.environ.get("SHELL", "bash")).name
    return [next((c for c in candidates if c[1].value == login), candidates[0])]


def with_block(text: str, block: str, at_start: bool = False) -> tuple[str, str]:
    """(new text, separator added): the block replaces an existing one, or is appended (or put first)."""
    start = text.find(BEGIN)
    if start >= 0:
        end = text.find(END, start)
        if end >= 0:
            stop = end + len(END) + (1 if text[end + len(END) : end + len(END) + 1] == "\n" else 0)
            return text[:start] + block + text[stop:], ""
    if at_start:
        return block + text, ""
    separator = "" if text == "" or text.endswith("\n") else "\n"
    return text + separator + block, separator


def without_block(text: str, separator: str) -> str:
    start = text.find(BEGIN)
    end = text.find(END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        return text
    stop = end + len(END) + (1 if text[end + len(END) : end + len(END) + 1] == "\n" else 0)
    before = text[:start]
    if separator and before.endswith(separator) and stop == len(text):
        before = before[: -len(separator)]
    return before + text[stop:]


def systemd_unit(port: int, data_home: Path, config_file: Path | None) -> str:
    environment = [f"Environment=TOKENLENS_HOME={data_home}"]
    if config_file is not None:
        environment.append(f"Environment=TOKENLENS_CONFIG={config_file}")
    return "\n".join(
        [
            "[Unit]",
            "Description=TokenLens AI gateway",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={sys.executable} -m tokenlens daemon --port {port}",
            "Restart=on-failure",
            "RestartSec=3",
            *environment,
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def launchd_plist(port: int, data_home: Path, config_file: Path | None) -> str:
    env = {"TOKENLENS_HOME": str(data_home)}
    if config_file is not None:
        env["TOKENLENS_CONFIG"] = str(config_file)
    env_xml = "".join(f"<key>{k}</key><string>{v}</string>" for k, v in env.items())
    args = "".join(
        f"<string>{a}</string>" for a in (sys.executable, "-m", "tokenlens", "daemon", "--port", str(port))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0"><dict>'
        f"<key>Label</key><string>{LAUNCHD_LABEL}</string>"
        f"<key>ProgramArguments</key><array>{args}</array>"
        f"<key>EnvironmentVariables</key><dict>{env_xml}</dict>"
        "<key>RunAtLoad</key><true/>"
        "<key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>"
        f"<key>StandardErrorPath</key><string>{data_home / 'daemon.log'}</string>"
        "</dict></plist>\n"
    )


def service_path(home: Path) -> tuple[Path, str]:
    if sys.platform == "darwin":
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist", "launchd"
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return config_home / "systemd" / "user" / UNIT_NAME, "systemd"


def run_manager(args: list[str]) -> tuple[bool, str]:
    """Run the service manager (systemctl or launchctl); (succeeded, what it said)."""
    if shutil.which(args[0]) is None:
        return False, f"{args[0]} is not installed"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr or done.stdout).strip()


def _start_service(kind: str, path: Path) -> tuple[bool, str]:
    if kind == "launchd":
        return run_manager(["launchctl", "load", "-w", str(path)])
    available, why = run_manager(["systemctl", "--user", "show-environment"])
    if not available:
        return False, f"systemd user services are not available here ({why or 'no user session'})"
    ok, said = run_manager(["systemctl", "--user", "daemon-reload"])
    if ok:
        ok, said = run_manager(["systemctl", "--user", "enable", "--now", UNIT_NAME])
    return ok, said


def _stop_service(kind: str, path: Path) -> None:
    if kind == "launchd":
        run_manager(["launchctl", "unload", "-w", str(path)])
        return
    if run_manager(["systemctl", "--user", "show-environment"])[0]:
        run_manager(["systemctl", "--user", "disable", "--now", UNIT_NAME])


def _mkdirs(path: Path, created: list[str]) -> None:
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    created.extend(str(p) for p in reversed(missing))


def install(
    port: Annotated[
        int | None, typer.Option("--port", help="The gateway's port (default server.port, 8420).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be written; change nothing.")
    ] = False,
) -> None:
    """Run the gateway at login (systemd user unit or launchd agent) and export the base URLs in your shell."""
    settings, data_home = load_cli_settings(None, None)
    port = port if port is not None else settings.server.port
    home = Path.home()
    unit_path, kind = service_path(home)
    config_file = Path(os.environ["TOKENLENS_CONFIG"]) if os.environ.get("TOKENLENS_CONFIG") else None
    unit = (launchd_plist if kind == "launchd" else systemd_unit)(port, data_home, config_file)
    targets = [(path, shell_block(port, shell), False) for path, shell in shell_targets(home)]
    codex = codex_config(home)
    if codex is not None:
        if codex.exists() and sets_key_outside_block(codex.read_text(), "openai_base_url"):
            typer.echo(f"{codex} sets openai_base_url already; left as it is (Codex calls go where it says).")
        else:
            targets.append((codex, codex_block(port), True))
    else:
        typer.echo(
            "Codex is not set up here (no ~/.codex); after installing it, run `tokenlens install` again."
        )
    if dry_run:
        typer.echo(f"Would write {unit_path}:\n{unit}")
        for path, block, _ in targets:
            typer.echo(f"Would add to {path}:\n{block}")
        return
    manifest_path = data_home / MANIFEST
    manifest = Manifest.load(manifest_path) or Manifest()
    _mkdirs(data_home, manifest.created_dirs)
    _mkdirs(unit_path.parent, manifest.created_dirs)
    unit_path.write_text(unit)
    manifest.service_file, manifest.service_kind = str(unit_path), kind
    known = {edit.path: edit for edit in manifest.shell_edits}
    for path, block, at_start in targets:
        edit = known.get(str(path))
        if edit is None:
            existed = path.exists()
            if not existed:
                _mkdirs(path.parent, manifest.created_dirs)
            before = path.read_text() if existed else ""
            backup = None
            if existed:
                backup_path = path.with_name(path.name + BACKUP_SUFFIX)
                shutil.copy2(path, backup_path)
                backup = str(backup_path)
            edit = ShellEdit(str(path), created=not existed, separator="", backup=backup, at_start=at_start)
            manifest.shell_edits.append(edit)
        else:
            before = path.read_text() if path.exists() else ""
        text, separator = with_block(before, block, at_start)
        edit.separator = edit.separator or separator
        if text != before:
            path.write_text(text)
        if at_start:
            typer.echo(f"Codex's base URL in {path}")
        else:
            typer.echo(f'Base-URL exports in {path} (open a new shell, or: eval "$(tokenlens env)")')
    manifest.save(manifest_path)
    started, said = _start_service(kind, unit_path)
    if started:
        typer.echo(f"Service installed and started: {unit_path}")
        return
    typer.echo(f"Wrote {unit_path}, but could not start it: {said}.")
    manual = (
        f"launchctl load -w {unit_path}"
        if kind == "launchd"
        else f"systemctl --user enable --now {UNIT_NAME} (with a systemd user session), or run `tokenlens daemon`"
    )
    typer.echo(f"Start the gateway by hand: {manual}.")


def uninstall(
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the data directory (asks first).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --purge deletes data.")] = False,
) -> None:
    """Remove exactly what install added: the service, the shell blocks (files restored), the files it created."""
    data_home = tokenlens_home()
    manifest_path = data_home / MANIFEST
    manifest = Manifest.load(manifest_path)
    home = Path.home()
    unit_path, kind = service_path(home)
    if manifest is not None and manifest.service_file:
        unit_path, kind = Path(manifest.service_file), manifest.service_kind
    if unit_path.exists():
        _stop_service(kind, unit_path)
        unit_path.unlink()
        if kind == "systemd":
            run_manager(["systemctl", "--user", "daemon-reload"])
        typer.echo(f"Removed {unit_path}")
    if manifest is not None:
        edits = manifest.shell_edits
    else:
        edits = [ShellEdit(str(p), False, "") for p, _ in shell_targets(home)]
        codex = codex_config(home)
        if codex is not None:
            edits.append(ShellEdit(str(codex), False, "", at_start=True))
    for edit in edits:
        path = Path(edit.path)
        if not path.exists():
            continue
        text = without_block(path.read_text(), edit.separator)
        if edit.created and text == "":
            path.unlink()
        else:
            path.write_text(text)
        if edit.backup and Path(edit.backup).exists():
            if not path.exists() or Path(edit.backup).read_bytes() == path.read_bytes():
                Path(edit.backup).unlink()
            else:
                typer.echo(f"{path} changed since install; its backup is kept at {edit.backup}")
        typer.echo(f"Removed the TokenLens block from {path}")
    if manifest is not None:
        manifest_path.unlink()
        for directory in sorted(manifest.created_dirs, key=len, reverse=True):
            path = Path(directory)
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    if purge and data_home.exists():
        if yes or typer.confirm(f"Delete {data_home} and every call record in it?", default=False):
            shutil.rmtree(data_home)
            typer.echo(f"Deleted {data_home}")
        else:
            typer.echo("Data directory kept.")
