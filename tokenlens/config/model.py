"""The settings: frozen dataclasses, one per section of the file (docs/configuration.md), and the section names."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

ProviderFormat = Literal["openai", "anthropic", "google"]
Action = Literal["warn", "block", "redact"]
WebhookFormat = Literal["json", "slack"]
WebhookEvent = Literal["alert", "budget", "anomaly", "digest", "block"]

WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("alert", "budget", "anomaly", "digest", "block")

# Top-level keys in the documented order (docs/configuration.md); the config API may replace only the EDITABLE ones.
SECTIONS: tuple[str, ...] = (
    "server",
    "storage",
    "providers",
    "budgets",
    "quotas",
    "routing",
    "guardrails",
    "dedup",
    "pricing",
    "alerts",
    "webhooks",
    "timezone",
    "platforms",
)
EDITABLE_SECTIONS: tuple[str, ...] = (
    "quotas",
    "routing",
    "guardrails",
    "budgets",
    "alerts",
    "pricing",
    "webhooks",
    "dedup",
)


class FrozenMap[K, V](Mapping[K, V]):
    """A read-only, hashable mapping (keeps insertion order) for mappings inside the frozen settings."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | Sequence[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


# --- the settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8420
    api_token: str | None = None
    # Extra Host names the dashboard and API answer besides loopback ones (DNS-rebinding defence).
    allowed_hosts: tuple[str, ...] = ()
    # Client addresses (IPs or CIDR networks) allowed to connect to the gateway port besides loopback ones;
    # any other client is disconnected (matters with a non-loopback `host`).
    allowed_clients: tuple[str, ...] = ()
    # PEM file of extra CA certificates trusted for upstream TLS (added to the system roots).
    upstream_ca: str | None = None


@dataclass(frozen=True)
class StorageSettings:
    url: str | None = None  # None: SQLite at $TOKENLENS_HOME/tokenlens.db
    store_bodies: bool = True
    retention_days: int = 90


@dataclass(frozen=True)
class ProviderSettings:
    """An upstream. `upstream` is normalised without a trailing slash; a path in it is a prefix:
    `/proxy/<name>/<rest>` goes to `<upstream>/<rest>`."""

    upstream: str
    format: ProviderFormat = "openai"
    api_key_env: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.upstream).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.upstream).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.upstream)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def base_path(self) -> str:
        """The path prefix of the upstream ("" when none), without a trailing slash."""
        return urlsplit(self.upstream).path.rstrip("/")

    def url(self, path: str) -> str:
        """The upstream URL for a path (and query) such as `/v1/messages?beta=true`."""
        return self.upstream + "/" + path.lstrip("/")


BUILTIN_PROVIDERS: Mapping[str, ProviderSettings] = FrozenMap(
    {
        "openai": ProviderSettings("https://api.openai.com", "openai"),
        "anthropic": ProviderSettings("https://api.anthropic.com", "anthropic"),
        "google": ProviderSettings("https://generativelanguage.googleapis.com", "google"),
    }
)


@dataclass(frozen=True)
class Budgets:
    daily_usd: float | None = None
    monthly_usd: float | None = None
    reserve_output_tokens: int = 4096
    fail_open: bool = False


@dataclass(frozen=True)
class SourceLimit:
    source: str
    daily_usd: float | None = None
    monthly_usd: float | None = None
    daily_calls: int | None = None


@dataclass(frozen=True)
class ModelLimit:
    model: str
    daily_calls: int | None = None
    daily_usd: float | None = None


@dataclass(frozen=True)
class Quotas:
    """The quotas section. The lookups the gates make on every call use indexes built once per Quotas
    object (`killed`, `source_limit`, `model_limits_of`), so a call costs the same with 10 entries or 10,000."""

    kill_switches: tuple[str, ...] = ()  # source names whose calls are refused (403)
    source_limits: tuple[SourceLimit, ...] = ()
    model_limits: tuple[ModelLimit, ...] = ()
    fail_open: bool = False

    @functools.cached_property
    def killed(self) -> frozenset[str]:
        """The kill-switched sources, as a set."""
        return frozenset(self.kill_switches)

    @functools.cached_property
    def _by_source(self) -> Mapping[str, SourceLimit]:
        return {limit.source: limit for limit in self.source_limits}

    @functools.cached_property
    def _by_model(self) -> Mapping[str, tuple[tuple[int, ModelLimit], ...]]:
        index: dict[str, list[tuple[int, ModelLimit]]] = {}
        for position, limit in enumerate(self.model_limits):
            index.setdefault(limit.model.lower(), []).append((position, limit))
        return {name: tuple(found) for name, found in index.items()}

    def source_limit(self, source: str) -> SourceLimit | None:
        """The limit of one source (sources are unique in the section), or None."""
        return self._by_source.get(source)

    def model_limits_of(self, names: Iterable[str]) -> list[ModelLimit]:
        """The model limits whose lower-case model is one of `names`, in the order of the section."""
        found = {pair for name in names for pair in self._by_model.get(name, ())}
        return [limit for _, limit in sorted(found, key=lambda pair: pair[0])]


@dataclass(frozen=True)
class Alias:
    from_: str  # YAML key "from"
    to: str


@dataclass(frozen=True)
class FallbackChain:
    trigger_model: str
    fallbacks: tuple[str, ...]


@dataclass(frozen=True)
class ModelWeight:
    model: str
    weight: float


@dataclass(frozen=True)
class WeightRule:
    source: str
    rules: tuple[ModelWeight, ...]


@dataclass(frozen=True)
class LatencyGroup:
    name: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class Routing:
    aliases: tuple[Alias, ...] = ()
    fallback_chains: tuple[FallbackChain, ...] = ()
    weights: tuple[WeightRule, ...] = ()
    latency_groups: tuple[LatencyGroup, ...] = ()


@dataclass(frozen=True)
class Detector:
    enabled: bool = False
    action: Action = "warn"


@dataclass(frozen=True)
class CustomRule:
    name: str
    pattern: str  # a Python regular expression, checked to compile
    action: Action = "warn"


@dataclass(frozen=True)
class Guardrails:
    pii_detection: Detector = Detector()
    injection_detection: Detector = Detector()  # action warn or block
    response_pii_detection: Detector = Detector()
    custom_rules: tuple[CustomRule, ...] = ()
    fail_open: bool = True


@dataclass(frozen=True)
class Dedup:
    enabled: bool = False
    ttl_s: int = 300
    max_entries: int = 10000


@dataclass(frozen=True)
class PriceRates:
    """Rates in USD per million tokens that replace an override's own (a context tier's or a service
    tier's); None: the override's rate applies."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    input_text: float | None = None
    input_image: float | None = None
    input_audio: float | None = None
    input_video: float | None = None
    output_text: float | None = None
    output_image: float | None = None
    output_audio: float | None = None
    output_video: float | None = None
    cache_read_text: float | None = None
    cache_read_image: float | None = None
    cache_read_audio: float | None = None
    cache_read_video: float | None = None


@dataclass(frozen=True)
class PriceTier(PriceRates):
    """A context-size tier: above `above` input tokens (all input, cached included), the whole call is
    priced at these rates."""

    above: int = 0


@dataclass(frozen=True)
class PriceOverride(PriceRates):
    """USD per million tokens (`PriceRates`' names, `input` and `output` required). None for a cache rate:
    the input rate applies (``cache_write_1h``: the ``cache_write`` rate); None for a modality rate: its part's
    plain rate. `tiers` by context size, `service_tiers` by tier name (batch, flex, priority, fast...);
    `family` also prices the model's dated and versioned names (``gpt-4o`` then prices
    ``gpt-4o-2024-08-06``), else only the exact name."""

    # field(): required again (a bare annotation would inherit PriceRates' default None)
    input: float = field()
    output: float = field()
    tiers: tuple[PriceTier, ...] = ()
    service_tiers: Mapping[str, PriceRates] = field(default_factory=lambda: FrozenMap())
    family: bool = False


@dataclass(frozen=True)
class Alerts:
    daily_cost_threshold: float | None = None


@dataclass(frozen=True)
class Webhook:
    url: str
    events: tuple[WebhookEvent, ...] = WEBHOOK_EVENTS
    secret: str | None = None
    format: WebhookFormat = "json"


def _default_providers() -> Mapping[str, ProviderSettings]:
    return BUILTIN_PROVIDERS


def _no_prices() -> Mapping[str, PriceOverride]:
    return FrozenMap()


@dataclass(frozen=True)
class AzurePlatform:
    """Azure OpenAI in base-URL mode: calls go to `endpoint`, else https://<resource>.openai.azure.com."""

    resource: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class VertexPlatform:
    """Vertex AI in base-URL mode: `endpoint`, else the host of `region` (else of the location in the path)."""

    project: str | None = None
    region: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class BedrockPlatform:
    """Bedrock in base-URL mode: `endpoint`, else https://bedrock-runtime.<region>.amazonaws.com; the gateway
    signs with the standard AWS credential chain for `region`."""

    region: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class Platforms:
    """The cloud platforms (tokenlens.platforms): where base-URL calls go. HTTPS_PROXY mode needs none of it
    (an `endpoint` there redirects the real host, as a provider's `upstream` does)."""

    azure: AzurePlatform = AzurePlatform()
    vertex: VertexPlatform = VertexPlatform()
    bedrock: BedrockPlatform = BedrockPlatform()


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    providers: Mapping[str, ProviderSettings] = field(default_factory=_default_providers)
    budgets: Budgets = Budgets()
    quotas: Quotas = Quotas()
    routing: Routing = Routing()
    guardrails: Guardrails = Guardrails()
    dedup: Dedup = Dedup()
    pricing: Mapping[str, PriceOverride] = field(default_factory=_no_prices)
    alerts: Alerts = Alerts()
    webhooks: tuple[Webhook, ...] = ()
    timezone: str = "local"  # "local" or an IANA name such as "Europe/Paris"
    platforms: Platforms = Platforms()
