"""The injection corpus of issue 19 and the detector's figures on its held-out set, recomputed here.

The corpus (tests/data/guardrails/injection_corpus.jsonl, built by scripts/build_injection_corpus.py) carries
its train/test split; both are trained on now (the old test split was scored too often during development to
stay clean, and the texts of the second held-out set, v2, were merged into the corpus once their errors had been
read, and so were v3's once its figures had been read). The held-out figure comes from
tests/data/guardrails/injection_holdout_v4/, written by another author, never read while the detector was
built and never trained on. These tests check the sizes and balance, that no
old test text has a twin or a near-duplicate in the training split and no held-out text one in the corpus, that
the shipped model was trained on the corpus only (a model fitted here on the same rows gives the same weights),
and precision and recall on the held-out set, counted here from `score_injection` and the labels.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tokenlens.guardrails.injection import THRESHOLD, score_injection

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = ROOT / "tests" / "data" / "guardrails" / "injection_corpus.jsonl"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]


@functools.cache  # the held-out set is scored once for its figure and its xfail target
def figures(split: str) -> tuple[float, float]:
    """Precision and recall on a corpus split, or on the held-out set (`holdout`)."""
    if split == "holdout":
        data = script("build_injection_corpus").read_holdout()
    else:
        data = [r for r in rows() if r["split"] == split]
    tp = fp = fn = 0
    for row in data:
        flagged = score_injection(row["text"], indirect=row["origin"] == "tool").score >= THRESHOLD
        tp += flagged and row["injection"]
        fp += flagged and not row["injection"]
        fn += row["injection"] and not flagged
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def test_the_corpus_is_big_varied_and_split_by_family() -> None:
    data = rows()
    attacks = Counter(r["family"] for r in data if r["injection"])
    negatives = Counter(r["family"] for r in data if not r["injection"])
    assert sum(attacks.values()) >= 400 and sum(negatives.values()) >= 400
    assert len(attacks) >= 10 and min(attacks.values()) >= 30  # every attack family is represented
    assert len(negatives) >= 9 and min(negatives.values()) >= 30
    for family in attacks | negatives:
        in_test = sum(1 for r in data if r["family"] == family and r["split"] == "test")
        assert 0.2 <= in_test / (attacks | negatives)[family] <= 0.4, family
    assert len({r["text"] for r in data}) == len(data)


def test_train_and_test_share_no_text_and_no_near_duplicate() -> None:
    build = script("build_injection_corpus")
    assert build.check(rows()) == []


def test_the_corpus_file_is_what_the_sources_build() -> None:
    build = script("build_injection_corpus")
    rebuilt = build.read_sources()
    recorded = {r["text"]: r for r in rows()}
    assert [r["text"] for r in rebuilt] == list(recorded)
    assert all(recorded[r["text"]]["injection"] == r["injection"] for r in rebuilt)


@pytest.mark.timeout(300)
def test_the_shipped_model_is_trained_on_the_corpus_only() -> None:
    train = script("train_injection")
    from tokenlens.guardrails import injection_model as im

    shipped = im.load_model()
    assert shipped is not None
    fitted = train.fit(train.training_rows())  # the whole corpus, never the held-out set
    same = (abs(shipped.weights - fitted.weights) < 1e-2).mean()
    assert same > 0.999
    assert all(abs(shipped.rule_weights[k] - v) < 1e-3 for k, v in fitted.rule_weights.items())


def test_held_out_figures() -> None:
    """The held-out set (injection_holdout_v4, never read in development) is the held-out figure."""
    precision, recall = figures("holdout")
    print(f"held-out set: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.975 and recall >= 0.945  # read once on the final model: 0.977, 0.947 (figures doc)


def test_old_test_split_figures() -> None:
    """The corpus's old test split: no longer clean (scored often in development), trained on since."""
    precision, recall = figures("test")
    assert precision >= 0.99 and recall >= 0.99


def test_held_out_figures_reach_the_issue_target() -> None:
    precision, recall = figures("holdout")
    assert precision >= 0.95 and recall >= 0.92


def test_the_holdout_is_big_covers_every_family_and_is_new() -> None:
    """At least 400 attacks over every family and 400 hard negatives; no text of it is a twin or a
    near-duplicate (character 4-gram Jaccard >= 0.5) of any text the detector was trained on."""
    build = script("build_injection_corpus")
    holdout = build.read_holdout()
    corpus = rows()
    attacks = Counter(r["family"] for r in holdout if r["injection"])
    negatives = Counter(r["family"] for r in holdout if not r["injection"])
    assert sum(attacks.values()) >= 400 and sum(negatives.values()) >= 400
    assert set(attacks) == {r["family"] for r in corpus if r["injection"]} and min(attacks.values()) >= 30
    assert (
        set(negatives) == {r["family"] for r in corpus if not r["injection"]}
        and min(negatives.values()) >= 30
    )
    assert len({r["text"] for r in holdout}) == len(holdout)
    assert build.check_holdout(corpus, holdout) == []


def test_training_figures() -> None:
    precision, recall = figures("train")
    assert precision >= 0.99 and recall >= 0.99
