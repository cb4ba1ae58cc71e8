"""What the record writer and the spool thread share: a queue one thread drains in batches.

`submit` is a queue put (it never blocks and never raises, so the proxy's event loop can call it); the worker
thread takes a batch (`_collect`: the first item waits up to `interval` seconds for company, up to
`max_batch`), and reports what it finished (`_finished`), which is what `pending` and `flush` read.
"""

from __future__ import annotations

import queue
import threading
import time

STOP = object()  # put by `stop()`: the worker drains what is left and ends


class BatchQueue[T]:
    def __init__(self, interval: float, max_batch: int) -> None:
        self.interval = interval
        self.max_batch = max(1, max_batch)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._submitted = 0
        self._done = 0  # items taken off the queue and finished with
        self._count_lock = threading.Lock()
        self._done_cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread  # the worker, started by the subclass

    def submit(self, item: T) -> None:
        """Queue an item (a queue put: never blocks, never raises, no I/O)."""
        with self._count_lock:
            self._submitted += 1
            self._queue.put(item)

    @property
    def pending(self) -> int:
        """Items submitted and not finished yet."""
        return self._submitted - self._done

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _busy(self) -> bool:
        """Besides the items: whether the worker still owes something before `flush` may return."""
        return False

    def flush(self, timeout: float = 5) -> bool:
        """Wait until every item submitted before this call is finished; False on timeout."""
        target = self._submitted
        deadline = time.monotonic() + timeout
        with self._done_cond:
            while self._done < target or self._busy():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.alive:
                    return self._done >= target and not self._busy()
                self._before_wait()
                self._done_cond.wait(min(remaining, 0.1))
        return True

    def _before_wait(self) -> None:
        """Called (with the condition held) each time `flush` waits."""

    def _finished(self, count: int) -> None:
        with self._done_cond:
            self._done += count
            self._done_cond.notify_all()

    def _collect(self) -> tuple[list[T], bool]:
        """The next batch, and whether the stop marker was seen."""
        try:
            first = self._queue.get(timeout=self.interval)
        except queue.Empty:
            return [], False
        if first is STOP:
            return self._drain(), True
        batch: list[T] = [first]  # type: ignore[list-item]
        deadline = time.monotonic() + self.interval
        while len(batch) < self.max_batch:
            try:
                if self._stopping:
                    item = self._queue.get_nowait()
                else:
                    remaining = deadline - time.monotonic()
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is STOP:
                return batch + self._drain(), True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _drain(self) -> list[T]:
        return [item for item in drain_queue(self._queue) if item is not STOP]  # type: ignore[misc]


def drain_queue(source: queue.SimpleQueue[object]) -> list[object]:
    """Everything in the queue now, without waiting."""
    items: list[object] = []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items
