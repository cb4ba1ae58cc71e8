from tokenlens.addons.broadcast import Broadcaster
from tokenlens.bus import EventBus
from tokenlens.records import CallRecord


def test_written_records_are_published_as_call_and_block_events() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        Broadcaster(bus).on_written(
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
