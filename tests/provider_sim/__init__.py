"""A fake of the OpenAI, Anthropic and Google AI HTTP APIs for tests and benchmarks.

Speaks the real wire formats (JSON, SSE, Gemini's streamed JSON array, and over WebSocket the OpenAI
Responses API WebSocket mode and the Realtime API) on 127.0.0.1, answers deterministically (see
`provider_sim.usage` for the token rule, `provider_sim.realtime_api` for audio) and injects faults on
request (``x-sim-*`` headers, see `provider_sim.usage.Knobs` and `provider_sim.websocket`).

    with Simulator() as sim:
        client = openai.OpenAI(base_url=sim.base_url("openai"), api_key="sk-test", max_retries=0)
        ...
        assert usage == expected_usage("openai", "chat", request_json)

Run it in the foreground with ``python -m provider_sim --port 9001 [--https-port 9443]`` (from ``tests/``).
"""

from .realtime_api import AUDIO_BYTES_PER_TOKEN, OUTPUT_AUDIO_BYTES_PER_WORD, audio_tokens
from .server import Simulator
from .usage import (
    DATED_MODELS,
    DEFAULT_REPLY_WORDS,
    MESSAGE_OVERHEAD,
    REPLY_SENTENCE,
    THINKING_SENTENCE,
    Knobs,
    Plan,
    endpoint_kind,
    expected_usage,
    plan,
    reply_text,
    thinking_text,
)
from .wire import ReceivedRequest

__all__ = [
    "AUDIO_BYTES_PER_TOKEN",
    "DATED_MODELS",
    "DEFAULT_REPLY_WORDS",
    "MESSAGE_OVERHEAD",
    "OUTPUT_AUDIO_BYTES_PER_WORD",
    "REPLY_SENTENCE",
    "THINKING_SENTENCE",
    "Knobs",
    "Plan",
    "ReceivedRequest",
    "Simulator",
    "audio_tokens",
    "endpoint_kind",
    "expected_usage",
    "plan",
    "reply_text",
    "thinking_text",
]
