"""`GET /api/usage/sessions` and `/sessions/<id>` (docs/analytics-api.md): both kinds or one, pages by cursor, bad parameters
named, unknown runs 404. The figures themselves are checked in tests/core/test_sessions.py and
tests/core/store/test_session_rollups.py."""

from __future__ import annotations

from flask.testing import FlaskClient

from harness.clock import today_from
from tokenlens.app import AppDeps
from tokenlens.records import CallRecord


def runs(deps: AppDeps, count: int, start: float) -> list[str]:
    """`count` one-call sessions a minute apart and one conversation; the session ids, newest first."""
    calls = [
        CallRecord(
            id=f"c{i}",
            ts=start + 60 * i,
            provider="openai",
            endpoint="/v1/chat/completions",
            source="codex",
            model="gpt-4o",
            input_tokens=100 + i,
            output_tokens=10,
            cost_usd=0.001 * (i + 1),
            priced=True,
            session_id=f"run-{i:02d}",
            turn=1,
        )
        for i in range(count)
    ]
    calls.append(
        CallRecord(
            id="loose", ts=start, provider="openai", endpoint="/v1/x", conversation_id="conv-x", turn=1
        )
    )
    deps.store.insert_calls(calls)
    return [f"run-{i:02d}" for i in reversed(range(count))]


def test_both_kinds_are_listed_and_one_kind_pages_by_cursor(
    web_deps: AppDeps, web_client: FlaskClient
) -> None:
    expected = runs(web_deps, 7, today_from(3600))
    body = web_client.get("/api/usage/sessions?days=1").get_json()
    assert [s["id"] for s in body["sessions"]] == expected
    assert [c["id"] for c in body["conversations"]] == ["conv-x"]
    assert body["next"] == {"session": None, "conversation": None} and body["days"] == 1
    seen: list[str] = []
    url = "/api/usage/sessions?days=1&kind=session&limit=3"
    while True:
        page = web_client.get(url).get_json()
        assert "conversations" not in page
        seen += [s["id"] for s in page["sessions"]]
        if page["next"]["session"] is None:
            break
        url = f"/api/usage/sessions?days=1&kind=session&limit=3&before={page['next']['session']}"
    assert seen == expected


def test_bad_parameters_are_named(web_deps: AppDeps, web_client: FlaskClient) -> None:
    runs(web_deps, 2, today_from(600))
    for query, field in (
        ("kind=runs", "kind"),
        ("before=abc", "before"),
        ("kind=session&before=not-a-cursor", "before"),
        ("days=0", "days"),
    ):
        response = web_client.get(f"/api/usage/sessions?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["field"] == field, query
    assert len(web_client.get("/api/usage/sessions?limit=5000").get_json()["sessions"]) == 2  # clamped


def test_one_run_or_404(web_deps: AppDeps, web_client: FlaskClient) -> None:
    runs(web_deps, 2, today_from(600))
    run = web_client.get("/api/usage/sessions/run-01").get_json()
    assert run["kind"] == "session" and [t["call_id"] for t in run["timeline"]] == ["c1"]
    assert web_client.get("/api/usage/sessions/conv-x").get_json()["kind"] == "conversation"
    missing = web_client.get("/api/usage/sessions/no-such-run")
    assert missing.status_code == 404 and "no-such-run" in missing.get_json()["error"]


def test_the_last_full_page_has_no_next_cursor(web_deps: AppDeps, web_client: FlaskClient) -> None:
    """Six sessions in pages of three: the second page is the last, so it gives no cursor to an empty page."""
    expected = runs(web_deps, 6, today_from(3600))
    first = web_client.get("/api/usage/sessions?days=1&kind=session&limit=3").get_json()
    assert [s["id"] for s in first["sessions"]] == expected[:3] and first["next"]["session"] is not None
    url = f"/api/usage/sessions?days=1&kind=session&limit=3&before={first['next']['session']}"
    second = web_client.get(url).get_json()
    assert [s["id"] for s in second["sessions"]] == expected[3:]
    assert second["next"]["session"] is None
