"""A read-only data directory makes the API answer 503 with a clear reason, never 500 (issue 17, finding 11d).

The tests run as root, where `chmod` stops nothing; the directory, the database and the configuration file
are made immutable instead (`chattr +i`, refused to root as well), so SQLite and the configuration writer
meet the real failure. A store opened with SQLite's `mode=ro` covers a database that reads but refuses
writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from harness.deps import app_deps
from tokenlens.app import AppDeps
from tokenlens.config import load_settings
from tokenlens.records import CallRecord, iso_utc
from tokenlens.store import open_store
from tokenlens.web import create_app

READS = ["/api/status", "/api/calls", "/api/usage/kpi", "/api/export?format=jsonl", "/api/usage/daily"]
SECTIONS = ["/api/config/quotas", "/api/config/routing", "/api/settings/budget"]


def a_call(call_id: str) -> CallRecord:
    return CallRecord(
        id=call_id,
        ts=time.time(),
        provider="openai",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.01,
        priced=True,
    )


def import_line(call_id: str) -> str:
    fields = {"id": call_id, "ts": iso_utc(time.time()), "provider": "openai", "model": "gpt-4o-mini"}
    return json.dumps({**fields, "input_tokens": 1, "output_tokens": 1}) + "\n"


def chattr(flag: str, paths: list[Path]) -> bool:
    tool = shutil.which("chattr")
    if tool is None:
        return False
    done = subprocess.run([tool, flag, *map(str, paths)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def immutable_home(tmp_path: Path) -> Iterator[tuple[AppDeps, FlaskClient]]:
    """A gateway's data directory with a call and a configuration file, then made immutable."""
    (tmp_path / "config.yaml").write_text("timezone: UTC\n")
    with app_deps(tmp_path, load_settings(tmp_path / "config.yaml")) as deps:
        deps.store.insert_calls([a_call("before")])
        client = create_app(deps, {"TESTING": True}).test_client()
        files = sorted(tmp_path.iterdir())
        # Every connection is closed (no -wal/-shm left), so SQLite must open the file again.
        assert [f.name for f in files] == ["config.yaml", "tokenlens.db"]
        if not chattr("+i", [tmp_path, *files]):
            pytest.skip("chattr +i is not available here (needs root on a file system that supports it)")
        try:
            probe = tmp_path / "probe"
            with pytest.raises(OSError):
                probe.write_text("x")  # the directory really refuses writes, root included
            yield deps, client
        finally:
            chattr("-i", [tmp_path, *files])


def assert_unavailable(response_status: int, body: object, *words: str) -> None:
    assert response_status == 503, body
    assert isinstance(body, dict) and isinstance(body.get("error"), str)
    assert all(word in body["error"] for word in words), body["error"]
    assert "Traceback" not in body["error"]


def test_reads_answer_503_when_the_data_directory_is_read_only(
    immutable_home: tuple[AppDeps, FlaskClient],
) -> None:
    _, client = immutable_home
    for path in READS:
        response = client.get(path)
        assert_unavailable(response.status_code, response.get_json(), "store", "read-only")


def test_writes_answer_503_when_the_data_directory_is_read_only(
    immutable_home: tuple[AppDeps, FlaskClient],
) -> None:
    deps, client = immutable_home
    imported = client.post("/api/import", data=import_line("new"), content_type="application/x-ndjson")
    assert_unavailable(imported.status_code, imported.get_json(), "store", "read-only")
    before = deps.settings.get()
    for path in SECTIONS:
        current = client.get(path)  # answered from memory
        assert current.status_code == 200
        response = client.put(path, json=current.get_json())
        assert_unavailable(response.status_code, response.get_json(), "read-only")
    assert deps.settings.get() is before  # nothing applied that the file does not hold


@pytest.fixture
def readonly_store(tmp_path: Path) -> Iterator[FlaskClient]:
    """The API on a store opened with SQLite's `mode=ro` (it reads, and refuses every write)."""
    home = tmp_path / "home"
    writable = open_store(None, home)
    writable.insert_calls([a_call("before")])
    writable.close()
    with app_deps(home, load_settings(home / "config.yaml"), readonly=True) as deps:
        yield create_app(deps, {"TESTING": True}).test_client()


def test_a_store_that_refuses_writes_answers_503_to_an_import(readonly_store: FlaskClient) -> None:
    listed = readonly_store.get("/api/calls")
    assert listed.status_code == 200 and [c["id"] for c in listed.get_json()["calls"]] == ["before"]
    response = readonly_store.post(
        "/api/import", data=import_line("new"), content_type="application/x-ndjson"
    )
    assert_unavailable(response.status_code, response.get_json(), "store", "read-only")
    assert [c["id"] for c in readonly_store.get("/api/calls").get_json()["calls"]] == ["before"]


def test_no_route_answers_500_when_the_data_directory_is_read_only(
    immutable_home: tuple[AppDeps, FlaskClient],
) -> None:
    _, client = immutable_home
    app = client.application
    checked = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or "<" in rule.rule:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method == "GET":
                response = client.get(rule.rule)
            elif method == "PUT":
                current = client.get(rule.rule)
                response = client.put(rule.rule, json=current.get_json() if current.is_json else {})
            else:
                response = client.open(rule.rule, method=method, json={})
            checked.append(rule.rule)
            assert response.status_code != 500, (method, rule.rule, response.get_data(as_text=True)[:200])
    assert {"/api/status", "/api/calls", "/api/import", "/api/config/quotas"} <= set(checked)
