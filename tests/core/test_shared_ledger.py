"""The shared ledger (budgets across gateways on one store) and the shared configuration, on SQLite and on a
real PostgreSQL server (skipped, with the reason, when it cannot be reached)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.pg import store_url
from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.config_sync import ConfigSync
from tokenlens.controls import Cap
from tokenlens.records import CallRecord, iso_utc, new_call_id
from tokenlens.shared_ledger import LedgerUnavailable, SharedLedger, import_counted
from tokenlens.store import Store, open_store

SETTINGS = {"timezone": "UTC"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as found:
        yield found


def gateways(url: str, home: Path, count: int) -> list[tuple[Store, SharedLedger]]:
    """`count` gateways' ledgers, each on its own connection to the one store."""
    found = []
    for _ in range(count):
        store = open_store(url, home)
        ledger = SharedLedger(SettingsHolder(parse_settings(SETTINGS)), store, idle_s=0.2)
        found.append((store, ledger))
    return found


def record(call_id: str, cost: float, source: str = "agent") -> CallRecord:
    return CallRecord(
        id=call_id,
        ts=time.time(),
        provider="openai",
        endpoint="/v1/chat/completions",
        source=source,
        model="gpt-4o-mini",
        outcome="ok",
        cost_usd=cost,
    )


def row(store: Store, scope: str = "global") -> tuple[float, float]:
    with store.connection() as db:
        found = db.execute_sql(
            'SELECT "spent_usd", "reserved_usd" FROM "ledger_bucket" WHERE "scope" = '
            f'{db.param} AND "period" = {db.param}',
            (scope, "day"),
        ).fetchone()
    return float(found[0]), float(found[1])


def test_three_gateways_never_admit_more_than_the_cap(url: str, tmp_path: Path) -> None:
    fleet = gateways(url, tmp_path, 3)
    worst, real = 0.1, 0.08
    cap = Cap("global", "day", "budget", limit_usd=6 * worst + 0.05)  # fits six worst cases
    admitted: list[tuple[SharedLedger, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(30)

    def one(i: int) -> None:
        _, ledger = fleet[i % 3]
        call_id = new_call_id()
        barrier.wait()
        if ledger.admit(call_id, [cap], worst) is None:
            with lock:
                admitted.append((ledger, call_id))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(admitted) <= 6
    for ledger, call_id in admitted:
        ledger.settle([record(call_id, real)])
    for _, ledger in fleet:
        ledger.return_leases(idle_s=0.0)
    spent, reserved = row(fleet[0][0])
    assert spent == pytest.approx(len(admitted) * real, rel=1e-9)
    assert reserved == pytest.approx(0.0, abs=1e-9)
    # room freed by the real costs being below the worst case is usable again by any gateway
    left = cap.limit_usd - spent  # type: ignore[operator]
    fits = int((left + 1e-9) // worst)
    more = [fleet[i % 3][1].admit(new_call_id(), [cap], worst) is None for i in range(fits + 3)]
    assert more.count(True) == fits
    for store, _ in fleet:
        store.close()


def test_a_lease_admits_further_calls_without_the_database(url: str, tmp_path: Path) -> None:
    [(store, ledger)] = gateways(url, tmp_path, 1)
    cap = Cap("global", "day", "budget", limit_usd=100.0)
    assert ledger.admit("a", [cap], 0.1) is None  # first: exactly what it needs
    assert ledger.admit("b", [cap], 0.1) is None  # second: a slice of several worst cases
    leased = ledger.leased()[("global", "day", ledger.periods().day)][0]
    assert leased == pytest.approx(0.1 + 4 * 0.1)
    store.db.close()
    real_execute = store.db.execute_sql
    store.db.execute_sql = lambda *a, **k: pytest.fail("a database round trip")  # type: ignore[method-assign]
    try:
        for call_id in ("c", "d", "e"):
            assert ledger.admit(call_id, [cap], 0.1) is None
    finally:
        store.db.execute_sql = real_execute  # type: ignore[method-assign]
    assert row(store)[1] == pytest.approx(leased)  # the store holds the lease as reserved
    ledger.release("e")
    ledger.settle([record(c, 0.05) for c in "abcd"])
    ledger.return_leases(idle_s=0.0)
    assert row(store) == pytest.approx((0.2, 0.0))
    store.close()


def test_the_row_starts_from_the_calls_already_stored(url: str, tmp_path: Path) -> None:
    store = open_store(url, tmp_path)
    store.insert_calls([record(new_call_id(), 0.3, "agent"), record(new_call_id(), 0.2, "other")])
    ledger = SharedLedger(SettingsHolder(parse_settings(SETTINGS)), store)
    caps = [Cap("global", "day", "budget", limit_usd=1.0), Cap("source:agent", "day", "quota", 0.5)]
    assert ledger.admit("x", caps, 0.2) is None
    assert row(store)[0] == pytest.approx(0.5) and row(store, "source:agent")[0] == pytest.approx(0.3)
    denial = ledger.admit("y", caps, 0.2)  # source: 0.3 spent + 0.2 in flight + 0.2 > 0.5
    assert denial is not None and denial.cap.scope == "source:agent" and "0.50" in denial.message
    store.close()


def import_line(call_id: str, cost: float, ts: float) -> str:
    return json.dumps(
        {
            "id": call_id,
            "ts": iso_utc(ts),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "source": "agent",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": cost,
        }
    )


def test_the_row_is_not_rebuilt_but_an_import_straight_into_the_store_is_added_to_it(
    url: str, tmp_path: Path
) -> None:
    [(store, ledger)] = gateways(url, tmp_path, 1)
    cap = Cap("global", "day", "budget", limit_usd=1.0)
    assert ledger.admit("a", [cap], 0.01) is None  # the row is made from the store (empty) here
    ledger.settle([record("a", 0.01)])
    ledger.return_leases(idle_s=0.0)
    # calls stored behind the ledger's back are never read again: the row is the truth
    store.insert_calls([record("behind", 0.5)])
    assert row(store) == (pytest.approx(0.01), pytest.approx(0.0))
    # `tokenlens import` with no daemon up: its own connection, no running ledger
    importer = open_store(url, tmp_path)
    now = time.time()
    result = import_counted(
        importer,
        [import_line("imp-today", 0.9, now), import_line("imp-old", 5.0, now - 40 * 86400)],
        None,
        settings=SettingsHolder(parse_settings(SETTINGS)),
        ledger=None,
    )
    assert (result.imported, result.skipped) == (2, 0)
    assert row(store) == (pytest.approx(0.91), pytest.approx(0.0))  # today's import only
    assert ledger.admit("b", [cap], 0.1) is not None
    assert ledger.admit("c", [cap], 0.05) is None
    importer.close()
    store.close()


def test_unpriced_and_call_caps(url: str, tmp_path: Path) -> None:
    fleet = gateways(url, tmp_path, 2)
    calls = Cap("source:agent", "day", "quota", limit_calls=3)
    admitted = [fleet[i % 2][1].admit(f"c{i}", [calls], None) is None for i in range(6)]
    assert admitted.count(True) == 3
    usd = Cap("global", "day", "budget", limit_usd=0.1)
    assert fleet[0][1].admit("u", [usd], None) is None  # unpriced: admitted while the cap has room
    assert fleet[1][1].admit("p", [usd], 0.1) is not None  # the unpriced call holds a sliver of it
    for store, _ in fleet:
        store.close()


def test_an_unreachable_database_refuses_with_a_reason(tmp_path: Path) -> None:
    store = open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", tmp_path, migrate=False)
    ledger = SharedLedger(SettingsHolder(parse_settings(SETTINGS)), store)
    with pytest.raises(LedgerUnavailable, match="cannot be reached"):
        ledger.admit("a", [Cap("global", "day", "budget", limit_usd=1.0)], 0.1)


def test_config_published_by_one_gateway_is_applied_by_another(url: str, tmp_path: Path) -> None:
    stores = [open_store(url, tmp_path) for _ in range(2)]
    holders = [SettingsHolder(parse_settings({"budgets": {"daily_usd": 1}})) for _ in range(2)]
    a, b = (ConfigSync(s, h) for s, h in zip(stores, holders, strict=True))
    assert b.poll() == []
    data: dict[str, Any] = {"daily_usd": 7.5, "fail_open": True}
    assert a.publish("budgets", data) == 1
    assert b.poll() == ["budgets"] and holders[1].get().budgets.daily_usd == 7.5
    assert b.poll() == []  # applied once
    assert a.publish("budgets", {"daily_usd": 2}) == 2
    b.poll()
    assert holders[1].get().budgets.daily_usd == 2
    reloaded = b.overlay(parse_settings({"budgets": {"daily_usd": 1}}))  # the file reloaded on b
    assert reloaded.budgets.daily_usd == 2
    a.publish("budgets", {"daily_usd": -1})  # invalid: b keeps what it has
    b.poll()
    assert holders[1].get().budgets.daily_usd == 2
    for store in stores:
        store.close()
