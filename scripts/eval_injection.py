"""Precision and recall of the injection detector on the held-out set and the corpus splits (issue 19).

`.venv/bin/python scripts/eval_injection.py [--errors] [--no-holdout]`

Scores every example with `score_injection` (the shipped model and rules, as the gateway runs them) at
THRESHOLD and prints the figures of the held-out set (tests/data/guardrails/injection_holdout_v4/, written by
another author and never read while the detector was built: the figure of issue 19), of the corpus's two splits
(both trained on: the old test split was scored too often to stay clean, and the corpus now holds the texts of
the earlier held-out sets, v2 and v3, too), and of the older hand-labelled set (tests/data/guardrails/injection.jsonl,
used by no training), with recall per attack family and false positives per hard-negative family.
`--errors` lists the misclassified texts of every set except the held-out one, whose texts are never printed.
`--no-holdout` leaves the held-out set out (for development: its figures are read once, on the final model).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_injection_corpus import HOLDOUT, read_holdout  # noqa: E402

from tokenlens.guardrails.injection import THRESHOLD, score_injection  # noqa: E402

DATA = ROOT / "tests" / "data" / "guardrails"


def rows_of(name: str) -> list[dict[str, object]]:
    return [
        json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def figures(rows: list[dict[str, object]]) -> dict[str, object]:
    """Counts and precision/recall at THRESHOLD, with the misclassified examples."""
    tp = fp = fn = 0
    errors = []
    by_family: Counter[str] = Counter()
    flagged_by_family: Counter[str] = Counter()
    for row in rows:
        result = score_injection(str(row["text"]), indirect=row["origin"] == "tool")
        flagged, label = result.score >= THRESHOLD, bool(row["injection"])
        tp += flagged and label
        fp += flagged and not label
        fn += label and not flagged
        family = str(row.get("family", "attack" if label else "benign"))
        by_family[family] += 1
        flagged_by_family[family] += flagged
        if flagged != label:
            errors.append((result.score, family, str(row["text"])))
    return {
        "n": len(rows),
        "attacks": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "families": {f: (flagged_by_family[f], by_family[f]) for f in sorted(by_family)},
        "errors": errors,
    }


def show(title: str, f: dict[str, object], errors: bool) -> None:
    """The figures of one set; with `errors`, its misclassified texts (never for the held-out set)."""
    print(
        f"{title}: precision {f['precision']:.3f} recall {f['recall']:.3f} "
        f"({f['n']} texts, {f['attacks']} attacks; tp {f['tp']}, fp {f['fp']}, fn {f['fn']})"
    )
    families = f["families"]
    assert isinstance(families, dict)
    for family, (flagged, n) in families.items():
        what = "found" if family.startswith("attack") else "flagged (false positives)"
        print(f"    {family:<30} {flagged:>3} of {n:>3} {what}")
    if errors:
        for score, family, text in f["errors"]:  # type: ignore[attr-defined]
            print(f"    {score:.2f} {family}: {text[:100]!r}")


def main() -> None:
    errors = "--errors" in sys.argv
    corpus = rows_of("injection_corpus.jsonl")
    if "--no-holdout" not in sys.argv:
        if (HOLDOUT / "README.md").exists():
            show("held-out set (injection_holdout_v4)", figures(read_holdout()), False)
        else:
            print("held-out set (injection_holdout_v4): not there yet (no README.md)")
    show("corpus, old test split (trained on)", figures([r for r in corpus if r["split"] == "test"]), errors)
    show("corpus, training split", figures([r for r in corpus if r["split"] == "train"]), errors)
    show("older hand-labelled set (injection.jsonl)", figures(rows_of("injection.jsonl")), errors)
    print("command: .venv/bin/python scripts/eval_injection.py")


if __name__ == "__main__":
    main()
