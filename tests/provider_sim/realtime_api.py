"""The OpenAI Realtime API over WebSocket (``GET /v1/realtime?model=M``), GA and beta dialects.

The GA event names (openai-python ``client.realtime.connect()``, ``openai.types.realtime``) are used unless
the upgrade carries ``OpenAI-Beta: realtime=v1`` (``client.beta.realtime.connect()``), which gets the beta
names (``response.text.delta``, ``response.audio.delta``, ``conversation.item.created``, ...).

The server sends ``session.created`` first, then answers ``session.update`` (``session.updated``, the
session merged), ``conversation.item.create`` (``conversation.item.added`` + ``.done``; beta
``conversation.item.created``), ``input_audio_buffer.append`` (nothing), ``.commit``
(``input_audio_buffer.committed`` and the new user item), ``.clear`` and ``response.create``. There is no
voice activity detection: audio becomes an item only when committed. A malformed message or an unknown type
gets an ``error`` event (``{"type": "error", "event_id", "error": {"type": "invalid_request_error",
"code", "message", "param", "event_id"}}``) and the socket stays open.

A response: ``response.created``, ``response.output_item.added``, ``conversation.item.added``,
``response.content_part.added``, then per chunk of ``x-sim-chunk-words`` words either
``response.output_text.delta`` (text) or ``response.output_audio_transcript.delta`` +
``response.output_audio.delta`` (audio), the ``.done`` events, ``response.content_part.done``,
``response.output_item.done``, ``conversation.item.done``, ``response.done`` with ``response.usage``.

Token rule (one word = one token, as in `provider_sim.usage`):

* Audio: ``ceil(bytes / AUDIO_BYTES_PER_TOKEN)`` audio tokens per audio content part (a committed input
  buffer counts as one part), where bytes is the decoded length of the base64 audio (4800 bytes = 100 ms of
  24 kHz 16-bit mono PCM).
* Items in the conversation: a message costs ``MESSAGE_OVERHEAD`` (4) text tokens plus the words of its
  text parts (``input_text``, ``text``, ``output_text``) plus the audio tokens of its audio parts
  (transcripts are not counted); any other item costs 4 plus the words of ``usage.text_of(item)``.
* Input of a response: the session's (or the response's) ``instructions`` (4 + words, when not empty)
  plus every item of the conversation so far, including the assistant's earlier answers.
* Cached input: the whole input of the previous response on this socket (0 for the first), reported in
  ``input_token_details.cached_tokens`` and ``cached_tokens_details`` (text and audio); cached tokens are
  part of the input tokens.
* Output: the reply is ``REPLY_SENTENCE`` repeated to W = ``x-sim-reply-words`` words. Text modality: W
  text tokens. Audio modality (the GA default is ``["audio"]``, the beta default ``["text", "audio"]``):
  W text tokens (the transcript) plus ``OUTPUT_AUDIO_BYTES_PER_WORD`` bytes of silence per word, i.e. 2 W
  audio tokens. A ``max_output_tokens`` (response, else session; beta ``max_response_output_tokens``) of X
  cuts W to ``X // 3`` (audio) or X (text), and the response ends ``incomplete``.
* The answer is added to the conversation (4 + W text tokens for text; 4 text + 2 W audio tokens for audio).
* ``response.done`` carries ``usage`` ``{total_tokens, input_tokens, output_tokens, input_token_details:
  {text_tokens, audio_tokens, image_tokens, cached_tokens, cached_tokens_details: {text_tokens,
  audio_tokens, image_tokens}}, output_token_details: {text_tokens, audio_tokens}}`` (beta: without image
  tokens and ``cached_tokens_details``). The x-sim cache and reasoning knobs do not apply here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .usage import MESSAGE_OVERHEAD, Knobs, plan, text_of, words
from .wire import Ids, chunk_words, openai_error, per_model

if TYPE_CHECKING:
    from .websocket import Socket


def frame_headers(headers: Mapping[str, str], metadata: Any) -> dict[str, str]:
    """The connection's knob headers overlaid with the ``x-sim-*`` keys of a frame's metadata."""
    out = dict(headers)
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if isinstance(key, str) and key.lower().startswith("x-sim-"):
                out[key.lower()] = str(value)
    return out


AUDIO_BYTES_PER_TOKEN = 4800
OUTPUT_AUDIO_BYTES_PER_WORD = 9600
PCM = {"type": "audio/pcm", "rate": 24000}
TEXT_PART_TYPES = ("input_text", "text", "output_text")

Event = dict[str, Any]

GA_NAMES = {
    "text.delta": "response.output_text.delta",
    "text.done": "response.output_text.done",
    "audio.delta": "response.output_audio.delta",
    "audio.done": "response.output_audio.done",
    "transcript.delta": "response.output_audio_transcript.delta",
    "transcript.done": "response.output_audio_transcript.done",
}
BETA_NAMES = {
    "text.delta": "response.text.delta",
    "text.done": "response.text.done",
    "audio.delta": "response.audio.delta",
    "audio.done": "response.audio.done",
    "transcript.delta": "response.audio_transcript.delta",
    "transcript.done": "response.audio_transcript.done",
}


def audio_tokens(n_bytes: int) -> int:
    """Audio tokens of one audio part of `n_bytes` decoded bytes."""
    return -(-n_bytes // AUDIO_BYTES_PER_TOKEN)


def _audio_bytes(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    return len(base64.b64decode(value, validate=True))


def item_tokens(item: Mapping[str, Any]) -> tuple[int, int]:
    """(text, audio) tokens of a conversation item, by the rule in the module docstring."""
    if item.get("type") != "message":
        return MESSAGE_OVERHEAD + words(text_of(dict(item))), 0
    text, audio = MESSAGE_OVERHEAD, 0
    content = item.get("content")
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") in TEXT_PART_TYPES and isinstance(part.get("text"), str):
            text += words(part["text"])
        if "audio" in part:
            audio += audio_tokens(_audio_bytes(part["audio"]))
    return text, audio


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _without_audio(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as the server echoes it: audio bytes are not sent back."""
    out = dict(item)
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [
            {k: v for k, v in part.items() if k != "audio"} if isinstance(part, dict) else part
            for part in content
        ]
    return out


class _ClientError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclasses.dataclass
class _Item:
    item: dict[str, Any]
    text: int
    audio: int


class RealtimeSession:
    """One Realtime connection: its session, conversation, input audio buffer and the cache prefix."""

    def __init__(self, socket: Socket, model: str, headers: Mapping[str, str], *, beta: bool) -> None:
        self.socket = socket
        self.headers = headers
        self.beta = beta
        self.names = BETA_NAMES if beta else GA_NAMES
        self.requested_model = model
        self.model = Knobs.from_headers(headers).model or model
        self.conversation_id = Ids.make("conv_sim")
        self.items: list[_Item] = []
        self.buffer = bytearray()
        self.cached = (0, 0)  # (text, audio) input of the previous response
        self.session = self._default_session()

    def _default_session(self) -> dict[str, Any]:
        sid = Ids.make("sess_sim")
        if self.beta:
            return {
                "id": sid,
                "object": "realtime.session",
                "model": self.model,
                "modalities": ["text", "audio"],
                "instructions": "",
                "voice": "alloy",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": None,
                "turn_detection": None,
                "tools": [],
                "tool_choice": "auto",
                "temperature": 0.8,
                "max_response_output_tokens": "inf",
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": sid,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": int(time.time()) + 3600,
            "audio": {
                "input": {
                    "format": PCM,
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": None,
                },
                "output": {"format": PCM, "voice": "alloy", "speed": 1.0},
            },
            "include": None,
        }

    async def emit(self, event_type: str, **payload: Any) -> None:
        await self.socket.send({"type": event_type, "event_id": Ids.make("event_sim"), **payload})

    def event(self, event_type: str, **payload: Any) -> Event:
        return {"type": event_type, "event_id": Ids.make("event_sim"), **payload}

    async def error(self, code: str, message: str, param: str | None, client_event_id: Any) -> None:
        error = {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id if isinstance(client_event_id, str) else None,
        }
        await self.emit("error", error=error)

    async def run(self) -> None:
        await self.emit("session.created", session=self.session)
        while (message := await self.socket.recv()) is not None:
            try:
                frame = json.loads(message)
            except ValueError:
                await self.error("invalid_json", "The message is not valid JSON.", None, None)
                continue
            if not isinstance(frame, dict):
                await self.error("invalid_json", "The message is not a JSON object.", None, None)
                continue
            try:
                if not await self.handle(frame):
                    return
            except _ClientError as e:
                await self.error(e.code, e.message, e.param, frame.get("event_id"))

    async def handle(self, frame: dict[str, Any]) -> bool:
        """Answer one client event; False when the connection was dropped."""
        kind = frame.get("type")
        if kind == "session.update":
            update = frame.get("session")
            if not isinstance(update, dict):
                raise _ClientError("missing_required_parameter", "Missing 'session'.", "session")
            self.session = _merge(self.session, update)
            await self.emit("session.updated", session=self.session)
        elif kind == "conversation.item.create":
            await self._create_item(frame)
        elif kind == "input_audio_buffer.append":
            try:
                self.buffer += base64.b64decode(str(frame.get("audio", "")), validate=True)
            except binascii.Error as e:
                raise _ClientError("invalid_value", "'audio' is not valid base64.", "audio") from e
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            self.buffer.clear()
            await self.emit("input_audio_buffer.cleared")
        elif kind == "response.create":
            return await self._respond(frame)
        elif kind == "response.cancel":
            raise _ClientError("response_cancel_not_active", "There is no active response to cancel.")
        else:
            raise _ClientError("invalid_value", f"Invalid value: {kind!r} is not a supported event.", "type")
        return True

    @property
    def _last_item_id(self) -> str | None:
        return self.items[-1].item["id"] if self.items else None

    async def _added(self, item: dict[str, Any], previous: str | None) -> None:
        if self.beta:
            await self.emit("conversation.item.created", previous_item_id=previous, item=item)
        else:
            await self.emit("conversation.item.added", previous_item_id=previous, item=item)
            await self.emit("conversation.item.done", previous_item_id=previous, item=item)

    async def _create_item(self, frame: dict[str, Any]) -> None:
        item = frame.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _ClientError("missing_required_parameter", "Missing 'item'.", "item")
        try:
            text, audio = item_tokens(item)
        except (binascii.Error, ValueError) as e:
            raise _ClientError("invalid_value", "'audio' is not valid base64.", "item.content") from e
        stored = _without_audio(
            {**item, "id": item.get("id") or Ids.make("item_sim"), "object": "realtime.item"}
        )
        stored.setdefault("status", "completed")
        previous = self._last_item_id
        self.items.append(_Item(stored, text, audio))
        await self._added(stored, previous)

    async def _commit(self) -> None:
        if not self.buffer:
            raise _ClientError("input_audio_buffer_commit_empty", "The input audio buffer is empty.")
        item = {
            "id": Ids.make("item_sim"),
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self._last_item_id
        self.items.append(_Item(item, MESSAGE_OVERHEAD, audio_tokens(len(self.buffer))))
        self.buffer.clear()
        await self.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item["id"])
        await self._added(item, previous)

    # ---- responses --------------------------------------------------------------------------------

    def _setting(self, options: Mapping[str, Any], ga: str, beta: str) -> Any:
        name = beta if self.beta else ga
        return options[name] if name in options else self.session.get(name)

    async def _respond(self, frame: dict[str, Any]) -> bool:
        raw = frame.get("response")
        options: dict[str, Any] = raw if isinstance(raw, dict) else {}
        frame_h = frame_headers(self.headers, options.get("metadata"))
        knobs = Knobs.from_headers(frame_h)
        model_status = per_model(frame_h, "x-sim-model-status", self.requested_model)
        if model_status == "close":
            self.socket.cut()
            return False
        model_delay = per_model(frame_h, "x-sim-model-delay-ms", self.requested_model)
        if model_delay is not None:
            knobs = dataclasses.replace(knobs, delay_ms=knobs.delay_ms + float(model_delay))
        status = int(model_status) if model_status is not None else knobs.status
        if status and status != 200:
            error = openai_error(status)["error"]
            await self.emit("error", error={**error, "event_id": frame.get("event_id")})
            return True
        modalities = self._setting(options, "output_modalities", "modalities") or ["audio"]
        audio = "audio" in modalities
        instructions = options.get("instructions", self.session.get("instructions"))
        limit = self._setting(options, "max_output_tokens", "max_response_output_tokens")
        reply_words = plan("openai", "responses", {}, knobs).reply_words
        per_word = 3 if audio else 1
        truncated = False
        if isinstance(limit, int) and reply_words * per_word > limit:
            reply_words = max(0, limit) // per_word
            truncated = True
        text = plan("openai", "responses", {}, dataclasses.replace(knobs, reply_words=reply_words)).text
        in_text = sum(i.text for i in self.items)
        in_audio = sum(i.audio for i in self.items)
        if isinstance(instructions, str) and instructions.strip():
            in_text += MESSAGE_OVERHEAD + words(instructions)
        cached = self.cached
        self.cached = (in_text, in_audio)
        builder = _ResponseEvents(self, options, modalities, knobs.chunk_words, text, audio)
        final_status = "incomplete" if truncated else "completed"
        usage_in = (in_text, in_audio, cached)
        events = builder.events(final_status, usage_in)
        if not await self.socket.stream(events, knobs, lambda sent: builder.failed(sent, usage_in)):
            return False
        self.items.append(builder.conversation_item())
        return True

    def usage(self, inputs: tuple[int, int, tuple[int, int]], out_text: int, out_audio: int) -> Event:
        in_text, in_audio, (cached_text, cached_audio) = inputs
        input_details: dict[str, Any] = {
            "text_tokens": in_text,
            "audio_tokens": in_audio,
            "cached_tokens": cached_text + cached_audio,
        }
        if not self.beta:
            input_details["image_tokens"] = 0
            input_details["cached_tokens_details"] = {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            }
        total_in, total_out = in_text + in_audio, out_text + out_audio
        return {
            "total_tokens": total_in + total_out,
            "input_tokens": total_in,
            "output_tokens": total_out,
            "input_token_details": input_details,
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }


class _ResponseEvents:
    """The events of one Realtime response."""

    def __init__(
        self,
        session: RealtimeSession,
        options: Mapping[str, Any],
        modalities: list[str],
        chunk: int,
        text: str,
        audio: bool,
    ) -> None:
        self.s = session
        self.options = options
        self.modalities = modalities
        self.pieces = chunk_words(text, chunk)
        self.text = text
        self.audio = audio
        self.rid = Ids.make("resp_sim")
        self.item_id = Ids.make("item_sim")
        self.previous = session._last_item_id

    def response(self, status: str, output: list[Any], usage: Any, details: Any = None) -> Event:
        s = self.s
        out: dict[str, Any] = {
            "object": "realtime.response",
            "id": self.rid,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": s.conversation_id,
        }
        limit = self.options.get("max_output_tokens")
        if s.beta:
            out.update(
                modalities=self.modalities,
                voice=s.session.get("voice", "alloy"),
                output_audio_format="pcm16",
                temperature=s.session.get("temperature", 0.8),
                max_output_tokens=limit if limit is not None else "inf",
            )
        else:
            out.update(
                output_modalities=self.modalities,
                max_output_tokens=limit if limit is not None else "inf",
                audio={"output": {"format": PCM, "voice": "alloy"}},
            )
        out["usage"] = usage
        out["metadata"] = self.options.get("metadata")
        return out

    def item(self, status: str, text: str) -> Event:
        if self.audio:
            part = {"type": "audio" if self.s.beta else "output_audio", "transcript": text}
        else:
            part = {"type": "text" if self.s.beta else "output_text", "text": text}
        return {
            "id": self.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [part] if status != "in_progress" else [],
        }

    def conversation_item(self) -> _Item:
        n = words(self.text)
        return _Item(
            self.item("completed", self.text),
            MESSAGE_OVERHEAD + (0 if self.audio else n),
            audio_tokens(n * OUTPUT_AUDIO_BYTES_PER_WORD) if self.audio else 0,
        )

    def events(self, final_status: str, inputs: tuple[int, int, tuple[int, int]]) -> list[Event]:
        s, names = self.s, self.s.names
        where = {"response_id": self.rid, "item_id": self.item_id, "output_index": 0, "content_index": 0}
        item_status = "incomplete" if final_status == "incomplete" else "completed"
        done_item = self.item(item_status, self.text)
        events = [s.event("response.created", response=self.response("in_progress", [], None))]
        events.append(
            s.event(
                "response.output_item.added",
                response_id=self.rid,
                output_index=0,
                item=self.item("in_progress", ""),
            )
        )
        added = "conversation.item.created" if s.beta else "conversation.item.added"
        events.append(s.event(added, previous_item_id=self.previous, item=self.item("in_progress", "")))
        part_start = {"type": "audio", "transcript": ""} if self.audio else {"type": "text", "text": ""}
        events.append(s.event("response.content_part.added", **where, part=part_start))
        for piece in self.pieces:
            if self.audio:
                events.append(s.event(names["transcript.delta"], **where, delta=piece))
                silence = bytes(OUTPUT_AUDIO_BYTES_PER_WORD * len(piece.split()))
                events.append(
                    s.event(names["audio.delta"], **where, delta=base64.b64encode(silence).decode())
                )
            else:
                events.append(s.event(names["text.delta"], **where, delta=piece))
        if self.audio:
            events.append(s.event(names["audio.done"], **where))
            events.append(s.event(names["transcript.done"], **where, transcript=self.text))
            part_end = {"type": "audio", "transcript": self.text}
        else:
            events.append(s.event(names["text.done"], **where, text=self.text))
            part_end = {"type": "text", "text": self.text}
        events.append(s.event("response.content_part.done", **where, part=part_end))
        events.append(
            s.event("response.output_item.done", response_id=self.rid, output_index=0, item=done_item)
        )
        if not s.beta:
            events.append(s.event("conversation.item.done", previous_item_id=self.previous, item=done_item))
        n = words(self.text)
        usage = s.usage(inputs, n, audio_tokens(n * OUTPUT_AUDIO_BYTES_PER_WORD) if self.audio else 0)
        details = (
            {"type": "incomplete", "reason": "max_output_tokens"} if final_status == "incomplete" else None
        )
        events.append(
            s.event("response.done", response=self.response(final_status, [done_item], usage, details))
        )
        return events

    def failed(self, sent: list[Event], inputs: tuple[int, int, tuple[int, int]]) -> Event:
        """``response.done`` with status failed after the events `sent`; usage counts the output sent."""
        names = self.s.names
        text_kind = names["transcript.delta"] if self.audio else names["text.delta"]
        out_text = sum(words(str(e["delta"])) for e in sent if e["type"] == text_kind)
        out_audio = audio_tokens(
            sum(len(base64.b64decode(str(e["delta"]))) for e in sent if e["type"] == names["audio.delta"])
        )
        error = openai_error(500)["error"]
        details = {
            "type": "failed",
            "error": {"type": "server_error", "code": "server_error", "message": error["message"]},
        }
        usage = self.s.usage(inputs, out_text, out_audio)
        return self.s.event("response.done", response=self.response("failed", [], usage, details))
