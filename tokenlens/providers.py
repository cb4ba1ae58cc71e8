"""Where a call goes and who made it: base-URL paths, provider hosts, attribution, error bodies (docs/gateway.md and docs/gateway.md#refused-and-failed-calls).

Pure functions over plain values; the ingress addon adapts mitmproxy flows to them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tokenlens.config import BUILTIN_PROVIDERS, Settings

ApiFormat = Literal["openai", "anthropic", "google"]

PROXY_PREFIX = "/proxy/"
HEADER_PREFIX = "x-tokenlens-"
SOURCE_HEADER = "x-tokenlens-source"
SESSION_HEADER = "x-tokenlens-session"
TAG_HEADER_PREFIX = "x-tokenlens-tag-"
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization", "x-amz-security-token"}
)
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "api-key"})

_VERSION_SEGMENT = re.compile(r"^v\d+(?:(?:alpha|beta)\d*)?$")


@dataclass(frozen=True)
class Upstream:
    """A configured provider: its name, wire format and the base URL calls are forwarded to."""

    name: str
    format: ApiFormat
    scheme: str
    host: str
    port: int
    base_path: str  # "" or a path prefix such as "/openai", without a trailing slash

    @classmethod
    def parse(cls, name: str, url: str, api_format: ApiFormat) -> Upstream:
        parts = urlsplit(url)
        scheme = parts.scheme or "https"
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(name, api_format, scheme, parts.hostname or "", port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        """The Host header for this upstream: the port only when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else self.authority


@dataclass(frozen=True)
class Target:
    """A base-URL request resolved: which provider, the upstream path (query kept), and the path tag."""

    provider: str
    path: str  # path (with query string) as the provider sees it, base path included
    tag: str | None


API_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_API_PATH = re.compile(r"/v\d+(?:(?:alpha|beta)\d*)?(?:/|$)")


def is_api_request(method: str, path: str, websocket: bool = False, kind: str = "other") -> bool:
    """Whether a request on a provider route is an API call (a Call), as opposed to traffic around one:
    `HEAD /` reachability checks, `OPTIONS` preflights, paths outside the API's version segment (`/v1`,
    `/v1beta`, ...), and WebSocket upgrades (the frames on a WebSocket are the calls, never its upgrade).
    A path whose endpoint `kind` is known (`usage.endpoint_kind`: a model call) is a call whatever its version
    segment looks like (`/V1/messages`, Gemini without one): the gates must see what an upstream may serve."""
    if websocket or method.upper() not in API_METHODS:
        return False
    return kind != "other" or _API_PATH.search(path.partition("?")[0]) is not None


class UnknownProvider(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        platforms = [p for p in PLATFORM_ROUTES if p not in self.known]
        also = f"; cloud platforms: {', '.join(platforms)}" if platforms else ""
        super().__init__(f"unknown provider '{name}'; configured providers: {', '.join(self.known)}{also}")


def is_version_segment(segment: str) -> bool:
    return bool(_VERSION_SEGMENT.match(segment))


def resolve_proxy_path(path: str, upstreams: Mapping[str, Upstream]) -> Target:
    """Resolve `/proxy/<provider>[/<tag>]/<rest>?query` (docs/gateway.md).

    The path tag is a segment followed by a version segment (`/proxy/anthropic/my-agent/v1/messages`); it is
    removed. OpenAI paths without a leading version segment get `/v1`.
    """
    raw_path, sep, query = path.partition("?")
    rest = raw_path[len(PROXY_PREFIX) :]
    name, _, remainder = rest.partition("/")
    upstream = upstreams.get(name)
    if upstream is None:
        raise UnknownProvider(name, upstreams)
    segments = remainder.split("/") if remainder else []
    tag = None
    if (
        len(segments) >= 2
        and segments[0]
        and not is_version_segment(segments[0])
        and is_version_segment(segments[1])
    ):
        tag = segments[0]
        segments = segments[1:]
    if upstream.format == "openai" and not (segments and is_version_segment(segments[0])):
        segments = ["v1", *segments]
    upstream_path = upstream.base_path + "/" + "/".join(segments)
    return Target(name, upstream_path + (sep + query if sep else ""), tag)


@dataclass(frozen=True)
class Intercept:
    """One host HTTPS_PROXY mode intercepts for a provider: its real host (`api.openai.com` for the built-in
    `openai`, whatever upstream the calls are sent to) or the host of its configured upstream."""

    host: str
    port: int
    base_path: str  # the path prefix of requests to this host that belong to the provider
    upstream: Upstream


def intercepts(upstreams: Mapping[str, Upstream]) -> list[Intercept]:
    """Every host HTTPS_PROXY mode intercepts, longest base path first (it wins for a shared host)."""
    found: list[Intercept] = []
    for name, upstream in upstreams.items():
        found.append(Intercept(upstream.host.lower(), upstream.port, upstream.base_path, upstream))
        builtin = BUILTIN_PROVIDERS.get(name)
        if builtin is not None:
            real = Upstream.parse(name, builtin.upstream, upstream.format)
            if (real.host, real.port, real.base_path) != (
                upstream.host.lower(),
                upstream.port,
                upstream.base_path,
            ):
                found.append(Intercept(real.host, real.port, real.base_path, upstream))
    return sorted(found, key=lambda i: -len(i.base_path))


def intercept_for(host: str, port: int, path: str | None, found: Iterable[Intercept]) -> Intercept | None:
    """The provider an intercepted request (explicit-proxy traffic) belongs to, if any (`path` None: any),
    among `found` (what `intercepts` returns; built once per configuration by its caller)."""
    host = host.lower()
    for intercept in found:
        if intercept.host != host or intercept.port != port:
            continue
        prefix = intercept.base_path
        if path is None or not prefix or path == prefix or path.startswith((prefix + "/", prefix + "?")):
            return intercept
    return None


def upstream_for_authority(host: str, port: int, upstreams: Mapping[str, Upstream]) -> Upstream | None:
    """The provider served at host:port (explicit-proxy traffic), if any."""
    intercept = intercept_for(host, port, None, intercepts(upstreams))
    return intercept.upstream if intercept is not None else None


def intercept_host_patterns(upstreams: Iterable[Upstream]) -> list[str]:
    """mitmproxy `allow_hosts` patterns: TLS is intercepted for the provider hosts only (each provider's real
    host and its configured upstream's)."""
    named = {u.name: u for u in upstreams}
    return sorted({f"^{re.escape(i.host)}:{i.port}$" for i in intercepts(named)})


# The cloud platforms (tokenlens.platforms): base-URL routes `/proxy/<platform>/...` and the hosts HTTPS_PROXY
# mode intercepts for them (mitmproxy `allow_hosts` patterns, host:port).
PLATFORM_ROUTES = ("azure", "vertex", "bedrock")
PLATFORM_HOST_PATTERNS = (
    r"^[a-z0-9][a-z0-9-]*\.openai\.azure\.com:443$",
    r"^(?:[a-z0-9-]+-)?aiplatform\.googleapis\.com:443$",
    r"^bedrock-runtime(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com:443$",
)


# User-Agent families, first match wins. Patterns are matched case-insensitively at the start or after a space.
_AGENT_FAMILIES: tuple[tuple[str, str], ...] = (
    ("claude-cli/", "claude-code"),
    ("claude-code/", "claude-code"),
    ("codex_cli_rs/", "codex"),
    ("codex_exec/", "codex"),
    ("codex/", "codex"),
    ("gemini-cli/", "gemini-cli"),
    ("geminicli/", "gemini-cli"),
    ("aider/", "aider"),
    ("cline/", "cline"),
    ("roo-code/", "roo-code"),
    ("kilo-code/", "kilo-code"),
    ("continue/", "continue"),
    ("cursor/", "cursor"),
    ("opencode/", "opencode"),
    ("goose/", "goose"),
    ("openhands/", "openhands"),
    ("langchain", "langchain"),
    ("litellm/", "litellm"),
    ("llamaindex", "llamaindex"),
    ("openai/python", "openai-python"),
    ("azureopenai/python", "openai-python"),  # openai.AzureOpenAI
    ("asyncopenai/python", "openai-python"),
    ("openai/js", "openai-node"),
    ("anthropic/python", "anthropic-python"),
    ("anthropicbedrock/python", "anthropic-python"),  # anthropic.AnthropicBedrock
    ("anthropicvertex/python", "anthropic-python"),  # anthropic.AnthropicVertex
    ("asyncanthropic/python", "anthropic-python"),
    ("anthropic/js", "anthropic-node"),
    ("google-genai-sdk/", "google-genai"),
    ("google-api-nodejs-client/", "google-genai-node"),
    ("boto3/", "boto3"),  # AWS SDK for Python (Bedrock Converse, InvokeModel)
    ("botocore/", "boto3"),
    ("curl/", "curl"),
    ("python-requests/", "python-requests"),
    ("python-httpx/", "python-httpx"),
    ("aiohttp/", "python-aiohttp"),
    ("node-fetch", "node-fetch"),
    ("undici", "node-fetch"),
    ("go-http-client/", "go"),
)


def agent_family(user_agent: str) -> str | None:
    ua = user_agent.lower()
    for prefix, family in _AGENT_FAMILIES:
        if ua.startswith(prefix) or f" {prefix}" in ua:
            return family
    return None


def session_from_headers(headers: Mapping[str, str]) -> str | None:
    """The session a call belongs to (headers with lower-case names): `X-TokenLens-Session`, else the run id
    the agent sends itself (Claude Code's `X-Claude-Code-Session-Id`; Codex's `session-id`, which it sends
    with its `originator` header), so each agent run is a session without any set-up."""
    for value in (
        headers.get(SESSION_HEADER),
        headers.get("x-claude-code-session-id"),
        headers.get("session-id") if "originator" in headers else None,
    ):
        if value and value.strip():
            return value.strip()
    return None


def attribute_source(headers: Mapping[str, str], path_tag: str | None) -> str:
    """docs/gateway.md, first match wins: X-TokenLens-Source, path tag, User-Agent family, else `unknown`."""
    explicit = headers.get(SOURCE_HEADER, "").strip()
    if explicit:
        return explicit
    if path_tag:
        return path_tag
    return agent_family(headers.get("user-agent", "")) or "unknown"


def tags_from_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """`X-TokenLens-Tag-Team: core` → `{"team": "core"}` (keys lower-case)."""
    tags = {}
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(TAG_HEADER_PREFIX) and len(lower) > len(TAG_HEADER_PREFIX):
            tags[lower[len(TAG_HEADER_PREFIX) :]] = value.strip()
    return tags


def redact_query(path: str) -> str:
    """The path with secret query parameters (`?key=`) removed, for storing."""
    raw_path, sep, query = path.partition("?")
    if not sep:
        return path
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0].lower() not in SECRET_QUERY_KEYS]
    return raw_path + ("?" + "&".join(kept) if kept else "")


# --- error bodies (docs/gateway.md#refused-and-failed-calls) ---------------------------------------------------------------------------------

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}
_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


def error_body(api: ApiFormat, status: int, message: str, code: str | None = None) -> bytes:
    """A JSON error in the calling provider's own format, so SDKs raise their usual typed errors."""
    body: dict[str, object]
    if api == "anthropic":
        body = {
            "type": "error",
            "error": {"type": _ANTHROPIC_TYPE.get(status, "api_error"), "message": message},
        }
    elif api == "google":
        body = {
            "error": {"code": status, "message": message, "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}
        }
    else:
        error_type = _OPENAI_TYPE.get(status, "server_error")
        body = {"error": {"message": message, "type": error_type, "code": code or error_type, "param": None}}
    return json.dumps(body).encode()


def upstreams_from(settings: Settings) -> dict[str, Upstream]:
    """The upstream of each configured provider."""
    return {name: Upstream.parse(name, p.upstream, p.format) for name, p in settings.providers.items()}
