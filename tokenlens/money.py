"""One way to write an amount of US dollars, for the CLI, reports, digests and every text a person reads.

The rule (the dashboard's `web/static/js/money.js` implements the same one; a test runs both on a table of
amounts):

- `None`, NaN or an infinity: an em dash, "—".
- Zero: "$0.00".
- At or above $1 (in magnitude): cents, with thousands separators: "$1.50", "$1,234.56".
- Below $1: at least two significant digits and at least two decimals, trailing zeros past the second decimal
  dropped: "$0.50", "$0.054", "$0.05", "$0.0014", "$0.000011". No amount other than zero prints as zero
  (below $0.00000000000000000001, 1e-20, the text is "<$0.00000000000000000001": browsers format at most 20
  decimals).
- Rounding is half away from zero on the shortest decimal that reads back as the same float (1.005 -> "$1.01",
  0.125 -> "$0.13"), which is what the browser's `Intl.NumberFormat` does, so both sides agree digit for digit.
- Negative amounts: an ASCII minus before the dollar sign, "-$2.50", "-$0.0014".
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

DASH = "—"
MAX_DECIMALS = 20
_TINY = "<$0." + "0" * (MAX_DECIMALS - 1) + "1"


def usd_decimals(amount: float) -> int:
    """Decimals the rule gives `amount` (before trailing zeros past the second are dropped; may exceed 20)."""
    value = abs(Decimal(repr(float(amount))))
    if value == 0:
        return 2
    # the exponent of the amount rounded to two significant digits (0.0995 -> 0.10 -> -1)
    rounded = value.quantize(Decimal(1).scaleb(value.adjusted() - 1), rounding=ROUND_HALF_UP)
    return max(2, 1 - rounded.adjusted())


def format_usd(amount: float | None) -> str:
    """`amount` dollars as "$1,234.56", "$0.0014", "-$2.50" or "—" (see the module docstring for the rule)."""
    if amount is None:
        return DASH
    value = float(amount)
    if not math.isfinite(value):
        return DASH
    sign = "-" if value < 0 else ""
    decimals = usd_decimals(value)
    if decimals > MAX_DECIMALS:
        return sign + _TINY
    exact = abs(Decimal(repr(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    if exact == 0:
        sign = ""
    text = f"{exact:,f}"
    if decimals > 2:
        whole, _, fraction = text.partition(".")
        text = f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
    return f"{sign}${text}"
