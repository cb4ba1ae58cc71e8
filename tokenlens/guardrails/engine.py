"""Guardrail verdicts: which rules match a request or an answer, what to do about it, and the rewritten body.

Pure functions over the configuration (`tokenlens.config.Guardrails`) and parsed JSON. Matched text never
leaves this module: findings carry the rule, the field path and the offset, and redaction swaps each match
for a typed numbered placeholder (`[EMAIL_1]`; the same value gets the same number within one body).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import regex as timed_re

from tokenlens.config import CustomRule, Guardrails
from tokenlens.guardrails.extract import TextSlot, request_slots, response_slots
from tokenlens.guardrails.patterns import check_pattern
from tokenlens.guardrails.pii import Match, find_pii, resolve_overlaps

MAX_FINDINGS = 50
# Custom rules run on the `regex` engine with this time bound per search: a pattern that backtracks
# catastrophically (one written into the file by hand, past the PUT-time check) cannot stall the gateway.
RULE_TIMEOUT_S = 0.25

log = logging.getLogger(__name__)


class RuleTimeout(TimeoutError):
    """A custom rule's pattern ran past RULE_TIMEOUT_S; the guardrail failure policy (fail_open) applies."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"{rule} timed out after {RULE_TIMEOUT_S}s")
        self.rule = rule


Where = str  # "request" | "response"


@dataclass(frozen=True)
class Finding:
    rule: str
    action: str
    path: str
    offset: int
    length: int
    score: float | None = None
    signals: tuple[str, ...] = ()


@dataclass
class Verdict:
    where: Where
    findings: list[Finding] = field(default_factory=list)
    redacted: dict[str, Any] | None = None  # the body with redact-rule matches replaced, when any
    scan_ms: float = 0.0

    @property
    def blocking(self) -> list[str]:
        return list(dict.fromkeys(f.rule for f in self.findings if f.action == "block"))

    def flags(self) -> list[dict[str, str]]:
        """One flag per rule: `{"rule", "action", "where", "position"}` (+ `score`, `signals` for injection)."""
        out: dict[str, dict[str, str]] = {}
        for f in self.findings:
            if f.rule in out:
                continue
            flag = {
                "rule": f.rule,
                "action": f.action,
                "where": self.where,
                "position": f"{f.path}:{f.offset}",
            }
            if f.score is not None:
                flag["score"] = f"{f.score:.2f}"
                flag["signals"] = ",".join(f.signals)
            out[f.rule] = flag
        return list(out.values())

    def details(self) -> dict[str, Any]:
        return {
            "scan_ms": round(self.scan_ms, 3),
            "findings": [
                {
                    "rule": f.rule,
                    "action": f.action,
                    "path": f.path,
                    "offset": f.offset,
                    "length": f.length,
                    **({"score": f.score, "signals": list(f.signals)} if f.score is not None else {}),
                }
                for f in self.findings[:MAX_FINDINGS]
            ],
            "redacted": self.redacted is not None,
        }


@dataclass(frozen=True)
class CompiledRule:
    name: str
    rule: str  # custom.<name>
    kind: str  # placeholder type
    action: str
    regex: Any


def _compile_timed(pattern: str) -> Any:
    """The pattern on the `regex` engine (which takes a timeout); None when it only compiles with `re`."""
    try:
        return timed_re.compile(pattern, flags=timed_re.VERSION0)
    except Exception:
        return None


@lru_cache(maxsize=32)
def compile_rules(rules: tuple[CustomRule, ...]) -> tuple[CompiledRule, ...]:
    """Custom rules compiled once per configuration, to run under a time bound.

    A pattern the PUT-time check refuses as prone to backtracking but that reached the file anyway still runs
    (bounded by RULE_TIMEOUT_S); one that does not compile is skipped.
    """
    out = []
    for r in rules:
        try:
            check_pattern(r.pattern)
        except re.error:
            continue
        except ValueError:
            log.warning("custom rule %s has a pattern prone to backtracking; it runs time-bounded", r.name)
        compiled = _compile_timed(r.pattern)
        if compiled is None:
            continue
        kind = "".join(ch if ch.isalnum() else "_" for ch in r.name).upper()
        out.append(CompiledRule(r.name, f"custom.{r.name}", kind, r.action, compiled))
    return tuple(out)


def custom_matches(rules: Iterable[CompiledRule], text: str) -> list[Match]:
    """Every match of every rule; RuleTimeout when one rule's search runs past RULE_TIMEOUT_S."""
    found = []
    for rule in rules:
        try:
            for m in rule.regex.finditer(text, timeout=RULE_TIMEOUT_S):
                if m.end() > m.start():
                    found.append(Match(rule.rule, rule.kind, m.start(), m.end()))
        except TimeoutError:
            log.warning("custom rule %s timed out after %.2fs", rule.rule, RULE_TIMEOUT_S)
            raise RuleTimeout(rule.rule) from None
    return found


class Placeholders:
    """Typed numbered placeholders, one per distinct value and type, within one body."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.seen: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self.seen:
            self.numbers[kind] = self.numbers.get(kind, 0) + 1
            self.seen[key] = f"[{kind}_{self.numbers[kind]}]"
        return self.seen[key]


def apply_redaction(text: str, matches: list[Match], placeholders: Placeholders) -> str:
    pieces, last = [], 0
    for m in sorted(matches, key=lambda m: m.start):
        if m.start < last:
            continue
        pieces.append(text[last : m.start])
        pieces.append(placeholders(m.kind, text[m.start : m.end]))
        last = m.end
    pieces.append(text[last:])
    return "".join(pieces)


ActionOf = Callable[[str], str | None]  # rule name -> action, None when the rule is off


def _action_of(g: Guardrails, where: Where, rules: tuple[CompiledRule, ...]) -> ActionOf:
    pii = g.response_pii_detection if where == "response" else g.pii_detection
    custom = {r.rule: r.action for r in rules}

    def action(rule: str) -> str | None:
        if rule.startswith("custom."):
            return custom.get(rule)
        if rule == "injection":
            return g.injection_detection.action if g.injection_detection.enabled else None
        return pii.action if pii.enabled else None

    return action


def text_matches(g: Guardrails, where: Where, text: str) -> list[Match]:
    """PII (when enabled for this side) and custom-rule matches in one text."""
    pii_on = (g.response_pii_detection if where == "response" else g.pii_detection).enabled
    matches = find_pii(text) if pii_on else []
    rules = compile_rules(g.custom_rules)
    if rules:
        matches = resolve_overlaps(matches + custom_matches(rules, text))
    return matches


def is_active(g: Guardrails, where: Where) -> bool:
    if where == "response":
        return g.response_pii_detection.enabled
    return g.pii_detection.enabled or g.injection_detection.enabled or bool(g.custom_rules)


def scan_body(g: Guardrails, api: str, body: dict[str, Any], where: Where) -> Verdict:
    """Scan every text part of a request (or a non-streamed answer) and rewrite what a redact rule matched."""
    started = time.perf_counter()
    verdict = Verdict(where)
    rules = compile_rules(g.custom_rules)
    action_of = _action_of(g, where, rules)
    slots = request_slots(api, body) if where == "request" else response_slots(api, body)
    to_redact: list[tuple[TextSlot, list[Match]]] = []
    injection_on = where == "request" and g.injection_detection.enabled
    if injection_on:
        # the detector (numpy, its model: ~17 MiB), loaded when on (runtime.preload_injection_detector)
        from tokenlens.guardrails.injection import THRESHOLD, score_injection
    for slot in slots:
        text = slot.text
        if not text:
            continue
        matches = text_matches(g, where, text)
        redact_here = []
        for m in matches:
            action = action_of(m.rule)
            if action is None:
                continue
            verdict.findings.append(Finding(m.rule, action, slot.path, m.start, m.end - m.start))
            if action == "redact":
                redact_here.append(m)
        if redact_here:
            to_redact.append((slot, redact_here))
        if injection_on and slot.origin in ("user", "tool"):
            result = score_injection(text, indirect=slot.origin == "tool")
            if result.score >= THRESHOLD:
                verdict.findings.append(
                    Finding(
                        "injection",
                        g.injection_detection.action,
                        slot.path,
                        result.offset,
                        0,
                        result.score,
                        result.signals,
                    )
                )
    if to_redact and not verdict.blocking:
        verdict.redacted = _redacted_copy(
            api, body, where, {id(s.container): s for s, _ in to_redact}, to_redact
        )
    verdict.scan_ms = (time.perf_counter() - started) * 1000
    return verdict


def _redacted_copy(
    api: str,
    body: dict[str, Any],
    where: Where,
    _index: dict[int, TextSlot],
    to_redact: list[tuple[TextSlot, list[Match]]],
) -> dict[str, Any]:
    """A deep copy of the body with the matches replaced, the same slots found again by path."""
    copied = copy.deepcopy(body)
    slots = {
        s.path: s for s in (request_slots(api, copied) if where == "request" else response_slots(api, copied))
    }
    placeholders = Placeholders()
    for slot, matches in to_redact:
        target = slots.get(slot.path)
        if target is not None:
            target.replace(apply_redaction(target.text, matches, placeholders))
    return copied


def mask_body(g: Guardrails, api: str, raw: bytes | None, where: Where) -> bytes | None:
    """The body to store: every PII and custom-rule match replaced by its placeholder, whatever the action.

    None when the body is not a JSON object (it cannot be masked field by field, so it is not stored).
    """
    if not raw:
        return raw
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    placeholders = Placeholders()
    for slot in request_slots(api, body) if where == "request" else response_slots(api, body):
        text = slot.text
        matches = text_matches(g, where, text) if text else []
        if matches:
            slot.replace(apply_redaction(text, matches, placeholders))
    return json.dumps(body, ensure_ascii=False).encode()


def mask_text(g: Guardrails, where: Where, text: str) -> tuple[str, int]:
    """A text with every PII and custom-rule match replaced; and how many were replaced."""
    matches = text_matches(g, where, text)
    return (apply_redaction(text, matches, Placeholders()), len(matches)) if matches else (text, 0)


def block_message(rules: list[str], where: Where) -> str:
    side = "request" if where == "request" else "response"
    return f"TokenLens guardrail blocked this {side}: rule {', '.join(rules)} matched."
