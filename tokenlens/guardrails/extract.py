"""The text parts of a request or a non-streamed answer, per provider format, with a way to rewrite each.

A `TextSlot` names where a text lives (`messages[2].content[0].text`), who wrote it (`system`, `user`,
`assistant`, `tool`: tool results and retrieved documents), and can replace it in the parsed body, so redaction
rewrites only text fields and leaves the rest of the JSON as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Origin = str  # "system" | "user" | "assistant" | "tool"
_MAX_DEPTH = 12


@dataclass
class TextSlot:
    path: str
    origin: Origin
    container: dict[str, Any] | list[Any]
    key: str | int

    @property
    def text(self) -> str:
        value = self.container[self.key]  # type: ignore[index]
        return value if isinstance(value, str) else ""

    def replace(self, text: str) -> None:
        self.container[self.key] = text  # type: ignore[index]


def _slot(container: Any, key: str | int, path: str, origin: Origin) -> Iterator[TextSlot]:
    try:
        value = container[key]
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(value, str):
        yield TextSlot(path, origin, container, key)


def _strings(value: Any, path: str, origin: Origin, depth: int = 0) -> Iterator[TextSlot]:
    """Every string inside a JSON value (tool payloads, function arguments objects)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield TextSlot(f"{path}.{key}", origin, value, key)
            else:
                yield from _strings(item, f"{path}.{key}", origin, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield TextSlot(f"{path}[{i}]", origin, value, i)
            else:
                yield from _strings(item, f"{path}[{i}]", origin, depth + 1)


_TOOL_PART_TYPES = frozenset({"tool_result", "function_call_output", "tool", "document", "search_result"})
_TEXT_KEYS = ("text", "input_text", "output_text", "content", "output", "refusal", "arguments", "thinking")


def _parts(value: Any, path: str, origin: Origin) -> Iterator[TextSlot]:
    """A `content` value: a string, or a list of typed parts (text, tool_result, document...)."""
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        if isinstance(value, dict):
            yield from _part(value, path, origin)
        return
    for i, part in enumerate(value):
        if isinstance(part, str):
            yield TextSlot(f"{path}[{i}]", origin, value, i)
        elif isinstance(part, dict):
            yield from _part(part, f"{path}[{i}]", origin)


def _part(part: dict[str, Any], path: str, origin: Origin) -> Iterator[TextSlot]:
    kind = part.get("type")
    inner_origin = "tool" if kind in _TOOL_PART_TYPES else origin
    if kind == "document" and isinstance(part.get("source"), dict):
        yield from (
            _slot(part["source"], "data", f"{path}.source.data", "tool")
            if part["source"].get("type") == "text"
            else iter(())
        )
    if kind == "tool_use" and isinstance(part.get("input"), dict):
        yield from _strings(part["input"], f"{path}.input", origin)
    for key in _TEXT_KEYS:
        if key not in part:
            continue
        value = part[key]
        if isinstance(value, str):
            yield TextSlot(f"{path}.{key}", inner_origin, part, key)
        elif isinstance(value, list):
            yield from _parts(value, f"{path}.{key}", inner_origin)


def _origin_of_role(role: Any) -> Origin:
    if role in ("system", "developer"):
        return "system"
    if role in ("tool", "function"):
        return "tool"
    if role in ("assistant", "model"):
        return "assistant"
    return "user"


def _openai_messages(messages: Any, path: str) -> Iterator[TextSlot]:
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        here = f"{path}[{i}]"
        if message.get("type") == "function_call_output":
            yield from _slot(message, "output", f"{here}.output", "tool")
            yield from _parts(message.get("output"), f"{here}.output", "tool")
            continue
        if message.get("type") == "function_call":
            yield from _slot(message, "arguments", f"{here}.arguments", "assistant")
            continue
        origin = _origin_of_role(message.get("role"))
        yield from _slot(message, "content", f"{here}.content", origin)
        yield from _parts(message.get("content"), f"{here}.content", origin)
        for j, call in enumerate(message.get("tool_calls") or []):
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                yield from _slot(
                    call["function"], "arguments", f"{here}.tool_calls[{j}].function.arguments", origin
                )


def _gemini_content(content: Any, path: str, origin: Origin) -> Iterator[TextSlot]:
    if not isinstance(content, dict):
        return
    parts = content.get("parts")
    if not isinstance(parts, list):
        return
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            continue
        here = f"{path}.parts[{j}]"
        yield from _slot(part, "text", f"{here}.text", origin)
        for key in ("functionResponse", "function_response"):
            if isinstance(part.get(key), dict):
                yield from _strings(part[key].get("response"), f"{here}.{key}.response", "tool")
        for key in ("functionCall", "function_call"):
            if isinstance(part.get(key), dict):
                yield from _strings(part[key].get("args"), f"{here}.{key}.args", origin)


def request_slots(api: str, body: dict[str, Any]) -> list[TextSlot]:
    """Every text part of a request body in the provider's format."""
    slots: list[TextSlot] = []
    if api == "google":
        for key in ("systemInstruction", "system_instruction"):
            slots.extend(_gemini_content(body.get(key), key, "system"))
        contents = body.get("contents")
        if isinstance(contents, list):
            for i, content in enumerate(contents):
                role = content.get("role") if isinstance(content, dict) else None
                slots.extend(_gemini_content(content, f"contents[{i}]", _origin_of_role(role)))
        for key in ("content", "requests"):  # embedContent / batch embeds
            if isinstance(body.get(key), dict):
                slots.extend(_gemini_content(body[key], key, "user"))
        return slots
    if api == "anthropic":
        slots.extend(_slot(body, "system", "system", "system"))
        slots.extend(_parts(body.get("system"), "system", "system"))
        slots.extend(_openai_messages(body.get("messages"), "messages"))
        return slots
    # OpenAI: chat completions, responses, legacy completions, embeddings
    slots.extend(_openai_messages(body.get("messages"), "messages"))
    slots.extend(_slot(body, "instructions", "instructions", "system"))
    for key in ("input", "prompt"):
        slots.extend(_slot(body, key, key, "user"))
        value = body.get(key)
        if isinstance(value, list):
            if all(isinstance(v, str) for v in value):
                slots.extend(_strings(value, key, "user"))
            else:
                slots.extend(_openai_messages(value, key))
    return slots


def response_slots(api: str, body: dict[str, Any]) -> list[TextSlot]:
    """The text parts of a non-streamed answer (choices, content blocks, candidates, output items)."""
    slots: list[TextSlot] = []
    if api == "google":
        for i, candidate in enumerate(body.get("candidates") or []):
            if isinstance(candidate, dict):
                slots.extend(
                    _gemini_content(candidate.get("content"), f"candidates[{i}].content", "assistant")
                )
        return slots
    if api == "anthropic":
        slots.extend(_parts(body.get("content"), "content", "assistant"))
        output = body.get("output")  # Bedrock Converse: {"output": {"message": {"content": [{"text": ...}]}}}
        message = output.get("message") if isinstance(output, dict) else None
        if isinstance(message, dict):
            slots.extend(_parts(message.get("content"), "output.message.content", "assistant"))
        return slots
    for i, choice in enumerate(body.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        slots.extend(_slot(choice, "text", f"choices[{i}].text", "assistant"))
        message = choice.get("message")
        if isinstance(message, dict):
            slots.extend(_openai_messages([message], f"choices[{i}].message"))
    slots.extend(_openai_messages(body.get("output"), "output"))
    slots.extend(_slot(body, "output_text", "output_text", "assistant"))
    return slots
