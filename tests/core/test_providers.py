import json

import pytest

from tokenlens.providers import (
    UnknownProvider,
    Upstream,
    agent_family,
    attribute_source,
    error_body,
    intercept_host_patterns,
    redact_query,
    resolve_proxy_path,
    tags_from_headers,
    upstream_for_authority,
)

UPSTREAMS = {
    "openai": Upstream.parse("openai", "https://api.openai.com", "openai"),
    "anthropic": Upstream.parse("anthropic", "https://api.anthropic.com", "anthropic"),
    "google": Upstream.parse("google", "https://generativelanguage.googleapis.com", "google"),
    "ollama": Upstream.parse("ollama", "http://localhost:11434", "openai"),
    "corp": Upstream.parse("corp", "https://gw.example.com/openai/", "openai"),
}


@pytest.mark.parametrize(
    ("path", "provider", "upstream_path", "tag"),
    [
        ("/proxy/openai/v1/chat/completions", "openai", "/v1/chat/completions", None),
        ("/proxy/openai/chat/completions", "openai", "/v1/chat/completions", None),
        ("/proxy/anthropic/v1/messages", "anthropic", "/v1/messages", None),
        ("/proxy/anthropic/my-agent/v1/messages", "anthropic", "/v1/messages", "my-agent"),
        ("/proxy/openai/my-agent/v1/chat/completions", "openai", "/v1/chat/completions", "my-agent"),
        (
            "/proxy/google/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=K",
            "google",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=K",
            None,
        ),
        (
            "/proxy/google/batch-job/v1beta/models/x:generateContent",
            "google",
            "/v1beta/models/x:generateContent",
            "batch-job",
        ),
        ("/proxy/ollama/v1/chat/completions", "ollama", "/v1/chat/completions", None),
        ("/proxy/corp/v1/models", "corp", "/openai/v1/models", None),
        ("/proxy/openai", "openai", "/v1", None),
    ],
)
def test_resolve_proxy_path(path: str, provider: str, upstream_path: str, tag: str | None) -> None:
    target = resolve_proxy_path(path, UPSTREAMS)
    assert (target.provider, target.path, target.tag) == (provider, upstream_path, tag)


def test_unknown_provider_names_the_configured_ones() -> None:
    with pytest.raises(UnknownProvider) as info:
        resolve_proxy_path("/proxy/mistral/v1/chat", UPSTREAMS)
    assert "mistral" in str(info.value) and "anthropic" in str(info.value)


def test_upstream_for_authority_matches_host_and_port() -> None:
    assert upstream_for_authority("API.OPENAI.COM", 443, UPSTREAMS) is UPSTREAMS["openai"]
    assert upstream_for_authority("api.openai.com", 8443, UPSTREAMS) is None
    assert upstream_for_authority("localhost", 11434, UPSTREAMS) is UPSTREAMS["ollama"]


def test_intercept_patterns_are_anchored() -> None:
    patterns = intercept_host_patterns([UPSTREAMS["openai"]])
    assert patterns == [r"^api\.openai\.com:443$"]


@pytest.mark.parametrize(
    ("ua", "family"),
    [
        ("claude-cli/1.0.119 (external, cli)", "claude-code"),
        ("OpenAI/Python 1.99.1", "openai-python"),
        ("AsyncOpenAI/Python 1.99.1", "openai-python"),
        ("Anthropic/Python 0.64.0", "anthropic-python"),
        ("google-genai-sdk/1.30.0 gl-python/3.12.1", "google-genai"),
        ("codex_cli_rs/0.36.0 (Mac OS 15.6.1; arm64)", "codex"),
        ("curl/8.5.0", "curl"),
        ("Mozilla/5.0", None),
    ],
)
def test_agent_family(ua: str, family: str | None) -> None:
    assert agent_family(ua) == family


def test_source_precedence() -> None:
    ua = {"user-agent": "OpenAI/Python 1.0"}
    assert attribute_source({**ua, "x-tokenlens-source": "batch"}, "tagged") == "batch"
    assert attribute_source(ua, "tagged") == "tagged"
    assert attribute_source(ua, None) == "openai-python"
    assert attribute_source({}, None) == "unknown"


def test_tags_keys_lower_case() -> None:
    headers = [("X-TokenLens-Tag-Team", "core"), ("X-TokenLens-Tag-Run", " 42 "), ("X-Other", "x")]
    assert tags_from_headers(headers) == {"team": "core", "run": "42"}


def test_redact_query_drops_keys() -> None:
    assert redact_query("/v1beta/models/m:gen?alt=sse&key=SECRET") == "/v1beta/models/m:gen?alt=sse"
    assert redact_query("/v1beta/models/m:gen?key=SECRET") == "/v1beta/models/m:gen"
    assert redact_query("/v1/messages") == "/v1/messages"


def test_error_bodies_follow_each_provider() -> None:
    openai = json.loads(error_body("openai", 429, "over budget", "budget_exceeded"))
    assert openai == {
        "error": {
            "message": "over budget",
            "type": "rate_limit_exceeded",
            "code": "budget_exceeded",
            "param": None,
        }
    }
    anthropic = json.loads(error_body("anthropic", 403, "killed"))
    assert anthropic == {"type": "error", "error": {"type": "permission_error", "message": "killed"}}
    google = json.loads(error_body("google", 400, "guardrail"))
    assert google == {"error": {"code": 400, "message": "guardrail", "status": "INVALID_ARGUMENT"}}


def test_agent_runs_are_sessions_without_set_up() -> None:
    from tokenlens.providers import session_from_headers

    assert session_from_headers({"x-tokenlens-session": "mine", "x-claude-code-session-id": "cc-1"}) == "mine"
    assert session_from_headers({"x-claude-code-session-id": "cc-1"}) == "cc-1"
    assert session_from_headers({"session-id": "codex-1", "originator": "codex_exec"}) == "codex-1"
    assert session_from_headers({"session-id": "someone-elses"}) is None  # a bare `session-id` is not Codex's
    assert session_from_headers({"x-tokenlens-session": "  "}) is None
