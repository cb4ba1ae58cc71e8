"""The spend ledger: admission with reservations, settlement, periods, rebuild from the store, events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tokenlens.config import SettingsHolder, parse_settings
from tokenlens.controls import (
    ENDED_GRACE_S,
    Cap,
    Ledger,
    WorstCasePricer,
    answers_requested,
    budget_caps,
    model_caps,
    quota_caps,
)
from tokenlens.records import CallRecord
from tokenlens.store import Store, open_store
from tokenlens.tokens import get_encoding

# 2026-03-10 12:00 UTC
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def holder(**sections: Any) -> SettingsHolder:
    return SettingsHolder(parse_settings({"timezone": "UTC", **sections}))


def ledger_with(
    clock: Clock | None = None, **sections: Any
) -> tuple[Ledger, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    ledger = Ledger(holder(**sections), clock or Clock(), publish=lambda t, d: events.append((t, d)))
    return ledger, events


def record(
    call_id: str,
    cost: float | None,
    *,
    ts: float = NOON,
    source: str = "s",
    model: str = "m",
    outcome: str = "ok",
) -> CallRecord:
    return CallRecord(
        id=call_id,
        ts=ts,
        provider="openai",
        endpoint="/v1/chat/completions",
        source=source,
        model=model,
        outcome=outcome,  # type: ignore[arg-type]
        cost_usd=cost,
        priced=cost is not None,
    )


DAILY_1 = Cap("global", "day", "budget", limit_usd=1.0)


def test_a_call_is_admitted_only_if_spent_plus_reserved_plus_its_worst_case_fits() -> None:
    ledger, _ = ledger_with()
    assert ledger.admit("a", [DAILY_1], 0.4) is None
    assert ledger.admit("b", [DAILY_1], 0.4) is None
    denial = ledger.admit("c", [DAILY_1], 0.4)  # 0.8 reserved + 0.4 > 1.0
    assert denial is not None and denial.cap == DAILY_1
    assert "daily budget" in denial.message and "$1.00" in denial.message
    assert ledger.admit("d", [DAILY_1], 0.2) is None  # exactly fills the cap
    assert ledger.in_flight() == 3


def test_settling_replaces_the_reservation_with_the_real_cost() -> None:
    ledger, _ = ledger_with(budgets={"daily_usd": 1.0})
    assert ledger.admit("a", [DAILY_1], 0.9) is None
    assert ledger.admit("b", [DAILY_1], 0.2) is not None
    ledger.settle([record("a", 0.1)])
    (cap,) = ledger.status()["caps"]
    assert (cap["spent_usd"], cap["reserved_usd"]) == (pytest.approx(0.1), 0.0)
    assert ledger.admit("b", [DAILY_1], 0.2) is None
    # settling twice (or a record with no reservation) releases nothing more
    ledger.settle([record("zzz", 0.0, outcome="blocked")])
    assert ledger.status()["caps"][0]["reserved_usd"] == pytest.approx(0.2)


def test_a_blocked_or_released_call_leaves_no_reservation() -> None:
    ledger, _ = ledger_with()
    assert ledger.admit("a", [DAILY_1], 0.9) is None
    ledger.release("a")
    ledger.release("a")  # idempotent
    assert ledger.in_flight() == 0
    assert ledger.admit("b", [DAILY_1], 0.9) is None


def test_a_reservation_whose_record_never_commits_is_released_after_the_grace_period() -> None:
    clock = Clock()
    ledger, _ = ledger_with(clock)
    assert ledger.admit("a", [DAILY_1], 0.9) is None
    ledger.end("a")
    clock.now += ENDED_GRACE_S - 1
    assert ledger.admit("b", [DAILY_1], 0.9) is not None  # still held: the record may be on its way
    clock.now += 2
    assert ledger.admit("b", [DAILY_1], 0.9) is None
    assert ledger.in_flight() == 1


def test_call_caps_count_calls_in_flight_and_made() -> None:
    ledger, _ = ledger_with()
    cap = Cap("source:s", "day", "quota", limit_calls=2)
    assert ledger.admit("a", [cap], None) is None
    assert ledger.admit("b", [cap], None) is None
    denial = ledger.admit("c", [cap], None)
    assert denial is not None and denial.metric == "calls" and "2 calls" in denial.message
    ledger.settle([record("a", None), record("b", None, outcome="error")])
    assert ledger.admit("c", [cap], None) is not None  # two calls made today
    ledger.settle([record("x", 0.0, outcome="blocked")])  # blocked calls are not calls made


def test_the_day_cap_resets_at_midnight_in_the_configured_time_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    clock = Clock(datetime(2026, 3, 10, 23, 59, 0, tzinfo=paris).timestamp())
    ledger = Ledger(SettingsHolder(parse_settings({"timezone": "Europe/Paris"})), clock)
    assert ledger.admit("a", [DAILY_1], 0.8) is None
    ledger.settle([record("a", 0.8, ts=clock.now)])
    denial = ledger.admit("b", [DAILY_1], 0.8)
    assert denial is not None and denial.retry_after == 60
    assert denial.resets_at == datetime(2026, 3, 11, tzinfo=paris).timestamp()
    clock.now += 60  # 00:00 in Paris (23:00 UTC: not a UTC boundary)
    assert ledger.admit("b", [DAILY_1], 0.8) is None


def test_the_month_cap_resets_on_the_first_of_the_month() -> None:
    clock = Clock(datetime(2026, 3, 31, 22, 0, tzinfo=UTC).timestamp())
    ledger, _ = ledger_with(clock)
    monthly = Cap("global", "month", "budget", limit_usd=1.0)
    ledger.admit("a", [monthly], 1.0)
    ledger.settle([record("a", 1.0, ts=clock.now)])
    denial = ledger.admit("b", [monthly], 0.01)
    assert denial is not None and denial.retry_after == 2 * 3600
    clock.now += 2 * 3600
    assert ledger.admit("b", [monthly], 0.01) is None


def test_an_unpriced_call_is_admitted_while_the_cap_has_room_and_refused_once_it_is_used_up() -> None:
    ledger, _ = ledger_with()
    assert ledger.admit("a", [DAILY_1], None) is None
    assert ledger.admit("b", [DAILY_1], 1.0) is None
    denial = ledger.admit("c", [DAILY_1], None)
    assert denial is not None and "no known price" in denial.message
    zero = Cap("global", "day", "budget", limit_usd=0.0)
    assert ledger.admit("d", [zero], None) is not None  # a $0 cap stops everything


def test_budget_events_at_80_and_100_percent_once_per_period() -> None:
    clock = Clock()
    ledger, events = ledger_with(clock, budgets={"daily_usd": 1.0})
    caps = budget_caps(ledger.settings.get())
    ledger.admit("a", caps, 0.5)
    ledger.settle([record("a", 0.5)])
    assert events == []
    ledger.admit("b", caps, 0.35)
    ledger.settle([record("b", 0.35)])
    assert [(t, e["threshold"], e["scope"], e["period"]) for t, e in events] == [
        ("budget", 80, "global", "day")
    ]
    ledger.admit("c", caps, 0.01)
    ledger.settle([record("c", 0.01)])
    assert len(events) == 1  # once per period
    assert ledger.admit("d", caps, 0.5) is not None  # refused: the cap counts as reached
    assert [e["threshold"] for _, e in events] == [80, 100]
    assert ledger.admit("e", caps, 0.5) is not None
    assert len(events) == 2
    clock.now += 86400  # a new day: announced again
    ledger.admit("f", caps, 0.9)
    ledger.settle([record("f", 0.9, ts=clock.now)])
    assert [e["threshold"] for _, e in events] == [80, 100, 80]


def test_fifty_threads_against_a_cap_that_fits_five() -> None:
    ledger, _ = ledger_with()
    cap = Cap("global", "day", "budget", limit_usd=5 * 0.1 + 0.05)
    admitted: list[str] = []
    barrier = threading.Barrier(50)

    def one(i: int) -> None:
        barrier.wait()
        if ledger.admit(f"c{i}", [cap], 0.1) is None:
            admitted.append(f"c{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 5


def test_caps_from_settings() -> None:
    settings = parse_settings(
        {
            "budgets": {"daily_usd": 2, "monthly_usd": 20},
            "quotas": {
                "source_limits": [{"source": "agent", "daily_usd": 1, "monthly_usd": 5, "daily_calls": 3}],
                "model_limits": [{"model": "gpt-4o", "daily_calls": 10}, {"model": "o3", "daily_usd": 1}],
            },
        }
    )
    assert budget_caps(settings) == [
        Cap("global", "day", "budget", limit_usd=2),
        Cap("global", "month", "budget", limit_usd=20),
    ]
    assert quota_caps(settings, "agent", "gpt-4o-2024-08-06") == [
        Cap("source:agent", "day", "quota", 1, 3),
        Cap("source:agent", "month", "quota", limit_usd=5),
        Cap("model:gpt-4o", "day", "quota", None, 10),
    ]
    assert quota_caps(settings, "other", "gpt-4o-mini") == []
    assert model_caps(settings, "O3") == [Cap("model:o3", "day", "quota", 1, None)]


def test_worst_case_is_estimated_input_plus_max_tokens_at_the_model_price() -> None:
    settings = parse_settings({"pricing": {"my-model": {"input": 2.0, "output": 10.0}}})
    body = {"model": "my-model", "messages": [{"role": "user", "content": "hello there"}]}
    worst = WorstCasePricer().worst_case(
        settings,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        body=body,
        model="my-model",
        max_tokens=100,
    )
    assert worst.output_tokens == 100 and worst.input_tokens > 0
    assert worst.cost_usd == pytest.approx((worst.input_tokens * 2.0 + 100 * 10.0) / 1e6)
    default = WorstCasePricer().worst_case(
        settings,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        body=body,
        model="my-model",
        max_tokens=None,
    )
    assert default.output_tokens == 4096  # budgets.reserve_output_tokens
    unknown = WorstCasePricer().worst_case(
        settings,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        body=body,
        model="no-such-model-xyz",
        max_tokens=10,
    )
    assert unknown.cost_usd is None


TAMIL = "வணக்கம், இன்று வானிலை மிகவும் நன்றாக உள்ளது. செயற்கை நுண்ணறிவு உலகை மாற்றுகிறது. " * 30


@pytest.mark.parametrize(
    ("provider", "api", "endpoint", "model", "body", "rates"),
    [
        (
            "anthropic",
            "anthropic",
            "/v1/messages",
            "claude-haiku-4-5",
            {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": TAMIL}]},
            (1.00, 5.00),  # published: $1 / $5 per million
        ),
        (
            "google",
            "google",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "gemini-2.5-flash",
            {"contents": [{"role": "user", "parts": [{"text": TAMIL}]}]},
            (0.30, 2.50),
        ),
    ],
)
def test_a_model_with_another_tokenizer_reserves_a_worst_case_input(
    provider: str, api: str, endpoint: str, model: str, body: dict[str, Any], rates: tuple[float, float]
) -> None:
    """Issue 17, finding 6: o200k counts this text at a quarter of what cl100k does; the reservation for a
    Claude or Gemini model must cover a tokenizer that counts like cl100k (measured in test_token_margin)."""
    o200k, cl100k = get_encoding("o200k_base"), get_encoding("cl100k_base")
    assert o200k is not None and cl100k is not None
    assert len(cl100k.encode_ordinary(TAMIL)) > 3.9 * len(o200k.encode_ordinary(TAMIL))
    worst = WorstCasePricer().worst_case(
        parse_settings({}),
        provider=provider,
        api=api,
        endpoint=endpoint,
        body=body,
        model=model,
        max_tokens=10,
    )
    assert worst.input_tokens >= len(cl100k.encode_ordinary(TAMIL))
    assert worst.input_tokens <= len(TAMIL.encode()) + 20  # never past the bytes (plus message overheads)
    assert worst.cost_usd == pytest.approx((worst.input_tokens * rates[0] + 10 * rates[1]) / 1e6)


@pytest.mark.parametrize(
    ("api", "body", "expected"),
    [
        ("openai", {"n": 3}, 3),
        ("openai", {"n": "3"}, 3),
        ("openai", {"n": 2, "best_of": 5}, 5),
        ("openai", {"n": 2.5}, 3),
        ("openai", {"n": 0}, 1),
        ("openai", {"n": -4}, 1),
        ("openai", {"n": True}, 1),
        ("openai", {"n": float("nan")}, 1),
        ("openai", {"n": 10**30}, 10_000),
        ("openai", {}, 1),
        ("google", {"generationConfig": {"candidateCount": 4}}, 4),
        (
            "google",
            {"generation_config": {"candidate_count": 2}, "generationConfig": {"candidateCount": 1}},
            2,
        ),
        ("google", {"n": 5}, 1),
        ("anthropic", {"max_tokens": 5}, 1),
    ],
)
def test_answers_requested(api: str, body: dict[str, Any], expected: int) -> None:
    assert answers_requested(api, body) == expected


def test_the_reservation_covers_every_answer() -> None:
    settings = parse_settings({"pricing": {"my-model": {"input": 0.0, "output": 10.0}}})
    body = {"model": "my-model", "n": 4, "messages": [{"role": "user", "content": "hi"}]}
    worst = WorstCasePricer().worst_case(
        settings,
        provider="openai",
        api="openai",
        endpoint="/v1/chat/completions",
        body=body,
        model="my-model",
        max_tokens=None,
    )
    assert worst.output_tokens == 4 * 4096 and worst.cost_usd == pytest.approx(4 * 4096 * 10.0 / 1e6)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = open_store(None, tmp_path)
    yield made
    made.close()


def test_the_ledger_is_rebuilt_from_the_store(store: Store) -> None:
    yesterday = NOON - 86400
    last_month = datetime(2026, 2, 27, tzinfo=UTC).timestamp()
    store.insert_calls(
        [
            record("1", 0.25, source="a", model="gpt-4o-2024-08-06"),
            record("2", 0.5, source="a", model="gpt-4o"),
            record("3", 1.0, ts=yesterday, source="b"),
            record("4", 8.0, ts=last_month, source="a"),
            record("5", 0.0, source="a", outcome="blocked"),
            record("6", None, source="a", model="unknown-model"),
        ]
    )
    ledger, _ = ledger_with(
        budgets={"daily_usd": 10, "monthly_usd": 100},
        quotas={
            "source_limits": [{"source": "a", "daily_usd": 5, "daily_calls": 10}],
            "model_limits": [{"model": "gpt-4o", "daily_usd": 5}],
        },
    )
    ledger.load(store)
    assert ledger.loaded and ledger.broken is None
    status = ledger.status()
    spent = {(c["scope"], c["period"]): c["spent_usd"] for c in status["caps"]}
    assert spent == {
        ("global", "day"): pytest.approx(0.75),
        ("global", "month"): pytest.approx(1.75),
        ("source:a", "day"): pytest.approx(0.75),
        ("model:gpt-4o", "day"): pytest.approx(0.75),
    }
    (calls,) = status["call_caps"]
    assert calls["calls"] == 3  # ok calls with a model today; the blocked one does not count
    assert status["caps"][0]["resets_at"] == "2026-03-11T00:00:00+00:00"


def test_a_ledger_that_cannot_load_says_it_is_broken(store: Store) -> None:
    ledger, _ = ledger_with()

    class Broken:
        models = store.models

        def connection(self) -> Any:
            raise RuntimeError("database is locked")

    ledger.load(Broken())  # type: ignore[arg-type]
    assert ledger.broken is not None and "database is locked" in ledger.broken
    assert ledger.status()["healthy"] is False
