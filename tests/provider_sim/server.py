"""A small asyncio HTTP/1.1 server (keep-alive, chunked bodies both ways) running in its own thread."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import ssl
import threading
import time
import zlib
from collections.abc import Mapping
from email.utils import formatdate
from types import TracebackType
from typing import Any

from . import certs, websocket
from .router import Counters, dispatch, error_reply, new_request_id, provider_headers, route
from .usage import Knobs, Plan, plan
from .wire import REASONS, ReceivedRequest, Reply, per_model

GARBAGE = b"\x00\x01\x02\xff\xfeSIMULATED GARBAGE: this is not an HTTP response\r\n\r\n\x00"
MAX_HEADER_BYTES = 64 * 1024


class _BadRequest(Exception):
    pass


def _requested_model(req: ReceivedRequest) -> str:
    if websocket.wants_upgrade(req):
        return websocket.upgrade_model(req)
    found = route(req).model
    if found:
        return found
    try:
        body = req.json()
    except (ValueError, OSError):
        return ""
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


class _DateCache:
    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as e:
            raise _BadRequest("bad chunk size") from e
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Simulator:
    """Fake OpenAI, Anthropic and Google AI endpoints on 127.0.0.1 (plain HTTP and, optionally, HTTPS).

    Use as a context manager or call `start()` / `stop()`. Every request is appended to `requests`.
    Knobs are ``x-sim-*`` request headers (see `usage.Knobs`), or defaults from `set_default_headers`.
    """

    def __init__(
        self,
        *,
        https: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        https_port: int = 0,
        certs_dir: str | None = None,
    ) -> None:
        self._https = https
        self._host = host
        self._port = port
        self._https_port = https_port
        self._certs_dir = certs_dir
        self.url: str = ""
        self.https_url: str | None = None
        self.ca_file: str | None = None
        self.requests: list[ReceivedRequest] = []
        self._requests_lock = threading.Lock()
        self._defaults: dict[str, str] = {}
        self._counters = Counters()
        self._dates = _DateCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.https_port: int | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="provider-sim", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start_servers(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _start_servers(self) -> None:
        server = await asyncio.start_server(self._serve, self._host, self._port, backlog=1024)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{self.port}"
        if self._https:
            files = certs.generate(self._certs_dir) if self._certs_dir else certs.shared_certs()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(files.cert_file, files.key_file)
            context.set_alpn_protocols(["http/1.1"])
            tls = await asyncio.start_server(
                self._serve_tls, self._host, self._https_port, ssl=context, backlog=1024
            )
            self._servers.append(tls)
            self.https_port = tls.sockets[0].getsockname()[1]
            self.https_url = f"https://localhost:{self.https_port}"
            self.ca_file = files.ca_file

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        self._loop = None
        self._thread = None

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- state ---------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget the recorded requests and reset the rate-limit counters."""
        with self._requests_lock:
            self.requests.clear()
        self._counters = Counters()

    def set_default_headers(self, headers: Mapping[str, str]) -> None:
        """Knob headers applied to every request that does not set them itself (replaces earlier defaults)."""
        self._defaults = {k.lower(): str(v) for k, v in headers.items()}

    @property
    def default_headers(self) -> dict[str, str]:
        return dict(self._defaults)

    def knob_headers(self, headers: Mapping[str, str] = {}) -> dict[str, str]:
        """The defaults overlaid with `headers` (what a request with these headers is answered with)."""
        return {**self._defaults, **{k.lower(): v for k, v in headers.items()}}

    def plan(
        self, provider: str, endpoint: str, request_json: Mapping[str, Any], headers: Mapping[str, str] = {}
    ) -> Plan:
        return plan(provider, endpoint, request_json, self.knob_headers(headers))

    def expected_usage(
        self, provider: str, endpoint: str, request_json: Mapping[str, Any], headers: Mapping[str, str] = {}
    ) -> dict[str, int | None]:
        """`provider_sim.expected_usage` with this simulator's default headers applied."""
        return self.plan(provider, endpoint, request_json, headers).normalized()

    def reply_text(
        self, provider: str, endpoint: str, request_json: Mapping[str, Any], headers: Mapping[str, str] = {}
    ) -> str:
        return self.plan(provider, endpoint, request_json, headers).text

    def base_url(self, provider: str, *, https: bool = False) -> str:
        """The base URL an SDK of `provider` takes (openai: ``.../v1``; anthropic and google: the root)."""
        root = self.https_url if https else self.url
        if root is None:
            raise RuntimeError("HTTPS is not enabled on this simulator")
        return root + "/v1" if provider == "openai" else root

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts this simulator's CA (for ``httpx.Client(verify=...)``)."""
        if self.ca_file is None:
            raise RuntimeError("HTTPS is not enabled on this simulator")
        return ssl.create_default_context(cafile=self.ca_file)

    @property
    def last_request(self) -> ReceivedRequest:
        with self._requests_lock:
            return self.requests[-1]

    def _record(self, req: ReceivedRequest) -> None:
        with self._requests_lock:
            self.requests.append(req)

    # ---- HTTP ----------------------------------------------------------------------------------------

    async def _serve_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, tls=True)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool = False
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._one(reader, writer, tls):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> bool:
        """Serve one request; False when the connection must be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        try:
            lines = head[:-4].decode("latin-1").split("\r\n")
            while lines and not lines[0]:
                lines.pop(0)
            method, target, version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise _BadRequest(line)
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = await _read_chunked(reader)
            else:
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
        except (ValueError, _BadRequest):
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        if "://" in target:  # absolute-form (a proxy that forwards the full URL)
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        req = ReceivedRequest(method.upper(), path, query, headers, body, tls=tls)
        self._record(req)
        try:
            return await self._respond(req, reader, writer, keep_alive, version == "HTTP/1.1")
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - a bad knob value or a simulator bug: say so, keep serving
            body = json.dumps(
                {
                    "error": {
                        "message": f"provider-sim error: {e!r}",
                        "type": "simulator_error",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode()
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            return False

    async def _respond(
        self,
        req: ReceivedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
        http11: bool,
    ) -> bool:
        headers = {**self._defaults, **req.headers} if self._defaults else req.headers
        knobs = Knobs.from_headers(headers)
        if "x-sim-model-status" in headers or "x-sim-model-delay-ms" in headers:
            model = _requested_model(req)
            status = per_model(headers, "x-sim-model-status", model)
            if status == "close":
                return False  # the connection is closed without an answer
            delay = per_model(headers, "x-sim-model-delay-ms", model)
            if status is not None:
                knobs = dataclasses.replace(knobs, status=int(status))
            if delay is not None:
                knobs = dataclasses.replace(knobs, delay_ms=knobs.delay_ms + float(delay))
        if knobs.delay_ms > 0:
            await asyncio.sleep(knobs.delay_ms / 1000)
        if knobs.garbage:
            writer.write(GARBAGE)
            await writer.drain()
            return False
        if websocket.wants_upgrade(req) and not (knobs.status and knobs.status != 200):
            return await self._upgrade(req, reader, writer, headers, knobs)
        reply = dispatch(req, knobs, self._counters)
        if reply.events is None:
            req.first_write_at = time.time()
            await self._write_body(reply, writer, keep_alive, knobs)
            return keep_alive
        return await self._write_stream(reply, writer, keep_alive and http11, http11, knobs, req)

    async def _upgrade(
        self,
        req: ReceivedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: Mapping[str, str],
        knobs: Knobs,
    ) -> bool:
        """Serve a WebSocket endpoint (see `provider_sim.websocket`); the connection ends with the socket."""
        request_id = new_request_id("openai")
        if req.path == websocket.REALTIME_PATH and not websocket.upgrade_model(req):
            reply = error_reply("openai", 400, request_id, "Missing required parameter: 'model'.")
            await self._write_body(reply, writer, False, knobs)
            return False
        extra = [("date", self._dates.get()), *provider_headers("openai", request_id, self._counters, 0)]
        await websocket.serve(req, reader, writer, headers, extra)
        return False

    def _head(self, reply: Reply, extra: list[tuple[str, str]]) -> bytes:
        lines = [
            f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}",
            f"date: {self._dates.get()}",
            f"content-type: {reply.content_type}",
        ]
        lines += [f"{k}: {v}" for k, v in reply.headers]
        lines += [f"{k}: {v}" for k, v in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _write_body(
        self, reply: Reply, writer: asyncio.StreamWriter, keep_alive: bool, knobs: Knobs
    ) -> None:
        body = reply.body
        extra = []
        if knobs.gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            extra.append(("content-encoding", "gzip"))
        extra.append(("content-length", str(len(body))))
        if not keep_alive:
            extra.append(("connection", "close"))
        writer.write(self._head(reply, extra) + body)
        await writer.drain()

    async def _write_stream(
        self,
        reply: Reply,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
        chunked: bool,
        knobs: Knobs,
        req: ReceivedRequest | None = None,
    ) -> bool:
        events = reply.events or []
        extra = [("cache-control", "no-cache")]
        if knobs.gzip:
            extra.append(("content-encoding", "gzip"))
        extra.append(("transfer-encoding", "chunked") if chunked else ("connection", "close"))
        if chunked and not keep_alive:
            extra.append(("connection", "close"))
        out = [self._head(reply, extra)]  # written in one go unless events are spaced out
        cut: int | None = None
        if knobs.cut_after is not None:
            last = reply.usage_index if reply.usage_index is not None else len(events) - 1
            cut = max(0, min(knobs.cut_after, last))
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if knobs.gzip else None
        delay = knobs.chunk_delay_ms / 1000
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                writer.write(b"".join(out))
                await writer.drain()
                writer.close()  # abrupt: the terminating chunk never comes
                return False
            if i and delay > 0:
                if req is not None and req.first_write_at is None:
                    req.first_write_at = time.time()
                writer.write(b"".join(out))
                out.clear()
                await writer.drain()
                await asyncio.sleep(delay)
            data = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH) if compressor else event
            out.append(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        tail = compressor.flush() if compressor else b""
        if tail:
            out.append(b"%x\r\n%s\r\n" % (len(tail), tail) if chunked else tail)
        if chunked:
            out.append(b"0\r\n\r\n")
        if req is not None and req.first_write_at is None:
            req.first_write_at = time.time()
        writer.write(b"".join(out))
        await writer.drain()
        return keep_alive and chunked
