"""Build tests/data/guardrails/injection_corpus.jsonl from the hand-written family files (issue 19).

`.venv/bin/python scripts/build_injection_corpus.py`

Each line of `tests/data/guardrails/injection_corpus/{attack,benign}/<family>.txt` is one example (escapes:
`\\n`, `\\t`, `\\u{XXXX}`, `\\\\`). The split into `train` and `test` is drawn once and recorded in the JSONL:
an example already there keeps its split, a new one is assigned by a hash of its text (30% of each family go
to `test`), and near-duplicates (character 4-gram Jaccard >= NEAR) are kept on one side, so that no text of
the test split has a twin in the training split. `--check` only verifies the recorded file.

The files hold the texts first written for the corpus and, appended to each family's file, those of the second
held-out set (`injection_holdout_v2`, 417 attacks and 414 hard negatives written by another author) and then of
the third (`injection_holdout_v3`, 620 attacks and 609 hard negatives by another author, appended on 2026-12-07
after the v2 texts and the texts written since): once a set's figures had been read (v3: once, precision 0.942,
recall 0.915) it no longer counted as held out, so it is training and development text like the rest.

`tests/data/guardrails/injection_holdout_v4/` (same layout: `attack/*.txt`, `benign/*.txt`, the same escapes) is
the held-out set: written by another author, never read while the detector was built, never trained on.
`read_holdout()` reads it for the figures only, and `check_holdout()` verifies that none of its texts is a
near-duplicate of a corpus text.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "guardrails" / "injection_corpus"
TARGET = ROOT / "tests" / "data" / "guardrails" / "injection_corpus.jsonl"
HOLDOUT = ROOT / "tests" / "data" / "guardrails" / "injection_holdout_v4"
TEST_SHARE = 0.3
NEAR = 0.5

_ESCAPE = re.compile(r"\\(n|t|\\|u\{([0-9a-fA-F]{1,6})\})")


def unescape(line: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(2):
            return chr(int(m.group(2), 16))
        return {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)]

    return _ESCAPE.sub(one, line)


def shingles(text: str) -> set[str]:
    flat = " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())
    return {flat[i : i + 4] for i in range(max(1, len(flat) - 3))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def read_sources(source: Path = SOURCE) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for label_dir, label in (("attack", True), ("benign", False)):
        for path in sorted((source / label_dir).glob("*.txt")):
            family = path.stem
            for raw in path.read_text(encoding="utf-8").splitlines():
                if not raw.strip():
                    continue
                text = unescape(raw)
                if text in seen:
                    continue
                seen.add(text)
                rows.append(
                    {
                        "text": text,
                        "injection": label,
                        "family": f"{label_dir}/{family}",
                        "origin": "tool" if family.startswith("tool_") else "user",
                    }
                )
    return rows


def read_holdout() -> list[dict[str, object]]:
    """The held-out set (injection_holdout_v4: never read in development, never trained on; figures only)."""
    return read_sources(HOLDOUT)


def check_holdout(corpus: list[dict[str, object]], holdout: list[dict[str, object]]) -> list[str]:
    """Texts of the held-out set that are a twin or a near-duplicate of a corpus text (reported without the
    held-out text itself, which is never shown)."""
    problems = []
    sh_corpus = [(str(r["text"]), shingles(str(r["text"]))) for r in corpus]
    for r in holdout:
        s = shingles(str(r["text"]))
        for text, st in sh_corpus:
            if jaccard(s, st) >= NEAR:
                problems.append(f"a held-out text is near the corpus text {text[:50]!r}")
    return problems


def near_pairs(rows: list[dict[str, object]]) -> list[tuple[int, int, float]]:
    sh = [shingles(str(r["text"])) for r in rows]
    out = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            sim = jaccard(sh[i], sh[j])
            if sim >= NEAR:
                out.append((i, j, sim))
    return out


def assign(rows: list[dict[str, object]], recorded: dict[str, str]) -> None:
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_pairs(rows):
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)
    by_family: dict[str, list[list[int]]] = {}
    for members in groups.values():
        known = [recorded[str(rows[i]["text"])] for i in members if str(rows[i]["text"]) in recorded]
        if known:
            for i in members:
                rows[i]["split"] = "test" if "test" in known and "train" not in known else "train"
            continue
        by_family.setdefault(str(rows[members[0]]["family"]), []).append(members)
    for family, fam_groups in by_family.items():
        fam_groups.sort(key=lambda g: hashlib.sha256(str(rows[g[0]]["text"]).encode()).hexdigest())
        size = sum(1 for r in rows if r["family"] == family)
        in_test = sum(1 for r in rows if r["family"] == family and r.get("split") == "test")
        for g in fam_groups:
            split = "test" if in_test + len(g) <= round(TEST_SHARE * size) else "train"
            in_test += len(g) if split == "test" else 0
            for i in g:
                rows[i]["split"] = split


def check(rows: list[dict[str, object]]) -> list[str]:
    problems = []
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    train_texts = {str(r["text"]) for r in train}
    for r in test:
        if r["text"] in train_texts:
            problems.append(f"in both splits: {str(r['text'])[:60]!r}")
    sh_train = [shingles(str(r["text"])) for r in train]
    for r in test:
        s = shingles(str(r["text"]))
        for t, st in zip(train, sh_train, strict=True):
            if jaccard(s, st) >= NEAR:
                problems.append(f"near-duplicate: {str(r['text'])[:50]!r} ~ {str(t['text'])[:50]!r}")
    return problems


def json_line(row: dict[str, object]) -> str:
    """One JSONL line, with the characters `str.splitlines` also breaks at (U+0085, U+2028, U+2029) escaped, so
    every reader of the file sees one example a line."""
    line = json.dumps(row, ensure_ascii=False)
    for ch in "\x85\u2028\u2029":
        line = line.replace(ch, f"\\u{ord(ch):04x}")
    return line + "\n"


def main() -> None:
    if "--check" in sys.argv:
        rows = [json.loads(line) for line in TARGET.read_text(encoding="utf-8").splitlines() if line]
    else:
        recorded: dict[str, str] = {}
        if TARGET.exists():
            for line in TARGET.read_text(encoding="utf-8").splitlines():
                if line:
                    row = json.loads(line)
                    recorded[row["text"]] = row["split"]
        rows = read_sources()
        assign(rows, recorded)
        TARGET.write_text("".join(json_line(r) for r in rows), encoding="utf-8")
    problems = check(rows)
    for label in (True, False):
        part = [r for r in rows if r["injection"] is label]
        print(
            f"{'attacks' if label else 'hard negatives'}: {len(part)} "
            f"(train {sum(r['split'] == 'train' for r in part)}, test {sum(r['split'] == 'test' for r in part)})"
        )
    print(*problems, sep="\n")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
