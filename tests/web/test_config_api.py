from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tokenlens.app import AppDeps
from tokenlens.config import load_settings

QUOTAS = {
    "kill_switches": ["my-agent"],
    "source_limits": [{"source": "my-agent", "daily_usd": 5.0, "monthly_usd": 50.0}],
    "model_limits": [{"model": "claude-opus-4-6", "daily_calls": 100}],
}
ROUTING = {
    "aliases": [{"from": "gpt-4", "to": "claude-sonnet-4-6"}],
    "fallback_chains": [
        {"trigger_model": "claude-opus-4-6", "fallbacks": ["claude-sonnet-4-6", "claude-haiku-4-5"]}
    ],
    "weights": [
        {
            "source": "my-agent",
            "rules": [
                {"model": "claude-haiku-4-5", "weight": 70},
                {"model": "claude-sonnet-4-6", "weight": 30},
            ],
        }
    ],
    "latency_groups": [{"name": "fast", "models": ["claude-haiku-4-5", "claude-sonnet-4-6"]}],
}


@pytest.fixture(autouse=True)
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "# my gateway\nbudgets:\n  daily_usd: 20  # keep this comment\n"
        "providers:\n  anthropic: {api_key_env: ANTHROPIC_API_KEY}\n"  # the SPEC's cross-provider alias needs it
    )
    return path


def test_put_quotas_applies_writes_the_file_and_keeps_comments(
    web_client: FlaskClient, web_deps: AppDeps, config_file: Path
) -> None:
    response = web_client.put("/api/config/quotas", json=QUOTAS)
    assert response.status_code == 200
    assert response.json["kill_switches"] == ["my-agent"]
    assert response.json["source_limits"][0]["daily_usd"] == 5.0
    assert web_client.get("/api/config/quotas").json == response.json
    assert web_deps.settings.get().quotas.kill_switches == ("my-agent",)  # in force for the next request
    assert load_settings(config_file).quotas == web_deps.settings.get().quotas  # and in the file
    text = config_file.read_text()
    assert text.startswith("# my gateway\nbudgets:\n  daily_usd: 20  # keep this comment\nproviders:\n")


def test_put_routing_round_trips_in_the_spec_shape(web_client: FlaskClient) -> None:
    response = web_client.put("/api/config/routing", json=ROUTING)
    assert response.status_code == 200
    assert web_client.get("/api/config/routing").json == ROUTING


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kill_switches": [], "bogus": 1}, "quotas.bogus"),
        ({"source_limits": [{"source": "a", "daily_usd": -1}]}, "quotas.source_limits[0].daily_usd"),
        ({"model_limits": [{"model": "m", "daily_calls": "many"}]}, "quotas.model_limits[0].daily_calls"),
    ],
)
def test_invalid_body_gets_400_naming_the_field_and_changes_nothing(
    web_client: FlaskClient, web_deps: AppDeps, config_file: Path, body: dict[str, object], field: str
) -> None:
    before_file, before = config_file.read_text(), web_deps.settings.get()
    response = web_client.put("/api/config/quotas", json=body)
    assert response.status_code == 400
    assert response.json["field"] == field and field.split(".")[-1].split("[")[0] in response.json["error"]
    assert config_file.read_text() == before_file and web_deps.settings.get() is before


def test_body_that_is_not_json(web_client: FlaskClient) -> None:
    response = web_client.put("/api/settings/budget", data="daily_usd=3", content_type="text/plain")
    assert response.status_code == 400 and "JSON" in response.json["error"]


def test_settings_budget_and_webhook_secrets_are_not_shown(
    web_client: FlaskClient, web_deps: AppDeps
) -> None:
    assert web_client.get("/api/settings/budget").json["daily_usd"] == 20
    hooks = [
        {"url": "https://hooks.example.com/x", "events": ["budget"], "secret": "s3cret", "format": "json"}
    ]
    assert web_client.put("/api/settings/webhooks", json=hooks).status_code == 200
    shown = web_client.get("/api/settings/webhooks").json
    assert shown[0]["secret"] == "********"
    assert web_client.put("/api/settings/webhooks", json=shown).status_code == 200  # sending the mask back
    assert web_deps.settings.get().webhooks[0].secret == "s3cret"


def test_cross_site_put_is_refused(web_client: FlaskClient, web_deps: AppDeps) -> None:
    response = web_client.put("/api/config/quotas", json=QUOTAS, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and web_deps.settings.get().quotas.kill_switches == ()


def test_a_section_the_file_refuses_is_not_published_to_other_gateways(tmp_path: Path) -> None:
    """Gateways sharing a store: a change this gateway's file refuses changes nothing, here or elsewhere."""
    from harness.deps import app_deps
    from harness.pg import store_url
    from tokenlens.config import parse_settings
    from tokenlens.web import create_app

    broken = tmp_path / "one.yaml"
    broken.write_text("budgets:\n  daily_usd: -1\n")  # another section is invalid: the file cannot be written
    with (
        store_url("postgresql", tmp_path) as url,
        app_deps(
            tmp_path / "one",
            settings := parse_settings({"storage": {"url": url}}),
            shared=True,
            config_file=broken,
        ) as one,
        app_deps(tmp_path / "one", settings, shared=True, config_file=broken) as one,
        app_deps(tmp_path / "two", settings, shared=True, config_file=tmp_path / "two.yaml") as two,
    ):
        assert one.config_sync is not None and two.config_sync is not None
        response = create_app(one, {"TESTING": True}).test_client().put("/api/config/quotas", json=QUOTAS)
        assert response.status_code == 400
        assert one.config_sync.fetch() == {}  # nothing in the shared store
        assert two.config_sync.poll() == []
        assert one.settings.get().quotas == two.settings.get().quotas == settings.quotas
        assert broken.read_text() == "budgets:\n  daily_usd: -1\n"


def test_a_change_the_shared_store_refuses_is_taken_back_from_the_file(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is unreachable when the section is published: 503, and the file gets its section back."""
    from harness.deps import app_deps
    from harness.pg import store_url
    from tokenlens.config import parse_settings
    from tokenlens.web import create_app

    with (
        store_url("postgresql", tmp_path) as url,
        app_deps(
            tmp_path / "home", parse_settings({"storage": {"url": url}}), shared=True, config_file=config_file
        ) as deps,
    ):
        assert deps.config_sync is not None

        def unreachable(name: str, data: object) -> int:
            raise ConnectionError("the database went away")

        monkeypatch.setattr(deps.config_sync, "publish", unreachable)
        before = deps.settings.get().quotas
        response = create_app(deps, {"TESTING": True}).test_client().put("/api/config/quotas", json=QUOTAS)
        assert response.status_code == 503 and "could not be updated" in response.json["error"]
        assert deps.settings.get().quotas == before
        assert load_settings(config_file).quotas == before
