"""Wire-level building blocks shared by the provider modules: replies, SSE framing, error bodies, ids."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import math
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Site Overloaded",
}


def dumps(obj: Any) -> str:
    return _dumps(obj)


@dataclass
class ReceivedRequest:
    """One request as the simulator received it (headers with lower-case names)."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)
    tls: bool = False
    first_write_at: float | None = None  # when the first bytes of the answer were written (set by the server)
    ws_received: list[str | bytes] = field(default_factory=list)  # WebSocket: client messages, in order
    ws_sent: list[str] = field(default_factory=list)  # WebSocket: the server's text messages, in order

    def json(self) -> Any:
        body = self.body
        if self.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)

    @property
    def params(self) -> dict[str, str]:
        """The query string as a dict (last value wins)."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}


@dataclass
class Reply:
    """A response to write: a JSON body, or a list of stream events (each written as one HTTP chunk)."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    events: list[bytes] | None = None
    usage_index: int | None = None  # index of the first event that carries the final usage

    @property
    def is_stream(self) -> bool:
        return self.events is not None


def per_model(headers: Mapping[str, str], name: str, model: str) -> str | None:
    """The value for `model` in a ``model=value,model2=value2`` knob header, if it names that model."""
    for item in headers.get(name, "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == model:
            return value.strip()
    return None


def json_reply(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, dumps(obj).encode(), JSON_TYPE, headers or [])


def sse_data(obj: Any, sep: str = "\n\n") -> bytes:
    """``data: {json}`` + blank line (OpenAI; Gemini uses ``\\r\\n\\r\\n``)."""
    return f"data: {dumps(obj)}{sep}".encode()


def sse_event(name: str, obj: Any) -> bytes:
    """``event: <name>`` + ``data: {json}`` + blank line (Anthropic, OpenAI Responses)."""
    return f"event: {name}\ndata: {dumps(obj)}\n\n".encode()


def chunk_words(text: str, per_chunk: int) -> list[str]:
    """Split a reply into stream deltas of `per_chunk` words; concatenated they give back `text`."""
    parts = text.split(" ") if text else []
    out = []
    for i in range(0, len(parts), per_chunk):
        piece = " ".join(parts[i : i + per_chunk])
        out.append(piece if i == 0 else " " + piece)
    return out


class Ids:
    """Deterministic, unique-per-process ids."""

    _counter = itertools.count(1)
    _lock = threading.Lock()

    @classmethod
    def next(cls) -> int:
        with cls._lock:
            return next(cls._counter)

    @classmethod
    def make(cls, prefix: str, width: int = 24) -> str:
        return f"{prefix}{cls.next():0{width}x}"


def now() -> int:
    return int(time.time())


# ---- error bodies -------------------------------------------------------------------------------------

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", None, "The requested resource does not exist."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    426: ("invalid_request_error", None, "This endpoint expects a WebSocket upgrade."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed your organization's rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}

_GOOGLE_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


def openai_error(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    etype, default_code, default_message = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
    )
    return {
        "error": {
            "message": message or default_message,
            "type": etype,
            "param": None,
            "code": code or default_code,
        }
    }


def anthropic_error(status: int, message: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    etype, default_message = _ANTHROPIC_ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}.")
    )
    body: dict[str, Any] = {"type": "error", "error": {"type": etype, "message": message or default_message}}
    if request_id:
        body["request_id"] = request_id
    return body


def google_error(status: int, message: str | None = None) -> dict[str, Any]:
    gstatus, default_message = _GOOGLE_STATUS.get(
        status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", f"Error {status}.")
    )
    return {"error": {"code": status, "message": message or default_message, "status": gstatus}}


def error_body(
    provider: str, status: int, message: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    if provider == "anthropic":
        return anthropic_error(status, message, request_id)
    if provider == "google":
        return google_error(status, message)
    return openai_error(status, message)


@dataclass
class Call:
    """One routed API request, as the provider modules see it."""

    provider: str
    kind: str
    body: dict[str, Any]
    knobs: Any  # usage.Knobs
    plan: Any  # usage.Plan (None for endpoints without usage)
    model: str  # the requested model ("" when none)
    stream: bool = False
    sse: bool = True  # Gemini: alt=sse (otherwise a streamed JSON array)
    path: str = ""
    method: str = "POST"
    request_id: str = ""


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector (float32 values) derived from the text."""
    raw = b""
    seed = text.encode()
    counter = 0
    while len(raw) < dims:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dims}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dims}f", packed))
