"""Precision and recall of the detectors on a hand-labelled set (tests/data/guardrails/*.jsonl).

PII: each (example, rule) pair is a decision; a rule found but not labelled is a false positive, a labelled
rule not found is a false negative. Injection: one decision per example at the detector's threshold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenlens.guardrails.injection import THRESHOLD, score_injection
from tokenlens.guardrails.pii import find_pii

DATA = Path(__file__).parent.parent / "data" / "guardrails"


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def precision_recall(tp: int, fp: int, fn: int) -> tuple[float, float]:
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def test_the_set_is_big_enough_and_balanced() -> None:
    pii, injection = load("pii.jsonl"), load("injection.jsonl")
    assert len(pii) + len(injection) >= 150
    assert sum(1 for e in pii if not e["rules"]) >= 25  # near misses
    assert sum(1 for e in injection if not e["injection"]) >= 30  # benign prompts about instructions/security


def test_pii_precision_and_recall() -> None:
    tp = fp = fn = 0
    misses = []
    for example in load("pii.jsonl"):
        found = {m.rule for m in find_pii(example["text"])}
        expected = set(example["rules"])
        tp += len(found & expected)
        fp += len(found - expected)
        fn += len(expected - found)
        if found != expected:
            misses.append((example["text"][:60], sorted(expected), sorted(found)))
    precision, recall = precision_recall(tp, fp, fn)
    print(f"PII precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})", *misses, sep="\n")
    assert precision >= 0.9 and recall >= 0.85, misses


def test_injection_precision_and_recall() -> None:
    tp = fp = fn = 0
    misses = []
    for example in load("injection.jsonl"):
        result = score_injection(example["text"], indirect=example["origin"] == "tool")
        flagged = result.score >= THRESHOLD
        tp += flagged and example["injection"]
        fp += flagged and not example["injection"]
        fn += not flagged and example["injection"]
        if flagged != example["injection"]:
            misses.append((example["text"][:60], example["injection"], result.score, result.signals))
    precision, recall = precision_recall(tp, fp, fn)
    print(
        f"injection precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})",
        *misses,
        sep="\n",
    )
    assert precision >= 0.9 and recall >= 0.8, misses
