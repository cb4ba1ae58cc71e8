"""The cloud platforms: Azure OpenAI, Google Vertex AI and AWS Bedrock (issue 23).

Pure functions: which platform a request is for (its base-URL route or its host in HTTPS_PROXY mode), what the
path says (wire format, endpoint kind, model, streamed or not), where base-URL calls go (config), and whether a
request carries a client signature (AWS SigV4) that pins it to a host, path, body and some headers.

Each platform's calls keep the wire format of the family they speak: Azure OpenAI is OpenAI; Vertex Gemini is
Google and Vertex Claude (rawPredict / streamRawPredict) is Anthropic; Bedrock InvokeModel of a Claude model is
Anthropic inside AWS's event-stream framing, and Converse has its own usage shape (`tokenlens.platforms.bedrock`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from tokenlens.config.model import Platforms
from tokenlens.providers import PLATFORM_HOST_PATTERNS, ApiFormat, is_version_segment
from tokenlens.usage import endpoint_kind

Platform = Literal["azure", "vertex", "bedrock"]
PLATFORMS: tuple[Platform, ...] = ("azure", "vertex", "bedrock")  # = providers.PLATFORM_ROUTES
HOST_PATTERNS = PLATFORM_HOST_PATTERNS
# What a platform's answer is written in: the three families, Bedrock's InvokeModel (an Anthropic body, its
# stream in event-stream framing) and Bedrock's Converse.
Wire = Literal["openai", "google", "anthropic", "bedrock_invoke", "bedrock_converse"]

# genai-prices provider ids (Vertex is priced under "google", which lists Claude at Vertex's prices)
PRICE_PROVIDER = {"azure": "azure", "vertex": "google", "bedrock": "aws"}

SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
# Bedrock answer headers a record needs: the request id and Bedrock's own token counts (any model)
BEDROCK_RESPONSE_HEADERS = (
    "x-amzn-requestid",
    "x-amzn-bedrock-input-token-count",
    "x-amzn-bedrock-output-token-count",
    "x-amzn-bedrock-cache-read-input-token-count",
    "x-amzn-bedrock-cache-write-input-token-count",
)


@dataclass(frozen=True)
class PlatformCall:
    """What a platform request path says."""

    provider: Platform
    api: ApiFormat  # the family: request body, error format, estimates
    wire: Wire  # how the answer is read
    kind: str  # tokenlens.usage endpoint kind ("other": not a model call)
    model: str | None  # the model named by the path (Vertex, Bedrock); Azure's deployment is not one
    stream: bool  # streamed by the path itself (Vertex stream*, Bedrock *-stream)
    deployment: str | None = None  # Azure deployment name
    location: str | None = None  # Vertex location from the path (region or "global")


# --- paths ------------------------------------------------------------------------------------------------

_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)(/.*)$")
_VERTEX = re.compile(
    r"/(v1[a-z0-9]*)/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:]+):([A-Za-z]+)$"
)
_VERTEX_OPENAI = re.compile(r"/(v1[a-z0-9]*)/projects/([^/]+)/locations/([^/]+)/endpoints/openapi(/.*)$")
_BEDROCK = re.compile(r"/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream)$")
_GOOGLE_KINDS = {
    "generatecontent": "generate",
    "streamgeneratecontent": "stream_generate",
    "counttokens": "count_tokens",
    "embedcontent": "embed",
    "predict": "other",
}


def parse_path(provider: Platform, path: str) -> PlatformCall:
    """The call an upstream path (query ignored) is, on `provider`. Unknown paths are kind "other". A prefix
    before the platform's own path (a configured endpoint's base path) is allowed."""
    p = path.split("?", 1)[0]
    kind: str
    if provider == "azure":
        deployment = None
        m = _AZURE_DEPLOYMENT.search(p)
        if m:
            deployment = unquote(m.group(1))
            kind = endpoint_kind("openai", m.group(2))
        elif "/openai/" in p:
            kind = endpoint_kind("openai", p[p.index("/openai/") + len("/openai") :])
        else:
            kind = "other"
        return PlatformCall("azure", "openai", "openai", kind, None, False, deployment)
    if provider == "vertex":
        m = _VERTEX.search(p)
        if m:
            location, publisher, model, method = (
                m.group(3),
                m.group(4),
                unquote(m.group(5)),
                m.group(6).lower(),
            )
            if publisher == "google":
                kind = _GOOGLE_KINDS.get(method, "other")
                return PlatformCall(
                    "vertex", "google", "google", kind, model, kind == "stream_generate", location=location
                )
            if model == "count-tokens" and method == "rawpredict":
                return PlatformCall(
                    "vertex", "anthropic", "anthropic", "count_tokens", None, False, None, location
                )
            kind = "messages" if method in ("rawpredict", "streamrawpredict") else "other"
            return PlatformCall(
                "vertex",
                "anthropic",
                "anthropic",
                kind,
                model,
                method == "streamrawpredict",
                location=location,
            )
        m = _VERTEX_OPENAI.search(p)
        if m:
            return PlatformCall(
                "vertex",
                "openai",
                "openai",
                endpoint_kind("openai", m.group(4)),
                None,
                False,
                location=m.group(3),
            )
        return PlatformCall("vertex", "google", "google", "other", None, False)
    m = _BEDROCK.search(p)
    if not m:
        return PlatformCall("bedrock", "anthropic", "bedrock_invoke", "other", None, False)
    model, action = unquote(m.group(1)), m.group(2)
    wire: Wire = "bedrock_converse" if action.startswith("converse") else "bedrock_invoke"
    return PlatformCall("bedrock", "anthropic", wire, "messages", model, action.endswith("stream"))


def split_base_url_path(rest: str) -> tuple[str | None, str]:
    """`<rest>` of `/proxy/<platform>/<rest>` as (path tag, upstream path). A tag is a first segment followed by
    the platform's own first segment (`openai`, a version such as `v1`, `model`): `/proxy/bedrock/ci/model/...`
    is tagged `ci`."""
    path, sep, query = rest.partition("?")
    segments = path.lstrip("/").split("/")
    tag = None
    if len(segments) >= 2 and segments[0] and not _platform_head(segments[0]) and _platform_head(segments[1]):
        tag, segments = segments[0], segments[1:]
    return tag, "/" + "/".join(segments) + (sep + query if sep else "")


def _platform_head(segment: str) -> bool:
    return segment in ("openai", "model") or is_version_segment(segment)


# --- hosts ------------------------------------------------------------------------------------------------

_AZURE_HOST = re.compile(r"^[a-z0-9][a-z0-9-]*\.openai\.azure\.com$")
_VERTEX_HOST = re.compile(r"^(?:[a-z0-9-]+-)?aiplatform\.googleapis\.com$")
_BEDROCK_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com$")


def platform_of_host(host: str, port: int) -> Platform | None:
    """The platform a host serves (HTTPS_PROXY mode), if any."""
    if port != 443:
        return None
    h = host.lower().rstrip(".")
    if _AZURE_HOST.match(h):
        return "azure"
    if _VERTEX_HOST.match(h):
        return "vertex"
    if _BEDROCK_HOST.match(h):
        return "bedrock"
    return None


def bedrock_region_of_host(host: str) -> str | None:
    parts = host.lower().split(".")
    return parts[1] if len(parts) == 4 and parts[0].startswith("bedrock-runtime") else None


# --- upstreams (base-URL mode) -------------------------------------------------------------------------------


class PlatformNotConfigured(LookupError):
    """Base-URL mode needs to know where a platform's calls go."""


def base_url_upstream(provider: Platform, call: PlatformCall, platforms: Platforms) -> str:
    """The upstream URL (scheme://host[:port][/prefix]) a base-URL call goes to."""
    if provider == "azure":
        if platforms.azure.endpoint:
            return platforms.azure.endpoint
        if platforms.azure.resource:
            return f"https://{platforms.azure.resource}.openai.azure.com"
        raise PlatformNotConfigured(
            "Azure OpenAI calls need the resource they go to: set platforms.azure.resource (the <name> of "
            "https://<name>.openai.azure.com) or platforms.azure.endpoint in the TokenLens config"
        )
    if provider == "vertex":
        if platforms.vertex.endpoint:
            return platforms.vertex.endpoint
        location = platforms.vertex.region or call.location
        if not location:
            raise PlatformNotConfigured(
                "Vertex AI calls need a region: use a path with /locations/<region>/ or set platforms.vertex.region"
            )
        return (
            "https://aiplatform.googleapis.com"
            if location == "global"
            else f"https://{location}-aiplatform.googleapis.com"
        )
    if platforms.bedrock.endpoint:
        return platforms.bedrock.endpoint
    if platforms.bedrock.region:
        return f"https://bedrock-runtime.{platforms.bedrock.region}.amazonaws.com"
    raise PlatformNotConfigured(
        "Bedrock calls need a region: set platforms.bedrock.region (or platforms.bedrock.endpoint) in the "
        "TokenLens config"
    )


def proxy_redirect(provider: Platform, platforms: Platforms) -> str | None:
    """In HTTPS_PROXY mode a platform's calls go to the host they name, unless its `endpoint` is configured
    (a test double or a private endpoint): then there, with the request otherwise unchanged."""
    return {
        "azure": platforms.azure.endpoint,
        "vertex": platforms.vertex.endpoint,
        "bedrock": platforms.bedrock.endpoint,
    }[provider]


def bedrock_region(platforms: Platforms, upstream_host: str) -> str | None:
    return platforms.bedrock.region or bedrock_region_of_host(upstream_host)


# --- client signatures ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """A client's AWS SigV4 signature: the headers it covers (lower-case) and the scope's region/service."""

    signed_headers: frozenset[str]
    region: str | None
    service: str | None


@dataclass
class PlatformState:
    """A platform call on the proxy path (`Exchange.platform`): what its path says, how it came in, and the
    client's signature with what it covered when the request arrived."""

    call: PlatformCall
    mode: str
    signature: Signature | None = None
    snapshot: tuple[Any, ...] | None = None


_CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
_SIGNED = re.compile(r"SignedHeaders=([^,\s]+)")


def client_signature(headers: dict[str, str], query: str = "") -> Signature | None:
    """The SigV4 signature a request carries (Authorization header, or a presigned query), else None.
    `headers` have lower-case names."""
    auth = headers.get("authorization", "")
    if auth.startswith(SIGV4_ALGORITHM):
        signed = _SIGNED.search(auth)
        credential = _CREDENTIAL.search(auth)
        names = frozenset(signed.group(1).lower().split(";")) if signed else frozenset({"host"})
        scope = credential.group(1).split("/") if credential else []
        return Signature(names, scope[2] if len(scope) >= 4 else None, scope[3] if len(scope) >= 4 else None)
    if "x-amz-signature=" in query.lower():
        params = dict(p.partition("=")[::2] for p in query.split("&"))
        signed_list = unquote(params.get("X-Amz-SignedHeaders", "host"))
        return Signature(frozenset(signed_list.lower().split(";")), None, None)
    return None


def signed_for_gateway_message(provider: Platform) -> str:
    """What a client signing for the gateway's own address is told (SPEC-style: say which mode to use)."""
    skip = "CLAUDE_CODE_SKIP_BEDROCK_AUTH=1" if provider == "bedrock" else "CLAUDE_CODE_SKIP_VERTEX_AUTH=1"
    return (
        "TokenLens: this request is signed (AWS SigV4) for the gateway's own address, so Bedrock would refuse "
        "the signature. Use one of two ways: (1) HTTPS_PROXY mode: point HTTPS_PROXY at TokenLens and keep the "
        "client's own Bedrock endpoint (https://bedrock-runtime.<region>.amazonaws.com); the client signs for "
        "that host and TokenLens relays the request unchanged; or (2) base-URL mode with client signing off "
        f"({skip}, or an SDK without AWS credentials): TokenLens signs with its own AWS credentials."
    )


def signed_request_changed_message(what: str) -> str:
    return (
        f"TokenLens: this request is signed by the client (AWS SigV4) and {what} would change what the "
        "signature covers, so it was not sent. Signed requests are relayed byte for byte: routing and "
        "redaction cannot apply to them. To use them, call TokenLens in base-URL mode with client signing "
        "off (CLAUDE_CODE_SKIP_BEDROCK_AUTH=1, or an SDK without AWS credentials) and let the gateway sign."
    )


def host_of(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, base path) of an upstream URL."""
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    return (
        scheme,
        parts.hostname or "",
        parts.port or (443 if scheme == "https" else 80),
        parts.path.rstrip("/"),
    )


def allow_host_patterns(platforms: Platforms) -> list[str]:
    """mitmproxy `allow_hosts` patterns for the platforms: their hosts, and each configured endpoint (a real
    host redirected there is matched by the address it connects to)."""
    patterns = list(HOST_PATTERNS)
    for url in (platforms.azure.endpoint, platforms.vertex.endpoint, platforms.bedrock.endpoint):
        if url:
            _, host, port, _ = host_of(url)
            patterns.append(f"^{re.escape(host.lower())}:{port}$")
    return patterns


def proxy_platform(host: str, port: int, host_header: str, platforms: Platforms) -> Platform | None:
    """The platform an intercepted (HTTPS_PROXY mode) request is for: by the host it is sent to, or, once its
    connection was redirected to a configured endpoint, by its Host header (kept as the client sent it)."""
    found = platform_of_host(host, port)
    if found is not None:
        return found
    named = platform_of_host(
        host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header, 443
    )
    redirect = proxy_redirect(named, platforms) if named else None
    if named and redirect:
        _, r_host, r_port, _ = host_of(redirect)
        if (r_host.lower(), r_port) == (host.lower(), port):
            return named
    return None


# Bedrock's own error format: {"message": ...} with the exception's name in `x-amzn-ErrorType`, so boto3 raises
# its usual ClientError (ThrottlingException, ...) and the Anthropic SDK its usual status errors.
_BEDROCK_EXCEPTIONS = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    413: "ValidationException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def bedrock_error(status: int, body: bytes) -> tuple[bytes, str]:
    """A refusal written in another format (`providers.error_body`), rewritten as Bedrock writes errors:
    (body, x-amzn-ErrorType)."""
    message = "TokenLens refused this request."
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
    except ValueError:
        pass
    kind = _BEDROCK_EXCEPTIONS.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )
    return json.dumps(
        {"message": message}
    ).encode(), f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
