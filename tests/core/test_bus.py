from __future__ import annotations

import threading
import time

from tokenlens.bus import EventBus, RecordFanout
from tokenlens.records import CallRecord


def test_publish_without_subscribers_is_a_no_op() -> None:
    bus = EventBus()
    bus.publish("call", {"id": "a"})
    assert bus.published == 1 and bus.dropped == 0


def test_each_subscriber_gets_every_message_in_order() -> None:
    bus = EventBus()
    with bus.subscribe() as one, bus.subscribe() as two:
        bus.publish("call", {"id": "a"})
        bus.publish("alert", {"message": "b"})
        for sub in (one, two):
            assert sub.get(timeout=1) == {"type": "call", "data": {"id": "a"}}
            assert sub.get(timeout=1) == {"type": "alert", "data": {"message": "b"}}
            assert sub.get(timeout=0) is None
    assert bus.subscriber_count == 0


def test_get_times_out_with_none() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    started = time.monotonic()
    assert sub.get(timeout=0.1) is None
    assert 0.05 <= time.monotonic() - started < 2
    bus.unsubscribe(sub)
    bus.unsubscribe(sub)  # idempotent
    assert sub.closed


def test_slow_subscriber_loses_messages_without_blocking_the_publisher() -> None:
    bus = EventBus(max_queue=10)
    slow = bus.subscribe()
    fast = bus.subscribe()
    started = time.monotonic()
    for i in range(1000):
        bus.publish("call", {"i": i})
        fast.get(timeout=0)
    assert time.monotonic() - started < 1.0
    assert slow.qsize() == 10 and slow.dropped == 990
    assert fast.dropped == 0
    assert bus.dropped == 990
    assert [slow.get(timeout=0)["data"]["i"] for _ in range(10)] == list(range(10))  # type: ignore[index]


def test_unsubscribed_receives_nothing() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.unsubscribe(sub)
    bus.publish("call", {})
    assert sub.get(timeout=0) is None


def test_concurrent_publishers_and_subscription_churn() -> None:
    bus = EventBus(max_queue=100_000)
    steady = bus.subscribe()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with bus.subscribe() as sub:
                sub.get(timeout=0)

    def publish(n: int) -> None:
        for i in range(5000):
            bus.publish("call", {"p": n, "i": i})

    churners = [threading.Thread(target=churn) for _ in range(2)]
    publishers = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for t in churners + publishers:
        t.start()
    for t in publishers:
        t.join()
    stop.set()
    for t in churners:
        t.join()
    received = []
    while (message := steady.get(timeout=0)) is not None:
        received.append((message["data"]["p"], message["data"]["i"]))
    assert len(received) == 20_000
    for n in range(4):  # each publisher's messages arrive in its order
        assert [i for p, i in received if p == n] == list(range(5000))
    assert bus.subscriber_count == 1


def test_a_subscriber_gets_only_the_types_it_wants_and_lazy_data_is_built_only_for_one() -> None:
    bus = EventBus()
    built: list[str] = []

    def make(name: str) -> dict[str, str]:
        built.append(name)
        return {"id": name}

    with bus.subscribe(wants=lambda kind: kind == "alert") as alerts:
        bus.publish_lazy("call", lambda: make("c1"))
        bus.publish("call", {"id": "c2"})
        assert built == [] and not bus.wanted("call") and bus.wanted("alert")
        bus.publish_lazy("alert", lambda: make("a1"))
        assert built == ["a1"]
        assert alerts.get(timeout=0) == {"type": "alert", "data": {"id": "a1"}}
        assert alerts.get(timeout=0) is None
        with bus.subscribe() as everything:
            bus.publish_lazy("call", lambda: make("c3"))
            assert everything.get(timeout=0) == {"type": "call", "data": {"id": "c3"}}
            assert alerts.get(timeout=0) is None
    assert built == ["a1", "c3"]
    assert bus.published == 4 and bus.dropped == 0


def test_written_records_are_published_as_call_and_block_events() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        RecordFanout(bus)(
            [
                CallRecord(
                    id="a", ts=1.0, provider="openai", endpoint="/v1/chat/completions", input_tokens=3
                ),
                CallRecord(
                    id="b", ts=2.0, provider="openai", endpoint="/v1/chat/completions", outcome="blocked"
                ),
            ]
        )
        first, second = sub.get(timeout=1), sub.get(timeout=1)
    assert first is not None and first["type"] == "call" and first["data"]["input_tokens"] == 3
    assert first["data"]["ts"] == "1970-01-01T00:00:01.000Z"
    assert second is not None and second["type"] == "block" and second["data"]["id"] == "b"


def test_listeners_run_in_order_before_the_feed_and_one_failing_does_not_stop_the_others() -> None:
    bus = EventBus()
    seen: list[str] = []

    def failing(records: object) -> None:
        seen.append("failing")
        raise RuntimeError("boom")

    fanout = RecordFanout(bus, [lambda r: seen.append("first"), failing, lambda r: seen.append("last")])
    with bus.subscribe() as sub:
        fanout([CallRecord(id="a", ts=1.0, provider="openai", endpoint="/v1/chat/completions")])
        assert seen == ["first", "failing", "last"]
        message = sub.get(timeout=1)
    assert message is not None and message["type"] == "call"
