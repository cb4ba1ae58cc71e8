"""`tokenlens export` and `tokenlens import`: call records as CSV or JSONL (docs/cli.md and docs/analytics-api.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, cast

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tokenlens.cli.common import (
    ConfigOption,
    DataDirOption,
    auth_headers,
    daemon_is_up,
    daemon_url,
    load_cli_settings,
)
from tokenlens.cli.terminal import printable
from tokenlens.config import (
    ServerSettings,
    Settings,
    resolve_timezone,
)
from tokenlens.store import (
    ImportResult,
    SchemaError,
    bounded_lines,
    chunk_text,
    csv_header,
    export_lines,
    open_store,
    parse_since,
)

IMPORT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
SHOWN_ERRORS = 5
_CHUNK = 64 * 1024


def export(
    format: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "jsonl",
    since: Annotated[
        str | None,
        typer.Option(
            help="Only calls from this date (YYYY-MM-DD, in the configured time zone) or ISO time on."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export call records (oldest first) as CSV or JSONL, reading the store directly."""
    fmt = format.lower()
    if fmt not in ("csv", "jsonl"):
        raise typer.BadParameter("expected csv or jsonl", param_hint="--format")
    settings, home = load_cli_settings(config, data_dir)
    since_ts = None
    if since:
        try:
            since_ts = parse_since(since, resolve_timezone(settings.timezone))
        except ValueError as exc:
            raise typer.BadParameter(str(exc).removeprefix("since: "), param_hint="--since") from None
    store = None
    try:
        store = open_store(settings.storage.url, home, readonly=True)
    except FileNotFoundError:
        typer.echo(f"No calls recorded yet (no store in {home}).", err=True)
    except SchemaError as exc:
        typer.echo(f"Cannot read the store: {exc}.", err=True)
        raise typer.Exit(1) from None
    if store is not None:
        lines = export_lines(store, fmt, since_ts)
    else:
        lines = iter([csv_header()] if fmt == "csv" else [])
    try:
        if output is None:
            for chunk in chunk_text(lines):
                typer.echo(chunk, nl=False)
        else:
            with output.expanduser().open("w", encoding="utf-8", newline="") as handle:
                for chunk in chunk_text(lines):
                    handle.write(chunk)
    except OSError as exc:
        typer.echo(f"Cannot write {output}: {exc.strerror or exc}.", err=True)
        raise typer.Exit(1) from None
    finally:
        if store is not None:
            store.close()


def _import_via_daemon(server: ServerSettings, handle: IO[bytes]) -> ImportResult:
    response = httpx.post(
        daemon_url(server) + "/api/import",
        content=iter(lambda: handle.read(_CHUNK), b""),
        headers={"Content-Type": "application/x-ndjson", **auth_headers(server)},
        timeout=IMPORT_TIMEOUT,
    )
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else response.text[:200]
        typer.echo(
            f"The daemon refused the import ({response.status_code}): {printable(detail, 500)}", err=True
        )
        raise typer.Exit(1)
    return ImportResult(int(body["imported"]), int(body["skipped"]), list(body.get("errors", [])))


def _import_direct(settings: Settings, home: Path, handle: IO[bytes]) -> ImportResult:
    from tokenlens.config import SettingsHolder
    from tokenlens.pricing import pricer_for
    from tokenlens.shared_ledger import import_counted

    store = open_store(settings.storage.url, home)
    try:
        return import_counted(  # into the shared budget ledger's rows too (other gateways on this store)
            store,
            bounded_lines(handle),
            pricer_for(settings.pricing),
            settings=SettingsHolder(settings),
            ledger=None,
            store_bodies=settings.storage.store_bodies,
        )
    finally:
        store.close()


def import_(
    file: Annotated[
        Path, typer.Argument(help="A JSONL file of call records (as `tokenlens export` writes).")
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Import call records from JSONL: through the running daemon, or into the store directly."""
    settings, home = load_cli_settings(config, data_dir)
    path = file.expanduser()
    try:
        handle = path.open("rb")
    except OSError as exc:
        typer.echo(f"Cannot read {path}: {exc.strerror or exc}.", err=True)
        raise typer.Exit(1) from None
    with handle, import_progress(handle, path.stat().st_size) as reader:
        try:
            if daemon_is_up(settings.server):
                typer.echo(f"Importing through the daemon at {daemon_url(settings.server)}.", err=True)
                result = _import_via_daemon(settings.server, reader)
            else:
                result = _import_direct(settings, home, reader)
        except OSError as exc:
            typer.echo(f"Cannot read {path}: {exc.strerror or exc}.", err=True)
            raise typer.Exit(1) from None
        except httpx.HTTPError as exc:
            typer.echo(f"The import through the daemon failed: {exc}.", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"imported {result.imported}, skipped {result.skipped}, errors {len(result.errors)}")
    for problem in result.errors[:SHOWN_ERRORS]:
        typer.echo(f"  line {problem.get('line')}: {printable(problem.get('error'), 500)}")
    if len(result.errors) > SHOWN_ERRORS:
        typer.echo(f"  ... and {len(result.errors) - SHOWN_ERRORS} more")


PROGRESS_MIN_BYTES = 1 << 20  # a progress bar for files of 1 MiB and more


class ProgressReader:
    """A binary file that advances a progress bar as it is read (by blocks or by lines)."""

    def __init__(self, handle: IO[bytes], advance: Callable[[int], None]) -> None:
        self.handle = handle
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.advance(len(data))
        return data

    def readline(self, size: int = -1) -> bytes:
        line = self.handle.readline(size)
        self.advance(len(line))
        return line

    def __iter__(self) -> Iterator[bytes]:
        for line in self.handle:
            self.advance(len(line))
            yield line


@contextlib.contextmanager
def import_progress(handle: IO[bytes], size: int) -> Iterator[IO[bytes]]:
    """`handle`, wrapped with a progress bar on stderr when the file is large."""
    if size < PROGRESS_MIN_BYTES:
        yield handle
        return
    columns = (
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("import", total=size)
        yield cast(IO[bytes], ProgressReader(handle, lambda n: progress.advance(task, n)))


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_)
