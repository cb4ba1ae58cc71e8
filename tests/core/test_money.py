"""The money format (tokenlens/money.py) and its dashboard twin (web/static/js/money.js) agree.

Expected texts below are written by hand from the rule in the module docstring.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tokenlens.money import format_usd

MONEY_JS = Path(__file__).resolve().parents[2] / "web" / "static" / "js" / "money.js"

EXPECTED: list[tuple[float | None, str]] = [
    (None, "—"),
    (float("nan"), "—"),
    (float("inf"), "—"),
    (0.0, "$0.00"),
    (-0.0, "$0.00"),
    (0.0014, "$0.0014"),
    (0.000011, "$0.000011"),
    (0.00001149, "$0.000011"),
    (0.0000115, "$0.000012"),
    (1e-9, "$0.000000001"),
    (0.001, "$0.001"),
    (0.01, "$0.01"),
    (0.05, "$0.05"),
    (0.054, "$0.054"),
    (0.0999, "$0.10"),
    (0.1, "$0.10"),
    (0.125, "$0.13"),
    (0.5, "$0.50"),
    (0.994, "$0.99"),
    (0.996, "$1.00"),
    (1.0, "$1.00"),
    (1.005, "$1.01"),
    (2.675, "$2.68"),
    (3.14159, "$3.14"),
    (99.995, "$100.00"),
    (314.159, "$314.16"),
    (1234.56, "$1,234.56"),
    (1234567.891, "$1,234,567.89"),
    (-2.5, "-$2.50"),
    (-0.0014, "-$0.0014"),
    (-1234.5, "-$1,234.50"),
    (1e-21, "<$0.00000000000000000001"),
]


@pytest.mark.parametrize(("amount", "text"), EXPECTED)
def test_format_usd(amount: float | None, text: str) -> None:
    assert format_usd(amount) == text


def test_no_nonzero_amount_prints_as_zero() -> None:
    rng = random.Random(20)
    for _ in range(2000):
        amount = 10 ** rng.uniform(-12, 0)
        text = format_usd(amount)
        digits = text.replace("$", "").replace(".", "").replace(",", "")
        assert digits.strip("0"), (amount, text)
        # at least two significant digits below $1: the shown value is within 5% of the amount
        assert abs(float(text[1:].replace(",", "")) - amount) <= 0.05 * amount, (amount, text)


def table_of_amounts() -> list[float]:
    rng = random.Random(7)
    amounts = [a for a, _ in EXPECTED if a is not None and a == a and a not in (float("inf"),)]
    amounts += [round(rng.uniform(0, 10) ** rng.choice([1, 2, 3, 4]), rng.randint(0, 9)) for _ in range(300)]
    amounts += [10 ** rng.uniform(-9, 0) for _ in range(300)]
    amounts += [-(10 ** rng.uniform(-6, 7)) for _ in range(100)]
    amounts += [k / 1000 for k in range(0, 2000, 5)]  # half-way cases on the third decimal
    amounts += [k / 100000 for k in range(0, 200, 5)]
    amounts += [1e21, 123456789012.345]
    return amounts


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_python_and_javascript_agree(tmp_path: Path) -> None:
    amounts = table_of_amounts()
    module = tmp_path / "money.mjs"
    module.write_text(MONEY_JS.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "amounts.json").write_text(json.dumps(amounts + [None]), encoding="utf-8")
    script = (
        f"import {{ formatUsd }} from {json.dumps(module.as_uri())};"
        f"import {{ readFileSync }} from 'node:fs';"
        f"const amounts = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'amounts.json'))}, 'utf8'));"
        "console.log(JSON.stringify(amounts.map(formatUsd)));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True, timeout=60
    )
    js = json.loads(out.stdout)
    py = [format_usd(a) for a in amounts + [None]]
    mismatches = [(a, p, j) for a, p, j in zip(amounts + [None], py, js, strict=True) if p != j]
    assert not mismatches, mismatches[:10]


def test_javascript_module_is_browser_safe() -> None:
    """The file loads under the page CSP (scripts from 'self'): an ES module with no eval-style code."""
    text = MONEY_JS.read_text(encoding="utf-8")
    assert "export function formatUsd" in text
    for banned in ("eval(", "new Function", "require("):
        assert banned not in text
