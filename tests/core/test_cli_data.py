from __future__ import annotations

import contextlib
import csv
import io
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner
from werkzeug.serving import make_server

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.cli import data
from tokenlens.config import SettingsHolder, load_settings
from tokenlens.controls import Cap
from tokenlens.records import CALL_FIELDS, CallRecord
from tokenlens.shared_ledger import SharedLedger
from tokenlens.store import open_store
from tokenlens.web import create_app

runner = CliRunner()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    data.register(app)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory whose config points at a port where no daemon runs."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(f"server:\n  port: {free_port()}\ntimezone: UTC\n")
    monkeypatch.setenv("TOKENLENS_HOME", str(home))
    monkeypatch.delenv("TOKENLENS_CONFIG", raising=False)
    return home


def records() -> list[CallRecord]:
    return [
        CallRecord(
            id=f"r{i}",
            ts=datetime(2026, 11, 1 + i, 9, tzinfo=UTC).timestamp(),
            provider="anthropic",
            endpoint="/v1/messages",
            model="claude-haiku-4-5",
            input_tokens=100 * i,
            output_tokens=10 * i,
            cost_usd=0.001 * i,
            priced=True,
            tags={"team": "t"},
        )
        for i in range(5)
    ]


def seed(home: Path) -> None:
    store = open_store(None, home)
    store.insert_calls(records(), store_bodies=False)
    store.close()


def test_commands_are_registered_on_the_main_cli() -> None:
    from tokenlens.cli import app as main_app

    result = runner.invoke(main_app, ["--help"])
    assert "export" in result.output and "import" in result.output


def test_export_jsonl_to_stdout(cli: typer.Typer, home: Path) -> None:
    seed(home)
    result = runner.invoke(cli, ["export"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [r.to_dict() for r in records()]


def test_export_csv_since_to_file(cli: typer.Typer, home: Path, tmp_path: Path) -> None:
    seed(home)
    out = tmp_path / "calls.csv"
    result = runner.invoke(cli, ["export", "--format", "csv", "--since", "2026-11-03", "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == list(CALL_FIELDS)
    assert [row[0] for row in rows[1:]] == ["r2", "r3", "r4"]


def test_export_does_not_write_the_store(cli: typer.Typer, home: Path) -> None:
    result = runner.invoke(cli, ["export", "--format", "csv"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [",".join(CALL_FIELDS)]
    assert not (home / "tokenlens.db").exists()


def test_export_bad_options(cli: typer.Typer, home: Path) -> None:
    assert runner.invoke(cli, ["export", "--format", "xml"]).exit_code == 2
    assert runner.invoke(cli, ["export", "--since", "soon"]).exit_code == 2


def test_export_with_data_dir(cli: typer.Typer, home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    seed(other)
    result = runner.invoke(cli, ["export", "--data-dir", str(other)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 5


def test_import_missing_file(cli: typer.Typer, home: Path, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["import", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1
    assert "Cannot read" in result.output and "nope.jsonl" in result.output
    assert result.output.count("\n") == 1


def test_import_directly_into_the_store(cli: typer.Typer, home: Path, tmp_path: Path) -> None:
    file = tmp_path / "in.jsonl"
    good = [json.dumps(r.to_dict()) for r in records()]
    bad = json.dumps(
        {"ts": "2026-11-01T00:00:00Z", "provider": "openai", "input_tokens": 1, "output_tokens": 1}
    )
    file.write_text("\n".join([*good[:2], bad, *good[2:]]) + "\n")
    first = runner.invoke(cli, ["import", str(file)])
    assert first.exit_code == 0, first.output
    assert "imported 5, skipped 0, errors 1" in first.output
    assert "line 3: missing field 'model'" in first.output
    second = runner.invoke(cli, ["import", str(file)])
    assert "imported 0, skipped 5, errors 1" in second.output
    store = open_store(None, home)
    assert [r.id for r in store.iter_calls()] == [f"r{i}" for i in range(5)]
    store.close()


def test_import_directly_into_the_store_counts_in_the_shared_budget_ledger(
    cli: typer.Typer, home: Path, tmp_path: Path
) -> None:
    store = open_store(None, home)
    ledger = SharedLedger(SettingsHolder(load_settings(home / "config.yaml")), store)
    cap = Cap("global", "day", "budget", limit_usd=1.0)
    assert ledger.admit("warm-up", [cap], 0.01) is None  # `daemon --workers N` made today's row
    ledger.release("warm-up")
    ledger.return_leases(idle_s=0.0)
    today = datetime.now(UTC).timestamp()
    imported = CallRecord(
        id="imp", ts=today, provider="openai", endpoint="/v1/chat/completions", model="gpt-4o-mini",
        cost_usd=0.97, priced=True,
    )  # fmt: skip
    file = tmp_path / "in.jsonl"
    file.write_text(json.dumps(imported.to_dict()) + "\n")
    result = runner.invoke(cli, ["import", str(file)])
    assert result.exit_code == 0, result.output
    assert "imported 1, skipped 0, errors 0" in result.output
    assert ledger.admit("too-big", [cap], 0.05) is not None  # the workers see the import at once
    assert ledger.admit("fits", [cap], 0.02) is None
    store.close()


@pytest.fixture
def daemon(tmp_path: Path, home: Path) -> Iterator[AppDeps]:
    """A running API (as the daemon serves it) on the port of the config file, with its own store."""
    settings = load_settings(home / "config.yaml")
    daemon_home = tmp_path / "daemon-home"
    stack = contextlib.ExitStack()
    deps = stack.enter_context(app_deps(daemon_home, settings, config_file=home / "config.yaml"))
    web = make_server("127.0.0.1", settings.server.port, create_app(deps), threaded=True)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    yield deps
    web.shutdown()
    thread.join(5)
    stack.close()


def test_import_goes_through_a_running_daemon(
    cli: typer.Typer, home: Path, tmp_path: Path, daemon: AppDeps
) -> None:
    file = tmp_path / "in.jsonl"
    file.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records()))
    result = runner.invoke(cli, ["import", str(file)])
    assert result.exit_code == 0, result.output
    assert "imported 5, skipped 0, errors 0" in result.output
    assert daemon.store.count_calls() == 5
    assert not (home / "tokenlens.db").exists()  # nothing was written behind the daemon's back


def test_large_import_shows_progress_and_reads_everything(
    cli: typer.Typer, home: Path, tmp_path: Path
) -> None:
    base = records()[0].to_dict()
    lines = [json.dumps({**base, "id": f"big{i}", "source": "bulk" + "x" * 200}) for i in range(5000)]
    file = tmp_path / "big.jsonl"
    file.write_text("\n".join(lines) + "\n")
    assert file.stat().st_size >= data.PROGRESS_MIN_BYTES
    result = runner.invoke(cli, ["import", str(file)])
    assert result.exit_code == 0, result.output
    assert "imported 5000, skipped 0, errors 0" in result.output
    store = open_store(None, home)
    assert store.count_calls() == 5000
    store.close()


def test_progress_reader_counts_every_byte(tmp_path: Path) -> None:
    file = tmp_path / "f.jsonl"
    file.write_bytes(b"one\ntwo\nthree\n")
    seen: list[int] = []
    with file.open("rb") as handle:
        assert list(data.ProgressReader(handle, seen.append)) == [b"one\n", b"two\n", b"three\n"]
    with file.open("rb") as handle:
        reader = data.ProgressReader(handle, seen.append)
        assert reader.read(5) + reader.read(-1) == b"one\ntwo\nthree\n"
    assert sum(seen) == 2 * file.stat().st_size


def test_import_errors_are_shown_escaped(cli: typer.Typer, home: Path, tmp_path: Path) -> None:
    """An import file is user data: what its bad lines say must not drive the terminal (issue 17, #10)."""
    file = tmp_path / "in.jsonl"
    hostile = "\x1b]0;pwned\x07\x1b[2J"
    line = {"ts": hostile, "provider": "openai", "model": "m", "input_tokens": 1, "output_tokens": 1}
    file.write_text(json.dumps(line) + "\n")
    result = runner.invoke(cli, ["import", str(file)])
    assert result.exit_code == 0, result.output
    assert "errors 1" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
