"""Webhook delivery: a bus subscriber that POSTs chosen events to the configured hooks.

Each configured hook (`webhooks:` in the config, read at every event so changes apply at once) gets its own
worker thread and bounded queue, so a slow or dead endpoint only delays its own deliveries, never the gateway
(the bus never blocks its publishers) nor the other hooks. A delivery is retried on a connection error, a
timeout, 408, 429 or 5xx, with exponential back-off (`backoff`, doubling, at most `backoff_max`) up to
`max_attempts`; other 4xx answers are final. Every attempt is kept in memory (`deliveries()`, the last
`history` of them) and shown by `GET /api/webhooks/deliveries`.

Payloads: `format: json` sends `{"event", "delivery_id", "timestamp", "data"}`; `format: slack` sends
`{"text": "..."}` (Slack incoming-webhook compatible) with a one-line summary of the event.

Signature (when the hook has a `secret`): header `X-TokenLens-Signature: sha256=<hex>`, the HMAC-SHA256 with
the secret as key of the bytes `<X-TokenLens-Timestamp>.<raw request body>`; `X-TokenLens-Timestamp` is the
Unix time of the attempt in seconds. Receivers recompute it over the exact body bytes and compare with
`hmac.compare_digest`, and may refuse old timestamps (replays). Every request also carries
`X-TokenLens-Event` and `X-TokenLens-Delivery` (the same id on each retry of one delivery).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tokenlens.bus import EventBus, Subscription
from tokenlens.config import Webhook
from tokenlens.money import format_usd

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-TokenLens-Signature"
TIMESTAMP_HEADER = "X-TokenLens-Timestamp"
EVENT_HEADER = "X-TokenLens-Event"
DELIVERY_HEADER = "X-TokenLens-Delivery"
RETRY_STATUSES = frozenset({408, 425, 429})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-TokenLens-Signature` value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _usd(value: Any) -> str:
    try:
        return format_usd(float(value))
    except (TypeError, ValueError):
        return "?"


def summary(event: str, data: dict[str, Any]) -> str:
    """One line for chat (Slack-compatible payloads)."""
    if event == "alert":
        return (
            f"TokenLens alert: spend today {_usd(data.get('spent_usd'))} crossed the daily threshold "
            f"{_usd(data.get('threshold_usd'))} ({data.get('date')})"
        )
    if event == "anomaly":
        who = data.get("source") or "all sources"
        return (
            f"TokenLens anomaly: {data.get('metric')} of {who} on {data.get('date')} is {data.get('value')} "
            f"(14-day mean {data.get('mean')}, std {data.get('std')})"
        )
    if event == "digest":
        top = ", ".join(f"{s['name']} {_usd(s['cost_usd'])}" for s in data.get("top_sources", [])[:3])
        return (
            f"TokenLens weekly digest {data.get('week_start')} to {data.get('week_end')}: "
            f"{_usd(data.get('spend_usd'))} over {data.get('calls')} calls; top sources: {top or 'none'}; "
            f"month projected {_usd((data.get('forecast') or {}).get('projected_month_usd'))}"
        )
    if event == "block":
        return (
            f"TokenLens blocked a call from {data.get('source')} to {data.get('model')}: "
            f"{data.get('blocked_by')} ({data.get('error') or 'no detail'})"
        )
    if event == "budget":
        detail = ", ".join(f"{k}={v}" for k, v in data.items() if not isinstance(v, dict | list))
        return f"TokenLens budget: {detail}"
    return f"TokenLens {event}: {json.dumps(data, default=str)[:500]}"


def payload(hook: Webhook, event: str, data: dict[str, Any], delivery_id: str) -> bytes:
    if hook.format == "slack":
        body: dict[str, Any] = {"text": summary(event, data)}
    else:
        body = {
            "event": event,
            "delivery_id": delivery_id,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "data": data,
        }
    return json.dumps(body, default=str, separators=(",", ":")).encode("utf-8")


@dataclass
class _Job:
    hook: Webhook
    event: str
    data: dict[str, Any]
    delivery_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    queued_at: float = field(default_factory=time.time)


class _Worker:
    """One hook's bounded queue and thread."""

    def __init__(self, dispatcher: WebhookDispatcher, url: str) -> None:
        self.dispatcher = dispatcher
        self.url = url
        self.queue: queue.Queue[_Job] = queue.Queue(maxsize=dispatcher.max_queue)
        self.thread = threading.Thread(target=self._run, name=f"tokenlens-webhook-{url[:40]}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client = self.dispatcher.client_factory()
        try:
            while not self.dispatcher._stopped.is_set():
                try:
                    job = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    self.dispatcher._deliver(client, job)
                except Exception:
                    log.exception("webhook delivery to %s failed unexpectedly", self.url)
                finally:
                    self.queue.task_done()
        finally:
            client.close()


class WebhookDispatcher:
    """Delivers bus events to the hooks that chose them (see the module docstring)."""

    def __init__(
        self,
        bus: EventBus,
        hooks: Callable[[], Sequence[Webhook]],
        *,
        max_queue: int = 1000,
        timeout: float = 5.0,
        max_attempts: int = 6,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        history: int = 500,
        client_factory: Callable[[], httpx.Client] | None = None,
    ) -> None:
        self.bus = bus
        self.hooks = hooks
        self.max_queue = max_queue
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.client_factory = client_factory or (
            lambda: httpx.Client(timeout=httpx.Timeout(self.timeout), follow_redirects=False)
        )
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._history_lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._workers_lock = threading.Lock()
        self._stopped = threading.Event()
        self._sub: Subscription | None = None
        self._reader: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    # ------------------------------------------------------------------------------------------ life cycle

    def start(self) -> WebhookDispatcher:
        self._sub = self.bus.subscribe(wants=self.wants)
        self._reader = threading.Thread(target=self._read, name="tokenlens-webhooks", daemon=True)
        self._reader.start()
        return self

    def wants(self, event: str) -> bool:
        """Whether a configured hook chose `event`: the bus sends (and builds) only those events."""
        return any(event in hook.events for hook in self.hooks())

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        if self._sub is not None:
            self._sub.close()
        if self._reader is not None:
            self._reader.join(timeout)
        for worker in list(self._workers.values()):
            worker.thread.join(timeout)

    def _read(self) -> None:
        assert self._sub is not None
        while not self._stopped.is_set():
            message = self._sub.get(timeout=0.2)
            if message is not None:
                try:
                    self.dispatch(str(message["type"]), message["data"])
                except Exception:
                    log.exception("webhook dispatch failed")

    # ------------------------------------------------------------------------------------------ queueing

    def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Queue `event` for every hook that chose it (never blocks); the number of deliveries queued."""
        queued = 0
        for hook in self.hooks():
            if event not in hook.events:
                continue
            job = _Job(hook, event, data)
            try:
                self._worker(hook.url).queue.put_nowait(job)
                queued += 1
            except queue.Full:
                self.dropped += 1
                self._record(job, 0, "dropped", None, "the hook's queue is full")
        return queued

    def _worker(self, url: str) -> _Worker:
        with self._workers_lock:
            worker = self._workers.get(url)
            if worker is None:
                worker = self._workers[url] = _Worker(self, url)
            return worker

    def pending(self) -> int:
        return sum(w.queue.unfinished_tasks for w in list(self._workers.values()))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery is finished (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.02)
        return self.pending() == 0

    # ------------------------------------------------------------------------------------------ delivery

    def _deliver(self, client: httpx.Client, job: _Job) -> None:
        body = payload(job.hook, job.event, job.data, job.delivery_id)
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "TokenLens-Webhooks",
                EVENT_HEADER: job.event,
                DELIVERY_HEADER: job.delivery_id,
                TIMESTAMP_HEADER: timestamp,
            }
            if job.hook.secret:
                headers[SIGNATURE_HEADER] = sign(job.hook.secret, timestamp, body)
            status: int | None = None
            problem: str | None = None
            started = time.monotonic()
            try:
                response = client.post(job.hook.url, content=body, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"[:300]
            elapsed = round((time.monotonic() - started) * 1000, 1)
            if status is not None and 200 <= status < 300:
                self.delivered += 1
                self._record(job, attempt, "delivered", status, None, elapsed)
                return
            retry = status is None or status >= 500 or status in RETRY_STATUSES
            last = attempt == self.max_attempts or not retry
            outcome = "failed" if last else "retrying"
            self._record(job, attempt, outcome, status, problem, elapsed)
            if last:
                self.failed += 1
                log.warning("webhook %s to %s failed after %d attempt(s)", job.event, job.hook.url, attempt)
                return
            if self._stopped.wait(delay):
                return
            delay = min(delay * 2, self.backoff_max)

    def _record(
        self,
        job: _Job,
        attempt: int,
        outcome: str,
        status: int | None,
        problem: str | None,
        elapsed_ms: float | None = None,
    ) -> None:
        entry = {
            "delivery_id": job.delivery_id,
            "url": job.hook.url,
            "event": job.event,
            "format": job.hook.format,
            "attempt": attempt,
            "outcome": outcome,
            "status": status,
            "error": problem,
            "elapsed_ms": elapsed_ms,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        with self._history_lock:
            self._history.append(entry)

    def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last `limit` delivery attempts, newest first."""
        with self._history_lock:
            items = list(self._history)
        return items[::-1][:limit]

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": self.pending(),
            "hooks": len(self._workers),
        }
