"""Validation: a configuration mapping -> `Settings`, and back to plain data.

Every problem raises `ConfigError` whose `field` is the dotted path of the offending key
(`budgets.daily_usd`, `routing.aliases[0].to`) and whose message says what is wrong with it.
Unknown keys are errors too, with a "did you mean" hint. Numbers and lists are bounded (`MAX_*`).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import keyword
import math
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from tokenlens.config.model import (
    BUILTIN_PROVIDERS,
    EDITABLE_SECTIONS,
    SECTIONS,
    WEBHOOK_EVENTS,
    Alerts,
    Alias,
    AzurePlatform,
    BedrockPlatform,
    Budgets,
    CustomRule,
    Dedup,
    Detector,
    FallbackChain,
    FrozenMap,
    Guardrails,
    LatencyGroup,
    ModelLimit,
    ModelWeight,
    Platforms,
    PriceOverride,
    PriceRates,
    PriceTier,
    ProviderSettings,
    Quotas,
    Routing,
    ServerSettings,
    Settings,
    SourceLimit,
    StorageSettings,
    VertexPlatform,
    Webhook,
    WeightRule,
)

# Upper bounds of numeric values and lists: a value past one is a typo or an attack (`daily_usd: 1e308`,
# `reserve_output_tokens: 1e300`, 200,000 kill switches), never a real setting, and is refused by name.
MAX_USD = 1_000_000_000.0  # budgets, quotas and alert thresholds, in USD
MAX_CALLS = 1_000_000_000  # a daily call cap
MAX_OUTPUT_TOKENS = 10_000_000  # reserve_output_tokens; a request's output limit counts as at most this
MAX_PRICE_PER_MTOK = 1_000_000.0  # a price override, USD per million tokens ($1 a token)
MAX_CONTEXT_TOKENS = 1_000_000_000  # where a price override's context tier starts, in input tokens
MAX_WEIGHT = 1_000_000.0  # a routing weight
MAX_RETENTION_DAYS = 36_500  # a hundred years
MAX_DEDUP_TTL_S = 30 * 86_400
MAX_DEDUP_ENTRIES = 1_000_000
MAX_LIST_ENTRIES = 10_000  # entries in any list or mapping of the file (kill switches, limits, rules, ...)


class ConfigError(ValueError):
    """An invalid configuration value. `str(err)` is `"<field>: <message>"`.

    `field` is the dotted path of the key (None for a problem with the whole file, such as YAML syntax);
    `line` (1-based) and `path` are set when the value came from a file.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field
        self.line: int | None = None
        self.path: Path | None = None
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.field), self.__dict__)


# --- validation helpers ------------------------------------------------------------------------------

Check = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"unknown key; {hint}(known keys: {', '.join(known)})"


def _mapping(value: Any, path: str, known: Sequence[str] | None = None) -> Mapping[str, Any]:
    """A mapping with string keys, all of them in `known` (when given). null counts as empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"must be a mapping, got {_show(value)}", path or None)
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {_show(key)}", path or None)
        if known is not None and key not in known:
            raise ConfigError(_unknown_key(key, known), _join(path, key))
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ConfigError(f"must be a list, got {_show(value)}", path)
    return list(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {_show(value)}", path)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(maximum: float, *, nullable: bool = False, positive: bool = False) -> Check:
    """A finite number from 0 (excluded when `positive`) to `maximum`."""

    def check(value: Any, path: str) -> float | None:
        if value is None and nullable:
            return None
        if not _is_number(value) or value < 0 or (positive and value == 0):
            raise ConfigError(f"must be a number {'> 0' if positive else '>= 0'}, got {_show(value)}", path)
        if value > maximum:
            raise ConfigError(f"must be at most {maximum:.0f}, got {_show(value)}", path)
        return cast(float, int(value) if isinstance(value, int) else float(value))

    return check


def _int(minimum: int, maximum: int, *, nullable: bool = False, what: str | None = None) -> Check:
    """An integer from `minimum` to `maximum` (a float such as 3.0 counts); `what` names it in the error."""
    wanted = what or f"an integer >= {minimum}"

    def check(value: Any, path: str) -> int | None:
        if value is None and nullable:
            return None
        number = int(value) if isinstance(value, float) and value.is_integer() else value
        if not isinstance(number, int) or isinstance(number, bool) or number < minimum:
            raise ConfigError(f"must be {wanted}, got {_show(value)}", path)
        if number > maximum:
            raise ConfigError(f"must be at most {maximum}, got {_show(value)}", path)
        return number

    return check


def _text(*, nullable: bool = False, pattern: str | None = None, what: str = "") -> Check:
    regex = re.compile(pattern) if pattern else None

    def check(value: Any, path: str) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"must be a non-empty string, got {_show(value)}", path)
        if regex is not None and not regex.fullmatch(value):
            raise ConfigError(f"must be {what}, got {_show(value)}", path)
        return str(value)

    return check


def _choice(*choices: str) -> Check:
    def check(value: Any, path: str) -> str:
        if value not in choices or not isinstance(value, str):
            raise ConfigError(f"must be one of {', '.join(choices)}, got {_show(value)}", path)
        return str(value)

    return check


def _list_of(item: Check, *, non_empty: bool = False) -> Check:
    def check(value: Any, path: str) -> tuple[Any, ...]:
        items = _list(value, path)
        if non_empty and not items:
            raise ConfigError("must not be empty", path)
        if len(items) > MAX_LIST_ENTRIES:
            raise ConfigError(f"has {len(items)} entries; at most {MAX_LIST_ENTRIES} are allowed", path)
        return tuple(item(element, f"{path}[{i}]") for i, element in enumerate(items))

    return check


def _attr(key: str) -> str:
    return f"{key}_" if keyword.iskeyword(key) else key


def _key(attr: str) -> str:
    return attr[:-1] if attr.endswith("_") and keyword.iskeyword(attr[:-1]) else attr


def _object(cls: type[Any], checks: Mapping[str, Check], required: Sequence[str] = ()) -> Check:
    """A mapping with exactly the keys of `checks` (missing ones take the dataclass default)."""
    known = list(checks)

    def check(value: Any, path: str) -> Any:
        data = _mapping(value, path, known)
        kwargs: dict[str, Any] = {}
        for key, key_check in checks.items():
            if key in data:
                kwargs[_attr(key)] = key_check(data[key], _join(path, key))
            elif key in required:
                raise ConfigError("is required", _join(path, key))
        return cls(**kwargs)

    return check


def _unique(items: Sequence[Any], attr: str, path: str, what: str) -> None:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            raise ConfigError(f"{what} {_show(value)} appears more than once", f"{path}[{i}].{_key(attr)}")
        seen.add(value)


_NAME = _text()  # a non-empty name: model, source
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_RULE_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def _http_url(value: Any, path: str) -> str:
    text = _text()(value, path)
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"must be an http(s) URL, got {_show(text)} ({exc})", path) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"must be an absolute http:// or https:// URL, got {_show(text)}", path)
    return text


def _upstream(value: Any, path: str) -> str:
    text = _http_url(value, path)
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        raise ConfigError("must not contain credentials (use api_key_env)", path)
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ConfigError(f"must not have a query string or fragment, got {_show(text)}", path)
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


# --- sections ----------------------------------------------------------------------------------------


def _host_name(value: Any, path: str) -> str:
    text = _text()(value, path)
    if any(ch.isspace() or ch in "/?#@" for ch in text):
        raise ConfigError(f"must be a host name such as gateway.example.com, got {_show(text)}", path)
    return text.lower()


def _client_network(value: Any, path: str) -> str:
    text = _text()(value, path)
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ConfigError(
            f"must be an IP address or network such as 10.0.0.0/8, got {_show(text)}", path
        ) from None


_server = _object(
    ServerSettings,
    {
        "host": _text(),
        "port": _int(1, 65535, what="an integer from 1 to 65535"),
        "api_token": _text(nullable=True, pattern=r"\S+", what="a string without spaces"),
        "allowed_hosts": _list_of(_host_name),
        "allowed_clients": _list_of(_client_network),
        "upstream_ca": _text(nullable=True),
    },
)


def _storage_url(value: Any, path: str) -> str | None:
    text = _text(nullable=True)(value, path)
    if text is not None and urlsplit(text).scheme.lower() not in ("sqlite", "postgres", "postgresql"):
        raise ConfigError(
            f"must be null (SQLite in TOKENLENS_HOME), sqlite:///PATH or postgresql://..., got {_show(text)}",
            path,
        )
    return text


_storage = _object(
    StorageSettings,
    {"url": _storage_url, "store_bodies": _bool, "retention_days": _int(1, MAX_RETENTION_DAYS)},
)


def _providers(value: Any, path: str) -> FrozenMap[str, ProviderSettings]:
    data = _mapping(value, path)
    result = dict(BUILTIN_PROVIDERS)
    known = ["upstream", "format", "api_key_env"]
    for name, spec in data.items():
        where = _join(path, name)
        if not _PROVIDER_NAME.fullmatch(name):
            raise ConfigError(
                "a provider name must be lower-case letters, digits, '-' or '_' (starting with a letter or digit)",
                where,
            )
        fields = _mapping(spec, where, known)
        builtin = BUILTIN_PROVIDERS.get(name)
        if "upstream" in fields:
            upstream = _upstream(fields["upstream"], f"{where}.upstream")
        elif builtin is not None:
            upstream = builtin.upstream
        else:
            raise ConfigError("is required for a provider that is not built in", f"{where}.upstream")
        fmt = _choice("openai", "anthropic", "google")(fields.get("format", "openai"), f"{where}.format")
        if builtin is not None:
            if "format" in fields and fmt != builtin.format:
                raise ConfigError(
                    f'is always "{builtin.format}" for the built-in provider {name}', f"{where}.format"
                )
            fmt = builtin.format
        key_env = _text(nullable=True, pattern=_ENV_NAME, what="an environment variable name")(
            fields.get("api_key_env"), f"{where}.api_key_env"
        )
        result[name] = ProviderSettings(upstream, fmt, key_env)
    _check_hosts_distinct(result, path)
    return FrozenMap(result)


def _intercepted_at(name: str, provider: ProviderSettings) -> set[tuple[str, int, str]]:
    """Where HTTPS_PROXY mode meets a provider's calls: its upstream's host, port and path, and for a built-in
    provider its real host too (tokenlens.providers.intercepts)."""
    urls = {provider.upstream}
    if name in BUILTIN_PROVIDERS:
        urls.add(BUILTIN_PROVIDERS[name].upstream)
    found = set()
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found.add(((parts.hostname or "").lower(), port, parts.path.rstrip("/")))
    return found


def _check_hosts_distinct(providers: Mapping[str, ProviderSettings], path: str) -> None:
    """Two providers at the same host, port and path could not be told apart in HTTPS_PROXY mode."""
    owner: dict[tuple[str, int, str], str] = {}
    for name, provider in providers.items():
        for place in sorted(_intercepted_at(name, provider)):
            other = owner.setdefault(place, name)
            if other != name:
                host, port, prefix = place
                raise ConfigError(
                    f"{host}:{port}{prefix} is also where providers.{other} is reached, so HTTPS_PROXY mode "
                    "could not tell their calls apart; give one of them another upstream (or a path prefix)",
                    _join(_join(path, name), "upstream"),
                )


_budgets = _object(
    Budgets,
    {
        "daily_usd": _number(MAX_USD, nullable=True),
        "monthly_usd": _number(MAX_USD, nullable=True),
        "reserve_output_tokens": _int(0, MAX_OUTPUT_TOKENS),
        "fail_open": _bool,
    },
)


def _limit(cls: type[Any], key: str, caps: Mapping[str, Check]) -> Check:
    build = _object(cls, {key: _NAME, **caps}, required=(key,))

    def check(value: Any, path: str) -> Any:
        limit = build(value, path)
        if all(getattr(limit, cap) is None for cap in caps):
            raise ConfigError(f"sets no limit: give at least one of {', '.join(caps)}", path)
        return limit

    return check


_source_limit = _limit(
    SourceLimit,
    "source",
    {
        "daily_usd": _number(MAX_USD, nullable=True),
        "monthly_usd": _number(MAX_USD, nullable=True),
        "daily_calls": _int(0, MAX_CALLS, nullable=True),
    },
)
_model_limit = _limit(
    ModelLimit,
    "model",
    {"daily_calls": _int(0, MAX_CALLS, nullable=True), "daily_usd": _number(MAX_USD, nullable=True)},
)
_quotas_object = _object(
    Quotas,
    {
        "kill_switches": _list_of(_NAME),
        "source_limits": _list_of(_source_limit),
        "model_limits": _list_of(_model_limit),
        "fail_open": _bool,
    },
)


def _quotas(value: Any, path: str) -> Quotas:
    quotas: Quotas = _quotas_object(value, path)
    _unique(quotas.source_limits, "source", f"{path}.source_limits", "source")
    _unique(quotas.model_limits, "model", f"{path}.model_limits", "model")
    return quotas


_alias_object = _object(Alias, {"from": _NAME, "to": _NAME}, required=("from", "to"))


def _alias(value: Any, path: str) -> Alias:
    alias: Alias = _alias_object(value, path)
    if alias.from_ == alias.to:
        raise ConfigError(f"aliases {_show(alias.from_)} to itself", f"{path}.to")
    return alias


_model_weight = _object(
    ModelWeight, {"model": _NAME, "weight": _number(MAX_WEIGHT)}, required=("model", "weight")
)
_weight_rule_object = _object(
    WeightRule,
    {"source": _NAME, "rules": _list_of(_model_weight, non_empty=True)},
    required=("source", "rules"),
)


def _weight_rule(value: Any, path: str) -> WeightRule:
    rule: WeightRule = _weight_rule_object(value, path)
    _unique(rule.rules, "model", f"{path}.rules", "model")
    if sum(r.weight for r in rule.rules) <= 0:
        raise ConfigError("the weights must not all be 0", f"{path}.rules")
    return rule


_routing_object = _object(
    Routing,
    {
        "aliases": _list_of(_alias),
        "fallback_chains": _list_of(
            _object(
                FallbackChain,
                {"trigger_model": _NAME, "fallbacks": _list_of(_NAME, non_empty=True)},
                required=("trigger_model", "fallbacks"),
            )
        ),
        "weights": _list_of(_weight_rule),
        "latency_groups": _list_of(
            _object(
                LatencyGroup,
                {"name": _NAME, "models": _list_of(_NAME, non_empty=True)},
                required=("name", "models"),
            )
        ),
    },
)


def _routing(value: Any, path: str) -> Routing:
    routing: Routing = _routing_object(value, path)
    _unique(routing.aliases, "from_", f"{path}.aliases", "model")
    _unique(routing.weights, "source", f"{path}.weights", "source")
    _unique(routing.latency_groups, "name", f"{path}.latency_groups", "group")
    return routing


def _pattern(value: Any, path: str) -> str:
    text = _text()(value, path)
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ConfigError(f"is not a valid regular expression: {exc}", path) from None
    if compiled.search("") is not None:
        raise ConfigError("matches the empty string, so it would match every request", path)
    return text


_REDACTABLE: Check = _choice("warn", "block", "redact")


def _detector(actions: Check) -> Check:
    return _object(Detector, {"enabled": _bool, "action": actions})


_guardrails_object = _object(
    Guardrails,
    {
        "pii_detection": _detector(_REDACTABLE),
        "injection_detection": _detector(_choice("warn", "block")),
        "response_pii_detection": _detector(_REDACTABLE),
        "custom_rules": _list_of(
            _object(
                CustomRule,
                {
                    "name": _text(pattern=_RULE_NAME, what="letters, digits, '-' or '_'"),
                    "pattern": _pattern,
                    "action": _REDACTABLE,
                },
                required=("name", "pattern"),
            )
        ),
        "fail_open": _bool,
    },
)


def _guardrails(value: Any, path: str) -> Guardrails:
    guardrails: Guardrails = _guardrails_object(value, path)
    _unique(guardrails.custom_rules, "name", f"{path}.custom_rules", "rule name")
    return guardrails


_dedup = _object(
    Dedup,
    {"enabled": _bool, "ttl_s": _int(1, MAX_DEDUP_TTL_S), "max_entries": _int(1, MAX_DEDUP_ENTRIES)},
)

_RATE_NAMES = tuple(f.name for f in dataclasses.fields(PriceRates))
_rate_checks: dict[str, Check] = {name: _number(MAX_PRICE_PER_MTOK, nullable=True) for name in _RATE_NAMES}
_price_rates = _object(PriceRates, _rate_checks)
_price_tier = _object(
    PriceTier,
    {"above": _int(1, MAX_CONTEXT_TOKENS, what="a number of input tokens >= 1"), **_rate_checks},
    required=("above",),
)
_SERVICE_TIER_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _service_tiers(value: Any, path: str) -> FrozenMap[str, PriceRates]:
    data = _mapping(value, path)
    out: dict[str, PriceRates] = {}
    for name, rates in data.items():
        if not _SERVICE_TIER_NAME.fullmatch(name):
            raise ConfigError(
                f"a service tier name is lower-case (batch, flex, priority, fast...), got {_show(name)}",
                _join(path, name),
            )
        out[name] = _price_rates(rates, _join(path, name))
    return FrozenMap(out)


def _price_tiers(value: Any, path: str) -> tuple[PriceTier, ...]:
    tiers: tuple[PriceTier, ...] = _list_of(_price_tier)(value, path)
    _unique(tiers, "above", path, "a tier above")
    return tuple(sorted(tiers, key=lambda t: t.above))


_price = _object(
    PriceOverride,
    {
        "input": _number(MAX_PRICE_PER_MTOK),
        "output": _number(MAX_PRICE_PER_MTOK),
        **{name: check for name, check in _rate_checks.items() if name not in ("input", "output")},
        "tiers": _price_tiers,
        "service_tiers": _service_tiers,
        "family": _bool,
    },
    required=("input", "output"),
)


def _pricing(value: Any, path: str) -> FrozenMap[str, PriceOverride]:
    data = _mapping(value, path)
    if len(data) > MAX_LIST_ENTRIES:
        raise ConfigError(f"has {len(data)} entries; at most {MAX_LIST_ENTRIES} are allowed", path)
    out: dict[str, PriceOverride] = {}
    for model, spec in data.items():
        if not model.strip():
            raise ConfigError("a model name must not be empty", path)
        out[model] = _price(spec, _join(path, model))
    return FrozenMap(out)


_alerts = _object(Alerts, {"daily_cost_threshold": _number(MAX_USD, nullable=True)})


def _events(value: Any, path: str) -> tuple[str, ...]:
    events = _list_of(_choice(*WEBHOOK_EVENTS), non_empty=True)(value, path)
    return tuple(dict.fromkeys(events))


_webhooks = _list_of(
    _object(
        Webhook,
        {
            "url": _http_url,
            "events": _events,
            "secret": _text(nullable=True),
            "format": _choice("json", "slack"),
        },
        required=("url",),
    )
)


def _timezone(value: Any, path: str) -> str:
    name = _text()(value, path)
    if name == "local":
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        raise ConfigError(
            f'must be "local" or an IANA time zone name such as "Europe/Paris", got {_show(name)}{hint}', path
        ) from None
    return name


# --- platforms (Azure OpenAI, Vertex AI, Bedrock; tokenlens.platforms) ----------------------------------

_AZURE_RESOURCE = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}"
_CLOUD_REGION = r"[a-z]{2,}(?:-[a-z0-9]+){1,3}|global"


def _platforms(value: Any, path: str) -> Platforms:
    data = _mapping(value, path, ("azure", "vertex", "bedrock"))
    azure = _mapping(data.get("azure"), _join(path, "azure"), ("resource", "endpoint"))
    vertex = _mapping(data.get("vertex"), _join(path, "vertex"), ("project", "region", "endpoint"))
    bedrock = _mapping(data.get("bedrock"), _join(path, "bedrock"), ("region", "endpoint"))

    def endpoint(fields: Mapping[str, Any], where: str) -> str | None:
        raw = fields.get("endpoint")
        return None if raw is None else _upstream(raw, _join(where, "endpoint"))

    def region(fields: Mapping[str, Any], where: str) -> str | None:
        return _text(nullable=True, pattern=_CLOUD_REGION, what="a region such as us-east-1 or us-east5")(
            fields.get("region"), _join(where, "region")
        )

    where = _join(path, "azure")
    resource = _text(
        nullable=True, pattern=_AZURE_RESOURCE, what="an Azure resource name (letters, digits, -)"
    )(azure.get("resource"), _join(where, "resource"))
    project = _text(nullable=True, pattern=r"[a-z][a-z0-9-]{4,61}[a-z0-9]", what="a Google Cloud project id")(
        vertex.get("project"), _join(path, "vertex.project")
    )
    return Platforms(
        AzurePlatform(resource, endpoint(azure, where)),
        VertexPlatform(
            project, region(vertex, _join(path, "vertex")), endpoint(vertex, _join(path, "vertex"))
        ),
        BedrockPlatform(region(bedrock, _join(path, "bedrock")), endpoint(bedrock, _join(path, "bedrock"))),
    )


_SECTION_CHECKS: dict[str, Check] = {
    "server": _server,
    "storage": _storage,
    "providers": _providers,
    "budgets": _budgets,
    "quotas": _quotas,
    "routing": _routing,
    "guardrails": _guardrails,
    "dedup": _dedup,
    "pricing": _pricing,
    "alerts": _alerts,
    "webhooks": _webhooks,
    "timezone": _timezone,
    "platforms": _platforms,
}


# --- public API: parse and serialise ---------------------------------------------------------------


def parse_settings(data: Mapping[str, Any] | None) -> Settings:
    """Validate a configuration mapping (as read from YAML or JSON); missing keys take their defaults."""
    sections = _mapping(data, "", SECTIONS)
    kwargs = {
        name: _SECTION_CHECKS[name](sections[name], name)
        for name in SECTIONS
        if name in sections and not (name == "timezone" and sections[name] is None)
    }
    return Settings(**kwargs)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_key(f.name): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain, JSON-serialisable data in the shape of the file (`parse_settings` reads it back equal).

    It includes `server.api_token` and webhook secrets: do not send it to a browser as it is.
    """
    result: dict[str, Any] = _plain(settings)
    return result


def _check_section(name: str, allowed: Sequence[str]) -> None:
    if name not in allowed:
        raise ConfigError(_unknown_key(name, allowed).replace("unknown key", "unknown section"), name)


def section_to_dict(settings: Settings, name: str) -> Any:
    """One section in the shape of the file: a dict, or a list for `webhooks`, a string for `timezone`."""
    _check_section(name, SECTIONS)
    return _plain(getattr(settings, name))


def _section_data(name: str, data: Any) -> Any:
    # PUT /api/settings/webhooks may send the list itself or {"webhooks": [...]}.
    if name == "webhooks" and isinstance(data, Mapping) and set(data) == {"webhooks"}:
        return data["webhooks"]
    return data


def replace_section(settings: Settings, name: str, data: Any) -> Settings:
    """`settings` with section `name` replaced by `data` (validated; missing keys take their defaults).

    Only the sections of `EDITABLE_SECTIONS` can be replaced (the config API cannot change `server`,
    `storage`, `providers` or `timezone`). Raises ConfigError with the full field path.
    """
    _check_section(name, EDITABLE_SECTIONS)
    return dataclasses.replace(settings, **{name: _SECTION_CHECKS[name](_section_data(name, data), name)})
