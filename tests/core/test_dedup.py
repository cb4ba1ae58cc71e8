from __future__ import annotations

from tokenlens.dedup import DedupStore, Entry, canonical_body, credential_digest, request_key


def entry(size: int = 10, at: float = 1000.0) -> Entry:
    return Entry("id", 200, {"content-type": "application/json"}, b"x" * size, at)


def key(**kw: str) -> str:
    base = {
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "query": "",
        "model": "gpt-4o",
        "credential": credential_digest([("Authorization", "Bearer a")]),
    }
    base.update(kw)
    return request_key(body=b"{}", **base)  # type: ignore[arg-type]


def test_ttl_expires_entries() -> None:
    cache = DedupStore()
    cache.put("k", entry(at=1000.0))
    assert cache.get("k", ttl_s=300, now=1299.0) is not None
    assert cache.get("k", ttl_s=300, now=1301.0) is None and len(cache) == 0 and cache.bytes == 0


def test_bounded_in_entries_and_bytes_least_recently_used_first() -> None:
    cache = DedupStore(max_entries=2)
    cache.put("a", entry())
    cache.put("b", entry())
    cache.get("a", ttl_s=1e12)
    cache.put("c", entry())
    assert cache.get("b", ttl_s=1e12) is None and cache.get("a", ttl_s=1e12) and cache.get("c", ttl_s=1e12)
    small = DedupStore(max_entries=100, max_bytes=1000)
    for name in "abcde":
        small.put(name, entry(size=300))
    assert small.bytes <= 1000 and len(small) == 1 + (1000 - 556) // 556
    assert not small.put("huge", entry(size=5000))


def test_key_separates_credentials_models_and_bodies_but_not_key_order() -> None:
    other = credential_digest([("Authorization", "Bearer b")])
    assert key() != key(credential=other) and key() != key(model="gpt-4o-mini")
    assert key() != key(query="alt=sse")
    assert canonical_body({"b": 1, "a": [1, 2]}, b"") == canonical_body({"a": [1, 2], "b": 1}, b"")
    digest = credential_digest([("x-api-key", "sk-ant-secret")])
    assert "sk-ant-secret" not in digest and digest != credential_digest([("x-api-key", "sk-ant-other")])
