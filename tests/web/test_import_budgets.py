"""Records imported through `POST /api/import` count toward budgets and quotas at once, without a restart:
in the single gateway's in-memory ledger and in the shared ledger of a fleet (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from harness.deps import app_deps
from harness.pg import store_url
from tokenlens.app import AppDeps
from tokenlens.config import parse_settings
from tokenlens.controls import Ledger, source_caps
from tokenlens.records import iso_utc
from tokenlens.shared_ledger import SharedLedger
from tokenlens.web import create_app

SOURCE = "importer"
SETTINGS: dict[str, Any] = {
    "timezone": "UTC",
    "quotas": {"source_limits": [{"source": SOURCE, "daily_usd": 1.0, "daily_calls": 3}]},
}


@contextlib.contextmanager
def make_deps(url: str | None, home: Path, *, shared: bool = False) -> Iterator[AppDeps]:
    settings = parse_settings({**SETTINGS, "storage": {"url": url}} if url else SETTINGS)
    with app_deps(home, settings, shared=shared) as made:
        yield made


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[AppDeps]:
    with make_deps(None, tmp_path) as made:
        yield made


def client_of(deps: AppDeps) -> FlaskClient:
    return create_app(deps, {"TESTING": True}).test_client()


def line(call_id: str, cost: float, *, ts: float | None = None, source: str = SOURCE) -> str:
    return json.dumps(
        {
            "id": call_id,
            "ts": iso_utc(time.time() if ts is None else ts),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "source": source,
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": cost,
        }
    )


def post_import(client: FlaskClient, *lines: str) -> dict[str, Any]:
    response = client.post("/api/import", data="\n".join(lines) + "\n", content_type="application/x-ndjson")
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def source_day(client: FlaskClient) -> tuple[float, int]:
    """(spent USD, calls) of the source's daily quota, from `GET /api/usage/budget-status`."""
    status = client.get("/api/usage/budget-status").get_json()
    (usd,) = [c for c in status["caps"] if c["scope"] == f"source:{SOURCE}" and c["period"] == "day"]
    (calls,) = [c for c in status["call_caps"] if c["scope"] == f"source:{SOURCE}"]
    return usd["spent_usd"], calls["calls"]


def test_an_import_counts_toward_the_running_ledger_at_once(deps: AppDeps) -> None:
    ledger = deps.ledger  # the daemon's ledger, loaded from the (empty) store at start
    assert type(ledger) is Ledger
    client = client_of(deps)
    caps = source_caps(deps.settings.get(), SOURCE)
    assert ledger.admit("before", caps, 0.05) is None  # room before the import
    ledger.release("before")

    yesterday = time.time() - 86400
    result = post_import(client, line("imp-1", 0.97), line("imp-old", 5.0, ts=yesterday))
    assert result == {"imported": 2, "skipped": 0, "errors": []}
    # today's $0.97 is spent now (yesterday's import is not today's spend): $1.00 - $0.97 leaves $0.03
    assert source_day(client) == (pytest.approx(0.97), 1)
    denial = ledger.admit("too-big", caps, 0.05)
    assert denial is not None and denial.cap.scope == f"source:{SOURCE}" and denial.metric == "usd"
    assert ledger.admit("fits", caps, 0.02) is None
    ledger.release("fits")

    # importing the same records again changes nothing, in the store or in the ledger
    assert post_import(client, line("imp-1", 0.97))["skipped"] == 1
    assert source_day(client) == (pytest.approx(0.97), 1)

    # imported calls count toward call caps too (3 a day): two more make three
    post_import(client, line("imp-2", 0.0), line("imp-3", 0.0))
    assert source_day(client)[1] == 3
    denial = ledger.admit("fourth", caps, 0.0)
    assert denial is not None and denial.metric == "calls"


def test_an_import_is_read_again_when_the_gateway_restarts(tmp_path: Path) -> None:
    with make_deps(None, tmp_path) as before:
        post_import(client_of(before), line("imp-1", 0.97))
    with make_deps(None, tmp_path) as deps:  # a new ledger, loaded from the store at start
        client = client_of(deps)
        assert deps.ledger.admit("too-big", source_caps(deps.settings.get(), SOURCE), 0.05) is not None
        assert source_day(client) == (pytest.approx(0.97), 1)  # counted once: not again by the import


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as found:
        yield found


def test_an_import_counts_in_the_shared_ledger_for_every_gateway(shared_url: str, tmp_path: Path) -> None:
    with (
        make_deps(shared_url, tmp_path / "one", shared=True) as one,
        make_deps(shared_url, tmp_path / "two", shared=True) as two,
    ):
        ledger_one, ledger_two = one.ledger, two.ledger
        assert isinstance(ledger_one, SharedLedger) and isinstance(ledger_two, SharedLedger)
        caps = source_caps(one.settings.get(), SOURCE)
        for ledger in (ledger_one, ledger_two):  # both gateways have admitted calls: the rows exist
            assert ledger.admit("warm-up", caps, 0.01) is None
            ledger.release("warm-up")
            ledger.return_leases(idle_s=0.0)  # no headroom held locally: every admission asks the store

        result = post_import(client_of(one), line("imp-1", 0.97))
        assert result == {"imported": 1, "skipped": 0, "errors": []}

        # the row is updated at once (it was built from the store before the import and is never rebuilt)
        assert source_day(client_of(two)) == (pytest.approx(0.97), 1)
        for name, ledger in (("one", ledger_one), ("two", ledger_two)):
            assert ledger.admit(f"too-big-{name}", caps, 0.05) is not None
        assert ledger_two.admit("fits", caps, 0.02) is None
        ledger_two.release("fits")
