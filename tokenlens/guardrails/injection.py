"""Prompt-injection detection: scored heuristics over user-controlled and tool-returned text.

Each signal family has a weight; the score is 1 - prod(1 - w) over the families that fire (so two weak signals
add up, one strong one is enough), discounted when the text is plainly *about* injection (a question, quotes),
raised for text that arrived as a tool result or retrieved document (indirect injection). Keyword hints gate
every regex, so benign text costs one lower-casing and a few substring searches.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

THRESHOLD = 0.5

_W = r"(?:\s+\S+){0,3}?\s+"  # up to three filler words ("all of your", "the above")


@dataclass(frozen=True)
class _Signal:
    name: str
    weight: float
    hints: tuple[str, ...]
    regex: re.Pattern[str]


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL | re.MULTILINE)


_TARGETS = (
    r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guardrails|context|messages|constraints|"
    r"restrictions|policies|programming|commands|orders|system\s+prompt)"
)

SIGNALS: tuple[_Signal, ...] = (
    _Signal(
        "instruction_override",
        0.75,
        ("ignore", "disregard", "forget", "override", "bypass", "skip", "abandon", "discard", "drop"),
        _rx(
            r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|discard|drop)\b(?:\s+\S+){0,4}?\s+"
            r"(?:previous|prior|above|earlier|preceding|original|initial|old|existing|system|all|any|your|safety|"
            r"developer|those)\s+(?:\S+\s+){0,2}?" + _TARGETS + r"\b"
        ),
    ),
    _Signal(
        "new_instructions",
        0.45,
        (
            "new instructions",
            "from now on",
            "instead you",
            "instead, you",
            "your new task",
            "updated instructions",
            "real instructions",
            "actual instructions",
            "new rules",
            "new task",
        ),
        _rx(
            r"\b(?:(?:your\s+)?(?:new|updated|real|actual|true)\s+(?:instructions|task|rules|directive|orders)\s*(?:are|is|:)"
            r"|from\s+now\s+on,?\s+(?:you|always|never|only|respond|answer|reply|act)"
            r"|instead,?\s+you\s+(?:will|must|should|shall))"
        ),
    ),
    _Signal(
        "role_hijack",
        0.7,
        (
            "you are now",
            "act as",
            "pretend",
            "roleplay",
            "role-play",
            "developer mode",
            "dan",
            "jailbreak",
            "jailbroken",
            "do anything now",
            "unrestricted",
            "unfiltered",
            "uncensored",
            "no restrictions",
            "god mode",
        ),
        _rx(
            r"\b(?:you\s+are\s+now|act\s+as|pretend\s+(?:to\s+be|you\s+are)|role-?play\s+as|you\s+will\s+be|"
            r"switch\s+to|enter|enable|activate)\b(?:\s+\S+){0,6}?\s+(?:dan|jailbr\w*|unrestricted|unfiltered|"
            r"uncensored|evil|developer\s+mode|god\s+mode|without\s+(?:any\s+)?(?:restrictions|rules|limits|filters)|"
            r"no\s+(?:restrictions|rules|limits|filters|guidelines|ethics))\b"
            r"|\bdo\s+anything\s+now\b|\bdeveloper\s+mode\s+(?:enabled|on|activated)\b|\bjailbreak(?:ed)?\s+mode\b"
            r"|\b(?:free|freed)\s+from\s+(?:all\s+|your\s+|the\s+)*(?:restrictions|rules|guidelines|constraints)\b"
        ),
    ),
    _Signal(
        "system_prompt_extraction",
        0.7,
        ("prompt", "instructions", "above", "before", "preceding", "you are", "rules", "configuration"),
        _rx(
            r"\b(?:reveal|show|print|repeat|output|display|dump|leak|recite|expose|share|give|tell|spell\s+out|"
            r"write\s+out|copy|paste|translate)\b(?:\s+\S+){0,3}?\s+(?:your|the|its|my|all)\s+(?:\S+\s+){0,2}?"
            r"(?:system|initial|hidden|original|secret|internal|developer|confidential|full|exact)\s+"
            r"(?:prompt|instructions|message|rules|configuration|guidelines)"
            r"|\b(?:repeat|print|output|copy)\b(?:\s+\S+){0,3}?\s+(?:everything|all|the\s+(?:text|words))\s+"
            r"(?:above|before|preceding)"
            r"|\bwhat\s+(?:is|are|was|were)\s+your\s+(?:system|initial|original|hidden)\s+(?:prompt|instructions)"
            r"|\b(?:starting|beginning)\s+with\s+['\"]?you\s+are\b"
        ),
    ),
    _Signal(
        "delimiter_injection",
        0.6,
        (
            "<|",
            "[inst]",
            "<<sys>>",
            "### system",
            "system:",
            "</system>",
            "<system>",
            "human:",
            "assistant:",
            "end of user input",
            "end of prompt",
            "[system]",
            "###instruction",
        ),
        _rx(
            r"<\|(?:im_start|im_end|system|endoftext|start_header_id|eot_id)\|>|\[/?INST\]|<<SYS>>|</?system>"
            r"|^\s*#{2,}\s*(?:system|instruction)s?\s*:?\s*$|^\s*\[system\]|^\s*system\s*:\s*(?:you|ignore|new)"
            r"|\n\s*(?:human|assistant)\s*:\s*\S"
            r"|-{3,}\s*end\s+of\s+(?:user\s+input|prompt|instructions|document|context)\s*-{3,}"
        ),
    ),
    _Signal(
        "encoding_trick",
        0.45,
        ("base64", "rot13", "rot-13", "hex-encoded", "decode", "\u200b", "\u202e", "\U000e0001"),
        _rx(
            r"\b(?:decode|decipher|unscramble)\b(?:\s+\S+){0,6}?\s+(?:and|then)\s+(?:follow|execute|obey|run|do|"
            r"carry\s+out|apply)\b"
            r"|\b(?:base64|rot-?13|hex)[- ]?(?:encoded)?\s+(?:instructions?|commands?|payload)\b"
            r"|[\u200b\u200c\u200d\u2060]{3,}|[\u202a-\u202e\u2066-\u2069]|[\U000e0000-\U000e007f]{2,}"
        ),
    ),
    _Signal(
        "indirect_injection",
        0.6,
        (
            " ai ",
            " ai:",
            " ai,",
            "assistant",
            "llm",
            "language model",
            "chatbot",
            "the user",
            "exfiltrate",
            "exfiltration",
            "agent",
            "](",
        ),
        _rx(
            r"\b(?:note|message|instructions?|attention|important)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
            r"(?:ai|assistants?|ai\s+assistants?|llms?|language\s+models?|chatbots?|agents?|models?)\b"
            r"|\bif\s+you\s+are\s+an?\s+(?:ai|llm|language\s+model|assistant|chatbot)\b"
            r"|\b(?:ai|llm|assistant|agent)s?\s+(?:reading|processing|summari[sz]ing|parsing)\s+this\b"
            r"|\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|alert)"
            r"\s+the\s+user\b|\bwithout\s+(?:telling|informing|alerting|notifying)\s+the\s+user\b"
            r"|\b(?:send|forward|post|upload|exfiltrate|transmit|email)\b(?:\s+\S+){0,6}?\s+to\s+(?:https?://|"
            r"\S+@\S+\.\w+|the\s+following\s+(?:url|address|endpoint))"
            r"|!\[[^\]\n]{0,100}\]\(https?://[^)\s]{1,200}\?[^)\s]{0,200}=[^)\s]{0,200}\)"
        ),
    ),
)

_DISCUSSION = re.compile(
    r"\b(?:prompt\s+injection|jailbreak(?:s|ing)?\s+(?:attempts?|attacks?|prompts?)|injection\s+attacks?|"
    r"red[- ]team\w*|(?:detect|prevent|defend|mitigate|protect|classify|filter|block|sanitize|handle)\w*"
    r"(?:\s+\S+){0,4}?\s+(?:against\s+)?(?:attacks?|injections?|prompts?\s+like|phrases?|attempts?|inputs?)|"
    r"what\s+(?:is|are|does)\b[^?]{0,80}\?|how\s+(?:do|can|should|would)\s+(?:i|we|you)\b[^?]{0,120}\?|"
    r"for\s+example|e\.g\.|such\s+as)",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"[\"“'‘`]")
_BASE64_BLOB = re.compile(r"[A-Za-z0-9+/]{24,4000}={0,2}")


@dataclass(frozen=True)
class InjectionResult:
    score: float
    signals: tuple[str, ...]
    offset: int  # where the first signal matched, -1 when none


MAX_HINTS = 64  # occurrences of one hint looked at per text part
BEFORE, AFTER = 160, 320  # characters around a hint the signal's regex is run on


_PUNCT = str.maketrans({ch: " " for ch in "\"'`.,;:!?()[]{}<>|/\\*#=+-_~\n\t\r"})


def _words(lowered: str) -> set[str]:
    """The words of a text, once: a hint whose first word is absent costs a set lookup, not a scan."""
    return set(lowered.translate(_PUNCT).split())


def _key_word(hint: str) -> str | None:
    """The first word of a hint as `_words` splits text (`"system:"` -> `system`, `"[inst]"` -> `inst`): a text
    holding the hint holds that word, wherever the signal's regex needs a word boundary before it. None for a
    hint of punctuation or other characters only (`"<|"`, a zero-width space), which is searched for as it is."""
    parts = hint.translate(_PUNCT).split()
    return parts[0] if parts and parts[0].isascii() and parts[0].isalnum() else None


_KEYS = {hint: _key_word(hint) for signal in SIGNALS for hint in signal.hints}


def _present(hint: str, words: set[str], ascii_text: bool) -> bool:
    key = _KEYS.get(hint) or _key_word(hint)
    if key is not None:
        return key in words
    return not (ascii_text and not hint.isascii())  # a non-ASCII hint cannot be in ASCII text


def _windows(
    lowered: str, hints: tuple[str, ...], words: set[str], ascii_text: bool = False
) -> list[tuple[int, int]]:
    """Merged windows around the hint occurrences: the regexes never scan the whole of a long text."""
    spans = []
    for hint in hints:
        if not _present(hint, words, ascii_text):
            continue
        at, seen = lowered.find(hint), 0
        while at >= 0 and seen < MAX_HINTS:
            spans.append((max(0, at - BEFORE), at + len(hint) + AFTER))
            at, seen = lowered.find(hint, at + 1), seen + 1
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _fired(text: str, lowered: str) -> dict[str, int]:
    found: dict[str, int] = {}
    words = _words(lowered)
    ascii_text = lowered.isascii()
    for signal in SIGNALS:
        for start, end in _windows(lowered, signal.hints, words, ascii_text):
            m = signal.regex.search(text, start, min(len(text), end))
            if m is not None:
                found[signal.name] = m.start()
                break
    return found


_BASE64_TABLE = bytes(
    0x61 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "+/") else 0x20 for i in range(256)
)
_BASE64_RUN = b"a" * 24


def _has_base64_run(text: str) -> bool:
    """Whether `_BASE64_BLOB` can match at all: one pass at C speed instead of the regex over the text."""
    return _BASE64_RUN in text.encode("utf-8", "surrogatepass").translate(_BASE64_TABLE)


def _decoded_blobs(text: str) -> list[str]:
    """Printable text hidden in base64 blobs (bounded: the first five long enough to matter)."""
    out = []
    for m in _BASE64_BLOB.finditer(text):
        blob = m.group(0)
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded.isprintable() or all(c.isprintable() or c.isspace() for c in decoded):
            out.append(decoded)
        if len(out) >= 5:
            break
    return out


def score_injection(text: str, *, indirect: bool = False) -> InjectionResult:
    """The injection score of one text part (0..1); `indirect` for tool results and retrieved documents."""
    if len(text) < 8:
        return InjectionResult(0.0, (), -1)
    lowered = text.lower()
    found = _fired(text, lowered)
    if _has_base64_run(text) and any(h in lowered for h in ("base64", "b64", "decode", "encoded", "==")):
        for hidden in _decoded_blobs(text):
            for name in _fired(hidden, hidden.lower()):
                found.setdefault(name, 0)
                found.setdefault("encoding_trick", 0)
    if not found:
        return InjectionResult(0.0, (), -1)
    remaining = 1.0
    weights = {s.name: s.weight for s in SIGNALS}
    for name in found:
        remaining *= 1.0 - weights[name]
    score = 1.0 - remaining
    first = min(found.values())
    near = text[max(0, first - 400) : first + 400]
    if not indirect and _DISCUSSION.search(near) and _QUOTED.search(near):
        score *= (
            0.5  # talking about an attack ("how do I stop 'ignore previous instructions'?"), not making one
        )
    elif indirect:
        score = min(1.0, score * 1.25)
    names = tuple(sorted(found, key=found.__getitem__))
    return InjectionResult(round(score, 3), names, first)
