"""Times for test calls that must fall within the current UTC day (queries for "the last day" start at
today's UTC midnight): a call put an hour back at 00:30 UTC would land yesterday."""

from __future__ import annotations

import time


def today_from(seconds_back: float) -> float:
    """`seconds_back` before now, or, early in a UTC day, just enough after midnight that the span up to
    `seconds_back` later still lies within today (possibly a little ahead of now)."""
    now = time.time()
    midnight = now - now % 86400
    return max(now - seconds_back, midnight + 60)
