"""The fallback-chain service: an HTTP/1.1 server on mitmproxy's own asyncio loop (127.0.0.1, a free port).

mitmproxy cannot restart a flow once its request went upstream (shared/notes/mitmproxy.md, section 3, design 2).
So a call whose routed model has a fallback chain is sent here instead of upstream (the upstream stage points
the flow at this server with the `x-tokenlens-chain` token). The service tries each model of the chain with a
pooled httpx client, and the first answer that is neither 429 nor 5xx, or the last upstream's own answer, is
piped back as it arrives (raw bytes, chunk by chunk), so mitmproxy taps and meters it like any other answer.
Nothing reaches the client before an answer is chosen, so a fallback happens only before the first byte.
Only those flows pay the extra loopback hop; every other call keeps mitmproxy's direct path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

from tokenlens.config import ProviderSettings
from tokenlens.exchange import Exchange
from tokenlens.providers import error_body
from tokenlens.routing import HOP_HEADERS, RequestParts, Target, is_retryable, request_for

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-tokenlens-chain"
_READ = 64 * 1024


@dataclass
class ChainJob:
    exchange: Exchange
    api: str
    targets: tuple[Target, ...]
    first: RequestParts  # attempt 1, exactly as mitmproxy would have sent it
    base: RequestParts  # the request on the client's own provider, for the other attempts
    base_model: str | None
    providers: Mapping[str, ProviderSettings]
    failed: list[dict[str, Any]] = field(default_factory=list)

    def parts(self, index: int) -> RequestParts:
        if index == 0:
            return self.first
        return request_for(self.api, self.base, self.base_model, self.targets[index], self.providers)


def upstream_ssl_context(trusted_ca: str | None, insecure: bool) -> ssl.SSLContext:
    """The same upstream trust as mitmproxy's (`ssl_verify_upstream_trusted_ca`, `ssl_insecure`)."""
    context = ssl.create_default_context()
    if trusted_ca:
        context.load_verify_locations(cafile=trusted_ca)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ChainService:
    """Serves the chain flows; `start` on the running loop, `stop` on shutdown."""

    def __init__(self) -> None:
        self.jobs: dict[str, ChainJob] = {}
        self.port = 0
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def ready(self) -> bool:
        return self._server is not None

    async def start(self, verify: ssl.SSLContext | bool = True) -> None:
        if self._server is not None:
            return
        self._client = httpx.AsyncClient(
            verify=verify,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(connect=10.0, read=3600.0, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
        self._client.headers.clear()  # send exactly the client's headers (no added accept-encoding)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def submit(self, job: ChainJob) -> str:
        token = secrets.token_urlsafe(16)
        self.jobs[token] = job
        return token

    # --- HTTP/1.1 server side -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, more = await self._read_request(conn, reader)
                if request is None:
                    return
                token = _header(request.headers, TOKEN_HEADER)
                job = self.jobs.pop(token, None) if token else None
                if job is None:
                    await self._send_plain(conn, writer, 404, b"unknown chain token")
                else:
                    await self._run(job, conn, writer)
                if not more or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bool]:
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ)
                conn.receive_data(data)
                if not data and request is None:
                    return None, False
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request, True
            elif isinstance(event, h11.ConnectionClosed):
                return None, False

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes | None) -> None:
        if data:
            writer.write(data)
            await writer.drain()

    async def _send_plain(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes
    ) -> None:
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        await self._write(writer, conn.send(h11.Response(status_code=status, headers=headers)))
        await self._write(writer, conn.send(h11.Data(data=body)))
        await self._write(writer, conn.send(h11.EndOfMessage()))

    # --- the chain ------------------------------------------------------------------------------------

    async def _run(self, job: ChainJob, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        assert self._client is not None
        last = len(job.targets) - 1
        for index, target in enumerate(job.targets):
            parts = job.parts(index)
            started = time.time()
            try:
                request = self._client.build_request(
                    parts.method, parts.url, headers=list(parts.headers), content=parts.body
                )
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as problem:
                self._failed(job, index, target, None, f"{type(problem).__name__}: {problem}", started)
                if index == last:
                    await self._answer_unreachable(job, conn, writer, problem)
                    return
                continue
            if index < last and is_retryable(response.status_code):
                body = await _read_quietly(response)
                self._failed(job, index, target, response.status_code, _error_text(body), started)
                continue
            if is_retryable(response.status_code):
                body = await _read_quietly(response)
                self._failed(job, index, target, response.status_code, _error_text(body), started)
                self._settle(job, index, target, parts)
                await self._relay_buffered(conn, writer, response, body)
                return
            self._settle(job, index, target, parts)
            await self._relay(conn, writer, response)
            return

    def _failed(
        self, job: ChainJob, index: int, target: Target, status: int | None, error: str, started: float
    ) -> None:
        job.failed.append(
            {
                "attempt": index + 1,
                "model": target.model,
                "provider": target.provider,
                "status": status,
                "error": error[:500],
                "latency_ms": round((time.time() - started) * 1000, 3),
            }
        )
        job.exchange.details["attempts"] = list(job.failed)
        job.exchange.attempts = index + 1
        if index > 0:
            job.exchange.fallback_from = job.targets[0].model

    @staticmethod
    def _settle(job: ChainJob, index: int, target: Target, parts: RequestParts) -> None:
        """The answer comes from this attempt: the exchange names its model, provider and endpoint."""
        exchange = job.exchange
        exchange.attempts = index + 1
        exchange.fallback_from = job.targets[0].model if index > 0 else None
        exchange.model = target.model
        exchange.provider = target.provider
        exchange.endpoint = httpx.URL(parts.url).path

    async def _relay(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: httpx.Response
    ) -> None:
        try:
            await self._write(writer, conn.send(_h11_response(response)))
            async for chunk in response.aiter_raw():
                await self._write(writer, conn.send(h11.Data(data=chunk)))
            await self._write(writer, conn.send(h11.EndOfMessage()))
        except httpx.HTTPError as problem:
            log.info("chain: the upstream broke off the answer: %s", problem)
            writer.transport.abort()  # the client sees the stream cut, as on the direct path
        finally:
            await response.aclose()

    async def _relay_buffered(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: httpx.Response, body: bytes
    ) -> None:
        await self._write(writer, conn.send(_h11_response(response)))
        await self._write(writer, conn.send(h11.Data(data=body)))
        await self._write(writer, conn.send(h11.EndOfMessage()))

    async def _answer_unreachable(
        self, job: ChainJob, conn: h11.Connection, writer: asyncio.StreamWriter, problem: Exception
    ) -> None:
        """Every model failed and the last one could not be reached: a 502 in the client's format."""
        exchange = job.exchange
        target = job.targets[-1]
        exchange.model, exchange.provider = target.model, target.provider
        exchange.error = f"upstream: {problem}"
        message = f"TokenLens could not get an answer from the {target.provider} upstream: {problem}"
        body = error_body(exchange.api, 502, message, "upstream_unavailable")
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-tokenlens-error", "upstream_unavailable"),
        ]
        await self._write(writer, conn.send(h11.Response(status_code=502, headers=headers)))
        await self._write(writer, conn.send(h11.Data(data=body)))
        await self._write(writer, conn.send(h11.EndOfMessage()))


def _header(headers: Any, name: str) -> str | None:
    wanted = name.encode()
    for key, value in headers:
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def _h11_response(response: httpx.Response) -> h11.Response:
    headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_HEADERS]
    return h11.Response(
        status_code=response.status_code, headers=headers, reason=response.reason_phrase.encode()
    )


async def _read_quietly(response: httpx.Response) -> bytes:
    """The raw body of an answer not passed on (an error); what arrived when the upstream breaks off."""
    chunks: list[bytes] = []
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()
    return b"".join(chunks)


def _error_text(body: bytes) -> str:
    """The upstream's error message when its body says one, else the start of the body."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return json.dumps(value)[:200]
