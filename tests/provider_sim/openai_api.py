"""OpenAI: chat completions, responses, embeddings, legacy completions, models."""

from __future__ import annotations

import base64
import dataclasses
import struct
from typing import Any

from .usage import Plan, reported_model
from .wire import (
    SSE_TYPE,
    Call,
    Ids,
    Reply,
    chunk_words,
    dumps,
    embedding_vector,
    json_reply,
    now,
    openai_error,
    sse_data,
    sse_event,
)

DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_sim0000001"
DEFAULT_EMBED_DIMS = 16
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "text-embedding-3-small")


def _missing(param: str) -> Reply:
    body = openai_error(400, f"Missing required parameter: '{param}'.", "missing_required_parameter")
    body["error"]["param"] = param
    return json_reply(400, body)


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def chat_usage(p: Plan) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": p.cache_read, "audio_tokens": 0}
    if p.cache_write:
        prompt_details["cache_write_tokens"] = p.cache_write
    return {
        "prompt_tokens": p.total_input,
        "completion_tokens": p.output_tokens,
        "total_tokens": p.total_input + p.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": p.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(p: Plan) -> dict[str, Any]:
    input_details: dict[str, int] = {"cached_tokens": p.cache_read}
    if p.cache_write:
        input_details["cache_write_tokens"] = p.cache_write
    return {
        "input_tokens": p.total_input,
        "input_tokens_details": input_details,
        "output_tokens": p.output_tokens,
        "output_tokens_details": {"reasoning_tokens": p.reasoning},
        "total_tokens": p.total_input + p.output_tokens,
    }


def stream_error_event(call: Call) -> bytes:
    error = openai_error(500)
    if call.kind == "responses":
        err = error["error"]
        return sse_event(
            "error", {"type": "error", "code": err["type"], "message": err["message"], "param": None}
        )
    return sse_data(error)


def handle(call: Call) -> Reply:
    if call.kind == "models":
        return models(call)
    if call.method != "POST":
        return json_reply(404, openai_error(404, f"Invalid URL ({call.method} {call.path})"))
    if not call.model:
        return json_reply(400, openai_error(400, "you must provide a model parameter"))
    if call.kind == "chat":
        if not isinstance(call.body.get("messages"), list):
            return _missing("messages")
        return chat(call)
    if call.kind == "responses":
        return responses(call)
    if call.kind == "embeddings":
        if "input" not in call.body:
            return _missing("input")
        return embeddings(call)
    if "prompt" not in call.body:
        return _missing("prompt")
    return completions(call)


# ---- chat completions ---------------------------------------------------------------------------------


def chat(call: Call) -> Reply:
    p: Plan = call.plan
    model = reported_model("openai", call.model, call.knobs)
    cid = Ids.make("chatcmpl-sim")
    created = now()
    finish = "length" if p.truncated else "stop"
    if not call.stream:
        return json_reply(
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": p.text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": chat_usage(p),
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            },
        )
    include_usage = _include_usage(call.body)
    head = (
        f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{dumps(model)},'
        f'"service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":'
    )
    tail = ',"usage":null}\n\n' if include_usage else "}\n\n"

    def chunk(choice: dict[str, Any]) -> bytes:
        return ("data: " + head + "[" + dumps(choice) + "]" + tail).encode()

    events = [
        chunk(
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "", "refusal": None},
                "logprobs": None,
                "finish_reason": None,
            }
        )
    ]
    for piece in chunk_words(p.text, call.knobs.chunk_words):
        events.append(
            chunk({"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None})
        )
    events.append(chunk({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}))
    usage_index = None
    if include_usage:
        usage_index = len(events)
        events.append(("data: " + head + '[],"usage":' + dumps(chat_usage(p)) + "}\n\n").encode())
    events.append(DONE)
    return Reply(200, content_type=SSE_TYPE, events=events, usage_index=usage_index)


# ---- legacy completions -------------------------------------------------------------------------------


def completions(call: Call) -> Reply:
    p: Plan = call.plan
    model = reported_model("openai", call.model, call.knobs)
    cid = Ids.make("cmpl-sim")
    created = now()
    finish = "length" if p.truncated else "stop"
    usage = {
        "prompt_tokens": p.prompt,
        "completion_tokens": p.output_tokens,
        "total_tokens": p.prompt + p.output_tokens,
    }
    if not call.stream:
        return json_reply(
            200,
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": p.text, "index": 0, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            },
        )
    include_usage = _include_usage(call.body)

    def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "choices": choices,
            "model": model,
        }
        if include_usage:
            obj["usage"] = usage_value
        return sse_data(obj)

    events = [
        chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}])
        for piece in chunk_words(p.text, call.knobs.chunk_words)
    ]
    events.append(chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]))
    usage_index = None
    if include_usage:
        usage_index = len(events)
        events.append(chunk([], usage))
    events.append(DONE)
    return Reply(200, content_type=SSE_TYPE, events=events, usage_index=usage_index)


# ---- responses ----------------------------------------------------------------------------------------


class ResponseBuilder:
    """One Responses API answer: the response object and its stream events (SSE and WebSocket mode)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.plan: Plan = call.plan
        self.model = reported_model("openai", call.model, call.knobs)
        self.rid = Ids.make("resp_sim")
        self.msg_id = Ids.make("msg_sim")
        self.created = now()
        p = self.plan
        self.final_status = "incomplete" if p.truncated else "completed"
        self.text_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": p.text}
        self.reasoning_item = (
            {"id": Ids.make("rs_sim"), "type": "reasoning", "summary": []} if p.reasoning else None
        )
        self.message_item = {
            "id": self.msg_id,
            "type": "message",
            "status": self.final_status,
            "content": [self.text_part],
            "role": "assistant",
        }
        self.output = ([self.reasoning_item] if self.reasoning_item else []) + [self.message_item]

    def obj(self, status: str, out: list[Any], usage: Any, error: Any = None) -> dict[str, Any]:
        body = self.call.body
        return {
            "id": self.rid,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": out,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def final(self) -> dict[str, Any]:
        """The finished response object (the non-streamed answer)."""
        return self.obj(self.final_status, self.output, responses_usage(self.plan))

    def events(self) -> list[dict[str, Any]]:
        """The stream events, in order; the last one (response.completed or .incomplete) has the usage."""
        events: list[dict[str, Any]] = []

        def emit(event_type: str, payload: dict[str, Any]) -> None:
            events.append({"type": event_type, "sequence_number": len(events), **payload})

        emit("response.created", {"response": self.obj("in_progress", [], None)})
        emit("response.in_progress", {"response": self.obj("in_progress", [], None)})
        index = 0
        if self.reasoning_item:
            emit("response.output_item.added", {"output_index": 0, "item": self.reasoning_item})
            emit("response.output_item.done", {"output_index": 0, "item": self.reasoning_item})
            index = 1
        where = {"item_id": self.msg_id, "output_index": index, "content_index": 0}
        emit(
            "response.output_item.added",
            {"output_index": index, "item": {**self.message_item, "status": "in_progress", "content": []}},
        )
        emit("response.content_part.added", {**where, "part": {**self.text_part, "text": ""}})
        for piece in chunk_words(self.plan.text, self.call.knobs.chunk_words):
            emit("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        emit("response.output_text.done", {**where, "text": self.plan.text, "logprobs": []})
        emit("response.content_part.done", {**where, "part": self.text_part})
        emit("response.output_item.done", {"output_index": index, "item": self.message_item})
        emit(f"response.{self.final_status}", {"response": self.final()})
        return events

    def failed(self, sent: list[dict[str, Any]]) -> dict[str, Any]:
        """A ``response.failed`` event after the events `sent`; its usage counts only the output sent."""
        words = sum(len(str(e["delta"]).split()) for e in sent if e["type"] == "response.output_text.delta")
        reasoned = any(
            e["type"] == "response.output_item.added" and e["item"]["type"] == "reasoning" for e in sent
        )
        usage = responses_usage(
            dataclasses.replace(
                self.plan, reply_words=words, reasoning=self.plan.reasoning if reasoned else 0
            )
        )
        error = {"code": "server_error", "message": openai_error(500)["error"]["message"]}
        return {
            "type": "response.failed",
            "sequence_number": len(sent),
            "response": self.obj("failed", [], usage, error),
        }

    def warmup(self) -> list[dict[str, Any]]:
        """The answer to ``"generate": false``: response.created, then response.completed with no output."""
        usage = responses_usage(dataclasses.replace(self.plan, reply_words=0, reasoning=0))
        return [
            {"type": "response.created", "sequence_number": 0, "response": self.obj("in_progress", [], None)},
            {
                "type": "response.completed",
                "sequence_number": 1,
                "response": self.obj("completed", [], usage),
            },
        ]


def responses(call: Call) -> Reply:
    builder = ResponseBuilder(call)
    if not call.stream:
        return json_reply(200, builder.final())
    events = [sse_event(e["type"], e) for e in builder.events()]
    return Reply(200, content_type=SSE_TYPE, events=events, usage_index=len(events) - 1)


# ---- embeddings ---------------------------------------------------------------------------------------


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [dumps(value)]
        return [v if isinstance(v, str) else dumps(v) for v in value]
    return [dumps(value)]


def embeddings(call: Call) -> Reply:
    p: Plan = call.plan
    dims = int(call.body.get("dimensions") or DEFAULT_EMBED_DIMS)
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(_embedding_inputs(call.body.get("input"))):
        vector = embedding_vector(text, dims)
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    return json_reply(
        200,
        {
            "object": "list",
            "data": data,
            "model": reported_model("openai", call.model, call.knobs),
            "usage": {"prompt_tokens": p.prompt, "total_tokens": p.prompt},
        },
    )


def models(call: Call) -> Reply:
    def entry(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1715367049, "owned_by": "system"}

    tail = call.path.rstrip("/").rsplit("/models", 1)[-1].lstrip("/")
    if tail:
        return json_reply(200, entry(tail))
    return json_reply(200, {"object": "list", "data": [entry(m) for m in MODELS]})
