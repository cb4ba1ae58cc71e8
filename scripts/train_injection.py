"""Train the injection model (tokenlens/guardrails/injection_model.npz) on the whole corpus.

`.venv/bin/python scripts/train_injection.py [--cv]`

One logistic regression over two kinds of features: the hashed token, stem, concept and character n-grams of
`tokenlens.guardrails.injection_model` (each text's row scaled by 1/sqrt of its feature count) and one 0/1
column per rule of `tokenlens.guardrails.injection.RULE_NAMES`. Balanced classes, L2, full-batch Adam in numpy.
It first scores the corpus by 5-fold cross-validation (`--cv` stops there and lists the errors), picks the
operating point where the cross-validated precision is still TARGET_PRECISION, trains on the whole corpus and
moves the bias so that this point is the detector's THRESHOLD.

It trains on the whole corpus, its old test split included (scored about 8 times during development and its
errors read, so no longer held out), and so the texts of the earlier held-out sets (injection_holdout_v2 and
injection_holdout_v3), merged into the corpus's family files once their figures had been read. The held-out set
is tests/data/guardrails/injection_holdout_v4/, which is never read here. The settings (L2, the character n-gram
lengths) were chosen by this cross-validation and, before v2 was merged, by training on the rest of the corpus
and scoring v2.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokenlens.guardrails.injection import RULE_NAMES, THRESHOLD, rule_hits, score_with  # noqa: E402
from tokenlens.guardrails.injection_model import (  # noqa: E402
    MODEL_PATH,
    Model,
    feature_indices,
    prepare,
)

CORPUS = ROOT / "tests" / "data" / "guardrails" / "injection_corpus.jsonl"
BITS = 18
L2 = 3e-5  # on the hashed weights
RULE_L2 = 1e-3  # on the rule weights
STEPS = 600
TARGET_PRECISION = 0.96  # the operating point is chosen on cross-validated training scores
RATE = 0.05
FOLDS = 5

Row = dict[str, object]


def load(split: str) -> list[Row]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r["split"] == split]


def training_rows() -> list[Row]:
    """What the model is trained on: the whole corpus (both splits; neither is held out any more)."""
    return load("train") + load("test")


def design(rows: list[Row]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The training matrix in COO form (row, column, value): hashed columns first, then one per rule."""
    dim = 1 << BITS
    rule_col = {name: dim + i for i, name in enumerate(RULE_NAMES)}
    rr, cc, vv = [], [], []
    for i, row in enumerate(rows):
        flags: set[str] = set()
        data = prepare(str(row["text"]), flags)
        idx = feature_indices(data, BITS, row["origin"] == "tool")
        hits = rule_hits(data, flags, row["origin"] == "tool")
        cols = np.concatenate([idx, [rule_col[n] for n in hits]]).astype(np.int64)
        vals = np.concatenate([np.full(len(idx), 1.0 / np.sqrt(max(1, len(idx)))), np.ones(len(hits))])
        rr.append(np.full(len(cols), i))
        cc.append(cols)
        vv.append(vals)
    return np.concatenate(rr), np.concatenate(cc), np.concatenate(vv)


def fit(rows: list[Row]) -> Model:
    r, c, v = design(rows)
    labels = np.array([float(bool(row["injection"])) for row in rows])
    n, dim = len(rows), (1 << BITS) + len(RULE_NAMES)
    pos = labels.sum()
    sample_w = np.where(labels > 0, n / (2 * pos), n / (2 * (n - pos)))
    l2 = np.full(dim, L2)
    l2[1 << BITS :] = RULE_L2
    w = np.zeros(dim)
    b = 0.0
    m_w, v_w = np.zeros(dim), np.zeros(dim)
    m_b = v_b = 0.0
    for step in range(1, STEPS + 1):
        z = np.bincount(r, weights=v * w[c], minlength=n) + b
        p = 1.0 / (1.0 + np.exp(-z))
        err = (p - labels) * sample_w / n
        g_w = np.bincount(c, weights=v * err[r], minlength=dim) + l2 * w
        g_b = float(err.sum())
        m_w = 0.9 * m_w + 0.1 * g_w
        v_w = 0.999 * v_w + 0.001 * g_w * g_w
        m_b = 0.9 * m_b + 0.1 * g_b
        v_b = 0.999 * v_b + 0.001 * g_b * g_b
        corr1, corr2 = 1 - 0.9**step, 1 - 0.999**step
        w -= RATE * (m_w / corr1) / (np.sqrt(v_w / corr2) + 1e-8)
        b -= RATE * (m_b / corr1) / (np.sqrt(v_b / corr2) + 1e-8)
    hashed = w[: 1 << BITS].astype(np.float16).astype(np.float32)
    rules = {name: float(w[(1 << BITS) + i]) for i, name in enumerate(RULE_NAMES)}
    return Model(hashed, b, BITS, rules)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cross_validate(rows: list[Row]) -> npt.NDArray[np.float64]:
    """Out-of-fold scores of the whole detector for the training rows."""
    order = np.argsort([_hash(str(r["text"])) for r in rows])
    fold = np.empty(len(rows), dtype=int)
    fold[order] = np.arange(len(rows)) % FOLDS
    out = np.zeros(len(rows))
    for k in range(FOLDS):
        model = fit([r for r, f in zip(rows, fold, strict=True) if f != k])
        for i in np.flatnonzero(fold == k):
            out[i] = score_with(model, str(rows[i]["text"]), indirect=rows[i]["origin"] == "tool").score
    return out


def operating_point(rows: list[Row], scores: npt.NDArray[np.float64]) -> float:
    """The lowest score whose cross-validated precision is still TARGET_PRECISION (the highest recall there)."""
    labels = np.array([bool(r["injection"]) for r in rows])
    order = np.argsort(-scores)
    precision = np.cumsum(labels[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= TARGET_PRECISION)
    return float(np.clip(scores[order][ok[-1]], 0.05, 0.95))


def report(rows: list[Row], scores: npt.NDArray[np.float64], verbose: bool = True) -> None:
    labels = np.array([bool(r["injection"]) for r in rows])
    order = np.argsort(-scores)
    hits = np.cumsum(labels[order])
    precision = hits / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= 0.95)
    print(
        f"best recall at precision >= 0.95: {hits[ok[-1]] / labels.sum():.3f} (score {scores[order][ok[-1]]:.3f})"
    )
    flagged = scores >= THRESHOLD
    tp, fp = int((flagged & labels).sum()), int((flagged & ~labels).sum())
    print(
        f"at the threshold {THRESHOLD}: precision {tp / max(1, tp + fp):.3f} recall {tp / labels.sum():.3f}"
    )
    for i in np.flatnonzero(flagged != labels) if verbose else ():
        kind = "missed" if labels[i] else "false positive"
        print(f"  {kind} {scores[i]:.2f} {rows[i]['family']}: {str(rows[i]['text'])[:90]!r}")


def by_family(rows: list[Row], scores: npt.NDArray[np.float64], cut: float) -> None:
    """Cross-validated figures at the operating point (what THRESHOLD becomes), per family."""
    labels = np.array([bool(r["injection"]) for r in rows])
    flagged = scores >= cut
    tp, fp = int((flagged & labels).sum()), int((flagged & ~labels).sum())
    print(
        f"at the operating point {cut:.3f}: precision {tp / max(1, tp + fp):.3f} recall {tp / labels.sum():.3f} "
        f"(tp {tp}, fp {fp}, fn {int(labels.sum()) - tp})"
    )
    for family in sorted({str(r["family"]) for r in rows}):
        member = np.array([r["family"] == family for r in rows])
        what = "found" if family.startswith("attack") else "flagged (false positives)"
        print(f"    {family:<30} {int((flagged & member).sum()):>3} of {int(member.sum()):>3} {what}")


def main() -> None:
    rows = training_rows()
    scores = cross_validate(rows)
    print("5-fold cross-validation on the whole corpus, before calibration:")
    report(rows, scores, verbose="--cv" in sys.argv)
    cut = operating_point(rows, scores)
    by_family(rows, scores, cut)
    if "--cv" in sys.argv:
        return
    model = fit(rows)
    # move the bias so that the operating point chosen on cross-validated scores lands on THRESHOLD
    model = Model(model.weights, model.bias - float(np.log(cut / (1 - cut))), model.bits, model.rule_weights)
    np.savez_compressed(
        MODEL_PATH,
        weights=model.weights.astype(np.float16),
        bias=np.float64(model.bias),
        bits=np.int64(BITS),
        rule_names=np.array(list(model.rule_weights)),
        rule_weights=np.array(list(model.rule_weights.values())),
    )
    print(f"operating point {cut:.3f} moved to {THRESHOLD}")
    print(
        f"wrote {MODEL_PATH.relative_to(ROOT)} ({MODEL_PATH.stat().st_size} bytes) from {len(rows)} examples"
    )
    print("rule weights:", {k: round(v, 2) for k, v in model.rule_weights.items()})


if __name__ == "__main__":
    main()
