"""A request body as a flat list of parts, each in one heatmap section (docs/analytics-api.md#how-the-figures-are-computed).

Shared by waste detection and the token heatmap. Sections: ``system`` (OpenAI system/developer messages and
`instructions`, Anthropic top-level `system`, Gemini `systemInstruction`), ``tools`` (tool and schema
definitions), ``context`` (tool results, documents, retrieved text), ``history`` (earlier turns) and
``query`` (the last user turn). Pure and tolerant: a shape it does not know is skipped, never raised on.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

SECTIONS = ("system", "tools", "context", "history", "query")

_MEDIA_TYPES = frozenset({"image", "image_url", "input_image", "input_audio", "audio"})
_DOCUMENT_TYPES = frozenset({"document", "file", "input_file", "search_result"})
_TOOL_RESULT_TYPES = frozenset({"tool_result", "function_call_output", "web_search_tool_result"})


class Part(NamedTuple):
    """One piece of model-visible input (a named tuple: requests have many parts, built on every call).

    `message` is the position of its message (None for system/tools outside the message list); `role` the
    author (system, user, assistant, tool); `kind` is ``text``, ``call`` (tool-call arguments), ``result``
    (tool output), ``document``, ``media`` or ``definition``.
    """

    section: str
    role: str
    message: int | None
    kind: str
    text: str = ""
    media: int = 0


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _text_of(value: Any) -> str:
    """Plain text of a tool result / document payload (string, blocks, or JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [_text_of(v) for v in value]
        return "\n".join(t for t in texts if t)
    if isinstance(value, Mapping):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        if "content" in value and not isinstance(value.get("content"), Mapping | type(None)):
            return _text_of(value["content"])
        if isinstance(value.get("data"), str) and value.get("type") == "text":
            return str(value["data"])
        return dumps(value)
    return str(value)


def _is_media(block: Mapping[str, Any]) -> bool:
    t = block.get("type")
    if isinstance(t, str) and t in _MEDIA_TYPES:
        return True
    return "inlineData" in block or "inline_data" in block


def _blocks(content: Any, section: str, role: str, index: int | None, *, api: str) -> Iterator[Part]:
    """Parts of one message's content (string, OpenAI/Anthropic blocks, Gemini parts)."""
    if content is None:
        return
    if isinstance(content, str):
        yield Part(section, role, index, "text", content)
        return
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        return
    for block in content:
        if isinstance(block, str):
            yield Part(section, role, index, "text", block)
            continue
        if not isinstance(block, Mapping):
            continue
        btype = block.get("type")
        if btype in _TOOL_RESULT_TYPES or "functionResponse" in block or "function_response" in block:
            payload = block.get("content", block.get("output"))
            if payload is None:
                payload = block.get("functionResponse", block.get("function_response"))
            yield Part("context", role, index, "result", _text_of(payload))
        elif btype in _DOCUMENT_TYPES or "fileData" in block or "file_data" in block:
            source = block.get("source")
            text = (
                _text_of(source.get("data"))
                if isinstance(source, Mapping) and source.get("type") == "text"
                else ""
            )
            if not text and isinstance(block.get("content"), str | list):
                text = _text_of(block.get("content"))
            yield Part("context", role, index, "document", text, 0 if text else 1)
        elif _is_media(block):
            yield Part(section, role, index, "media", "", 1)
        elif btype in ("tool_use", "server_tool_use", "function_call") or "functionCall" in block:
            call = block.get("functionCall", block.get("function_call"))
            args = block.get("input", block.get("arguments"))
            if call is not None:
                args = call
            yield Part(section, role, index, "call", args if isinstance(args, str) else dumps(args))
        elif btype in ("thinking", "redacted_thinking"):
            yield Part(section, role, index, "text", str(block.get("thinking") or ""))
        elif isinstance(block.get("text"), str):
            yield Part(section, role, index, "text", str(block["text"]))
        elif isinstance(block.get("refusal"), str):
            yield Part(section, role, index, "text", str(block["refusal"]))


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return True
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        return False
    for block in content:
        if isinstance(block, str):
            return True
        if isinstance(block, Mapping) and block.get("type") not in _TOOL_RESULT_TYPES:
            if isinstance(block.get("text"), str) or _is_media(block):
                return True
    return False


def _last_user(messages: list[Any], content_key: str, user_roles: tuple[str | None, ...]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, Mapping) and m.get("role") in user_roles and _has_text(m.get(content_key)):
            return i
    return None


def _chat_messages(messages: list[Any], api: str) -> Iterator[Part]:
    """OpenAI chat `messages`, Anthropic `messages` and OpenAI responses `input` items."""
    last = _last_user(messages, "content", ("user",))
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            continue
        role = str(m.get("role") or m.get("type") or "user")
        mtype = m.get("type")
        if role in ("system", "developer"):
            yield from _blocks(m.get("content"), "system", role, i, api=api)
            continue
        if role in ("tool", "function") or mtype in _TOOL_RESULT_TYPES:
            yield Part("context", role, i, "result", _text_of(m.get("content", m.get("output"))))
            continue
        if mtype in ("function_call", "custom_tool_call"):
            yield Part("history", "assistant", i, "call", str(m.get("arguments") or m.get("input") or ""))
            continue
        if mtype == "reasoning":
            continue
        section = "query" if i == last else "history"
        produced = False
        for part in _blocks(m.get("content"), section, role, i, api=api):
            produced = True
            yield part
        for call in m.get("tool_calls") or ():
            if isinstance(call, Mapping):
                fn = call.get("function") or {}
                args = fn.get("arguments") if isinstance(fn, Mapping) else None
                produced = True
                yield Part(section, role, i, "call", args if isinstance(args, str) else dumps(args))
        if not produced:
            yield Part(section, role, i, "text", "")


def _gemini_contents(contents: list[Any]) -> Iterator[Part]:
    last = None
    for i in range(len(contents) - 1, -1, -1):
        c = contents[i]
        if isinstance(c, Mapping) and c.get("role", "user") == "user" and _has_text(c.get("parts")):
            last = i
            break
    for i, c in enumerate(contents):
        if isinstance(c, str):
            yield Part("query" if i == len(contents) - 1 else "history", "user", i, "text", c)
            continue
        if not isinstance(c, Mapping):
            continue
        role = str(c.get("role") or "user")
        section = "query" if i == last else "history"
        produced = False
        for part in _blocks(c.get("parts"), section, role, i, api="google"):
            produced = True
            yield part
        if not produced:
            yield Part(section, role, i, "text", "")


def _definitions(value: Any) -> Iterator[Part]:
    if value:
        yield Part("tools", "system", None, "definition", dumps(value))


def request_parts(api: str, body: Mapping[str, Any]) -> list[Part]:
    """Every model-visible part of a request body (OpenAI, Anthropic or Gemini format)."""
    try:
        return list(_parts(api, body))
    except Exception:
        return []


def _parts(api: str, b: Mapping[str, Any]) -> Iterator[Part]:
    if api == "google":
        system = b.get("systemInstruction", b.get("system_instruction"))
        if system is not None:
            payload = system.get("parts") if isinstance(system, Mapping) else system
            yield from _blocks(payload, "system", "system", None, api=api)
        yield from _definitions(b.get("tools"))
        config = b.get("generationConfig") or b.get("generation_config")
        if isinstance(config, Mapping):
            yield from _definitions(config.get("responseSchema") or config.get("responseJsonSchema"))
        contents = b.get("contents")
        if isinstance(contents, list):
            yield from _gemini_contents(contents)
        elif isinstance(contents, str):
            yield Part("query", "user", 0, "text", contents)
        if "content" in b:  # embedContent
            content = b["content"]
            payload = content.get("parts") if isinstance(content, Mapping) else content
            yield from _blocks(payload, "query", "user", 0, api=api)
        return
    if api == "anthropic":
        system = b.get("system")
        if system is not None:
            yield from _blocks(system, "system", "system", None, api=api)
        yield from _definitions(b.get("tools"))
        messages = b.get("messages")
        if isinstance(messages, list):
            yield from _chat_messages(messages, api)
        return
    # OpenAI and OpenAI-compatible
    if isinstance(b.get("instructions"), str):
        yield Part("system", "system", None, "text", b["instructions"])
    yield from _definitions(b.get("tools"))
    yield from _definitions(b.get("functions"))
    fmt = b.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("json_schema"):
        yield from _definitions(fmt.get("json_schema"))
    messages = b.get("messages")
    if isinstance(messages, list):
        yield from _chat_messages(messages, api)
        return
    inp = b.get("input", b.get("prompt"))
    if isinstance(inp, str):
        yield Part("query", "user", 0, "text", inp)
    elif isinstance(inp, list):
        if inp and all(isinstance(x, Mapping) for x in inp):
            yield from _chat_messages(inp, api)
        else:
            for x in inp:
                if isinstance(x, str):
                    yield Part("query", "user", 0, "text", x)


def user_turns(parts: list[Part]) -> int:
    """How many user turns the request carries (messages with user-authored text, query included)."""
    return len({p.message for p in parts if p.role == "user" and p.kind in ("text", "media")})


# Documents inside a user turn (docs/analytics-api.md#how-the-figures-are-computed: "delimited blocks such as tagged or fenced documents inside a
# user turn" are context). A document block is kept whole, delimiters included; the text around it stays in
# the turn's own section (query or history), each piece stripped of the blank space around it.
_DOC_TAGS = (
    r"documents?|docs?|context|contexts|sources?|articles?|files?|search_results?|search_result|results?|"
    r"retrieved\w*|passages?|excerpts?|references?|data|transcript|emails?|pages?|attachments?|knowledge|"
    r"snippets?|chunks?|records?|report|manual|content|text|paper|notes"
)
_OPEN_TAG = re.compile(r"<([a-zA-Z][\w:-]*)(?:\s[^<>]{0,300})?>")
_DOC_TAG = re.compile(_DOC_TAGS)
_NOT_DOC_TAGS = frozenset({"question", "query", "instructions", "instruction", "task", "request", "prompt"})
_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n", re.MULTILINE)
_FENCE_CLOSE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*$", re.MULTILINE)
_LABELS = (
    r"context|contexts|documents?|sources?|references?|articles?|passages?|excerpts?|background|retrieved\s+\w+|"
    r"search\s+results?|transcript|file|attachment|knowledge\s+base|snippets?|data"
)
_LABEL = re.compile(
    rf"^[ \t]*(?:#+\s*|\*\*)?(?:{_LABELS})(?:\s*(?:\d+|\[[^\]\n]{{0,40}}\]|\([^)\n]{{0,40}}\)|[\w./-]+\.\w{{1,5}}))?"
    r"\s*(?:\*\*)?\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_QUERY_LABEL = re.compile(
    r"^[ \t]*(?:#+\s*|\*\*)?(?:question|query|q|task|instructions?|request|answer|user|my\s+question)\s*(?:\*\*)?\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED = re.compile(r"\"[^\"]{400,}?\"|“[^”]{400,}?”|(?:^[ \t]*>[^\n]*(?:\n|$)){3,}", re.MULTILINE)
MIN_TAGGED = 200  # characters inside an unknown tag before the block counts as a document
MAX_TAGS = 512  # opening tags looked at in one text (a pasted web page is one element, or many small ones)
_HINTS = ("<", "```", "~~~", ":", '"', "“", ">")


def _tagged_spans(text: str) -> list[tuple[int, int]]:
    """`<documents>...</documents>`, `<doc id=3>...</doc>`: an element whose tag names a document, or any other
    element with at least MIN_TAGGED characters inside (not `<question>` and the like). Each opening tag is
    paired with the next closing tag of its name (found with `str.find`); what an element holds is not looked at
    again, a tag that is never closed (`<br>`) is looked up once, and at most MAX_TAGS tags are looked at."""
    low = text.lower()
    unclosed: set[str] = set()
    spans: list[tuple[int, int]] = []
    pos = 0
    for _ in range(MAX_TAGS):
        m = _OPEN_TAG.search(text, pos)
        if m is None:
            break
        pos = m.end()
        tag = m.group(1).lower()
        if tag in _NOT_DOC_TAGS or tag in unclosed:
            continue
        close = low.find("</" + tag, pos)
        while close >= 0 and low[close + 2 + len(tag) : close + 3 + len(tag)] not in (">", " ", "\t", "\n"):
            close = low.find("</" + tag, close + 1)
        if close < 0:
            unclosed.add(tag)
            continue
        close_end = low.find(">", close) + 1 or len(text)  # `</doc ` never closed by `>`: to the end
        if _DOC_TAG.fullmatch(tag) or close - pos >= MIN_TAGGED:
            spans.append((m.start(), close_end))
        pos = close_end
    return spans


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    """Fenced blocks: a line opening with a run of three or more backticks (or tildes), through the first later
    line that is only a run of the same character, as long as the longest such run that is not longer than the
    opening one (what `^[ \t]*(?P<f>`{3,}|~{3,})[^\n]*\n.*?^[ \t]*(?P=f)[ \t]*$` matches). Closing lines are
    indexed once, so an opening line never rescans the text (the regex tried every shorter run to the end)."""
    closers: dict[str, list[int]] = {}  # "`" * length -> starts of the lines that are only that run
    ends: dict[int, int] = {}
    for c in _FENCE_CLOSE.finditer(text):
        closers.setdefault(c.group(1), []).append(c.start())
        ends[c.start()] = c.end()
    if not closers:
        return []
    longest = {c: max((len(f) for f in closers if f[0] == c), default=0) for c in "`~"}
    spans = []
    pos = 0
    while (m := _FENCE_OPEN.search(text, pos)) is not None:
        run, after = m.group(1), m.end()
        pos = after
        for length in range(min(len(run), longest[run[0]]), 2, -1):
            starts = closers.get(run[0] * length)
            i = bisect.bisect_left(starts, after) if starts else 0
            if starts and i < len(starts):
                spans.append((m.start(), ends[starts[i]]))
                pos = ends[starts[i]]
                break
    return spans


def _label_spans(text: str) -> list[tuple[int, int]]:
    """`Context:` / `Document 2:` / `Source [a.pdf]:` sections: from the label to the next query label (or the
    next document label), else to the last paragraph when that one reads as the question, else to the end."""
    spans = []
    labels = []
    for m in _LABEL.finditer(text):
        labels.append(m)
        if len(labels) == MAX_TAGS:  # the last one's section runs on over the rest
            break
    for i, m in enumerate(labels):
        start = m.start()
        end = labels[i + 1].start() if i + 1 < len(labels) else len(text)
        q = _QUERY_LABEL.search(text, m.end(), end)
        if q is not None:
            end = q.start()
        elif i + 1 == len(labels):
            last = text.rfind("\n\n", m.end(), end)
            if last >= 0 and _reads_as_question(text[last:end]):
                end = last
            else:
                line = text.rfind("\n", m.end(), end)
                if line >= 0 and text[line:end].strip().endswith("?"):
                    end = line
        spans.append((start, end))
    return spans


def _reads_as_question(paragraph: str) -> bool:
    p = paragraph.strip()
    return bool(p) and len(p) < 600 and (p.endswith("?") or "\n" not in p)


def document_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the documents inside one turn's text (merged, in order)."""
    if len(text) < 40 or not any(h in text for h in _HINTS):
        return []
    spans: list[tuple[int, int]] = []
    if "</" in text:
        spans.extend(_tagged_spans(text))
    if "```" in text or "~~~" in text:
        spans.extend(_fenced_spans(text))
    if ":" in text:
        spans.extend(_label_spans(text))
    if '"' in text or "“" in text or ">" in text:
        spans.extend(m.span() for m in _QUOTED.finditer(text))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def split_documents(text: str) -> list[tuple[str, bool]]:
    """A turn's text as pieces `(text, is_document)`, each stripped; empty pieces dropped."""
    spans = document_spans(text)
    if not spans:
        return [(text, False)]
    pieces: list[tuple[str, bool]] = []
    at = 0
    for start, end in spans:
        pieces.append((text[at:start].strip(), False))
        pieces.append((text[start:end].strip(), True))
        at = end
    pieces.append((text[at:].strip(), False))
    return [(t, d) for t, d in pieces if t]


def with_inline_documents(parts: list[Part]) -> list[Part]:
    """Parts with the documents found inside user turns (query and earlier turns) moved to `context`."""
    out: list[Part] = []
    for p in parts:
        if p.kind != "text" or p.role != "user" or p.section not in ("query", "history") or not p.text:
            out.append(p)
            continue
        pieces = split_documents(p.text)
        if len(pieces) == 1 and not pieces[0][1]:
            out.append(p)
            continue
        for piece, is_document in pieces:
            if is_document:
                out.append(Part("context", p.role, p.message, "document", piece))
            else:
                out.append(p._replace(text=piece))
    return out
