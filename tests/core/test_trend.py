"""The forecast's trend label (docs/analytics-api.md#how-the-figures-are-computed): "increasing"/"decreasing" only when the fitted change is material
(>= 10% over 30 days, relative to the fitted level) and distinguishable from the day-to-day noise (|slope| > 2
standard errors of the weighted fit); else "stable".

Each series is built here, one call a day for the 30 complete days before "now", and stored in a real store;
the expected labels are reasoned in the comments from the series' own numbers, not from the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokenlens import analytics
from tokenlens.records import CallRecord, new_call_id
from tokenlens.store import Store, open_store

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(None, tmp_path)
    yield opened
    opened.close()


def label(store: Store, daily_spend: list[float]) -> dict[str, object]:
    """Store one call a day (oldest 30 days ago, the last yesterday) and return the forecast."""
    assert len(daily_spend) == 30
    store.insert_calls(
        [
            CallRecord(
                id=new_call_id(),
                ts=MIDNIGHT - (30 - i) * 86400 + 12 * 3600,
                provider="openai",
                endpoint="/v1/chat/completions",
                model="gpt-4o",
                input_tokens=1000,
                output_tokens=100,
                cost_usd=cost,
                input_cost_usd=cost,
                priced=True,
            )
            for i, cost in enumerate(daily_spend)
        ]
    )
    return analytics.forecast(store, UTC, None, now=NOW)


def alternating(amplitude: float) -> list[float]:
    """Day-to-day noise of +-amplitude, alternating (no trend of its own)."""
    return [amplitude if i % 2 else -amplitude for i in range(30)]


def test_rising_30_percent_a_month_with_small_noise_is_increasing(store: Store) -> None:
    # $100 a day rising $1 a day: +$30 over 30 days, 26% of the mid-window level (~$114.5): material.
    # Noise +-$1: the slope's standard error is about 1 / sqrt(sum (x - mean)^2) = 1 / sqrt(2247) ~ 0.02,
    # so the slope of 1 is ~50 standard errors: distinguishable. (The old rule, |slope| > 2% of the mean,
    # i.e. > $2.29 a day, called this "stable".)
    noise = alternating(1.0)
    body = label(store, [100.0 + i + noise[i] for i in range(30)])
    assert body["trend"] == "increasing"
    assert body["slope_usd_per_day"] == pytest.approx(1.0, abs=0.1)


def test_the_same_rise_in_huge_noise_is_stable(store: Store) -> None:
    # The same +$1 a day under +-$60 day-to-day swings: standard error ~ 60 / sqrt(2247) ~ 1.3 > slope / 2,
    # so the rise cannot be told from the noise.
    noise = alternating(60.0)
    body = label(store, [100.0 + i + noise[i] for i in range(30)])
    assert body["trend"] == "stable"


def test_rising_5_percent_a_month_without_noise_is_stable(store: Store) -> None:
    # $100 a day rising $5 over 30 days: exact (no noise, so certainly real), but under 10%: not material.
    body = label(store, [100.0 + 5.0 * i / 30 for i in range(30)])
    assert body["trend"] == "stable"
    assert body["slope_usd_per_day"] == pytest.approx(5.0 / 30, rel=1e-6)


def test_falling_20_percent_is_decreasing(store: Store) -> None:
    # $100 a day falling $20 over 30 days (-$0.667 a day): -20% of the start, about -22% of the mid-window
    # level (~$90.3); noise +-$0.5 gives a standard error ~0.01: decreasing.
    noise = alternating(0.5)
    body = label(store, [100.0 - 20.0 * i / 30 + noise[i] for i in range(30)])
    assert body["trend"] == "decreasing"


def test_trend_of_figures() -> None:
    # clean lines whose mid-window level is $100: +$10.5 over 30 days is material (10.5%), +$9.5 is not
    above = analytics.trend_of([100.0 + (i - 14.5) * (10.5 / 30) for i in range(30)])
    assert above.level == pytest.approx(100.0)
    assert above.change_30d == pytest.approx(0.105)
    assert above.label == "increasing"
    assert analytics.trend_of([100.0 + (i - 14.5) * (9.5 / 30) for i in range(30)]).label == "stable"
    assert analytics.trend_of([100.0 - (i - 14.5) * (10.5 / 30) for i in range(30)]).label == "decreasing"
    assert analytics.trend_of([5.0, 6.0, 7.0]).label == "stable"  # fewer than 7 days: too short to tell
