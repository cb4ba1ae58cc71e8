"""Routing decisions (docs/gateway.md#the-pipeline stage 3, docs/analytics-api.md `PUT /api/config/routing`): pure functions over the settings.

Order of the rules for one call:
1. a weight rule of the call's source whose models the call's provider serves picks a model at random;
2. otherwise an alias renames the model asked for, and a latency-group name becomes its fastest member;
3. the first fallback chain whose `trigger_model` equals the routed model adds the models tried after it.

A model is served by a provider when its family (by name: `gpt-`/`o1`… OpenAI, `claude` Anthropic, `gemini`
Google) is the provider's format, or when its family is unknown. An OpenAI chat-completions request may go to a
model of another family through that provider's OpenAI-compatible endpoint, with the key from the environment
variable named in `providers.<name>.api_key_env` (a cross-provider target).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from tokenlens.config import ConfigError, ProviderSettings, Routing, Settings
from tokenlens.providers import SECRET_HEADERS

_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(gpt-|chatgpt-|o\d(-|$)|text-embedding-|davinci|babbage|codex-|computer-use-)"), "openai"),
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^(gemini|gemma|text-embedding-00|embedding-00|learnlm)"), "google"),
)
# The OpenAI-compatible chat-completions path of each wire format, below the upstream's base path.
COMPAT_CHAT_PATH = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/chat/completions",
    "google": "/v1beta/openai/chat/completions",
}
RETRYABLE_STATUS = frozenset({429})  # plus every 5xx


def model_family(model: str | None) -> str | None:
    """ "openai", "anthropic", "google", or None when the name says nothing."""
    if not model:
        return None
    name = model.lower().removeprefix("models/")
    for pattern, family in _FAMILIES:
        if pattern.match(name):
            return family
    return None


def is_retryable(status: int) -> bool:
    """An upstream answer a fallback chain moves on from: 429 or any 5xx (Anthropic's 529 included)."""
    return status in RETRYABLE_STATUS or status >= 500


def serves(provider: ProviderSettings, model: str) -> bool:
    family = model_family(model)
    return family is None or family == provider.format


def provider_for_family(settings: Settings, family: str) -> str | None:
    """The configured provider of a family: the one named after it when its format matches, else the first."""
    named = settings.providers.get(family)
    if named is not None and named.format == family:
        return family
    return next((name for name, p in settings.providers.items() if p.format == family), None)


@dataclass(frozen=True)
class Target:
    """One model to call and where: on the call's own provider, or cross-provider (OpenAI-compatible)."""

    model: str
    provider: str
    cross: bool = False


@dataclass(frozen=True)
class Route:
    """The routing decision of one call."""

    requested: str | None
    targets: tuple[Target, ...]  # the first is called; the others are the fallback chain, in order
    rule: str | None = None  # "alias", "weight", "latency", or None
    notes: tuple[str, ...] = ()  # why a configured rule did not apply

    @property
    def model(self) -> str | None:
        return self.targets[0].model if self.targets else self.requested

    @property
    def has_chain(self) -> bool:
        return len(self.targets) > 1

    def as_details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "requested": self.requested, "model": self.model}
        if self.targets and self.targets[0].cross:
            out["provider"] = self.targets[0].provider
        if self.has_chain:
            out["chain"] = [t.model for t in self.targets]
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class LatencyChooser(Protocol):
    def choose(self, models: Sequence[str], stream: bool, rng: random.Random) -> str: ...


@dataclass(frozen=True)
class CallInfo:
    """What routing needs to know about a call."""

    provider: str  # configured provider name
    api: str  # wire format of the request
    kind: str  # tokenlens.usage.endpoint_kind
    source: str
    model: str | None
    stream: bool = False


@dataclass
class _Planner:
    settings: Settings
    call: CallInfo
    notes: list[str] = field(default_factory=list)

    def target(self, model: str) -> Target | None:
        """Where `model` is served for this call, or None when it cannot be (noted)."""
        own = self.settings.providers.get(self.call.provider)
        if own is None or serves(own, model):
            return Target(model, self.call.provider)
        family = model_family(model)
        if self.call.api != "openai" or self.call.kind != "chat":
            self.notes.append(f"{model}: another provider's model, and this request is not OpenAI chat")
            return None
        name = provider_for_family(self.settings, family) if family else None
        if name is None:
            self.notes.append(f"{model}: no {family} provider is configured")
            return None
        if not api_key_for(self.settings.providers[name]):
            self.notes.append(f"{model}: providers.{name}.api_key_env is not set or names an empty variable")
            return None
        return Target(model, name, cross=True)


def api_key_for(provider: ProviderSettings) -> str | None:
    if not provider.api_key_env:
        return None
    return os.environ.get(provider.api_key_env) or None


def decide(
    settings: Settings, call: CallInfo, rng: random.Random, latency: LatencyChooser | None = None
) -> Route:
    """The route of one call (see the module docstring for the order of the rules)."""
    routing = settings.routing
    requested = call.model
    if requested is None or not _has_rules(routing):
        return Route(requested, (Target(requested, call.provider),) if requested else ())
    planner = _Planner(settings, call)
    first: Target | None = None
    rule: str | None = None
    weights = next((w for w in routing.weights if w.source == call.source), None)
    own = settings.providers.get(call.provider)
    if weights is not None and own is not None and all(serves(own, r.model) for r in weights.rules):
        chosen = _weighted(weights.rules, rng)
        first, rule = Target(chosen, call.provider), "weight"
    if first is None:
        model = requested
        alias = next((a for a in routing.aliases if a.from_ == model), None)
        if alias is not None:
            model, rule = alias.to, "alias"
        group = next((g for g in routing.latency_groups if g.name == model), None)
        if group is not None:
            members = [t for m in group.models if (t := planner.target(m)) is not None]
            if members:
                by_model = {t.model: t for t in members}
                pick = (
                    latency.choose(list(by_model), call.stream, rng)
                    if latency
                    else rng.choice(list(by_model))
                )
                first, rule = by_model[pick], "latency"
        elif model != requested:
            first = planner.target(model)
            if first is None:
                rule = None
    if first is None:
        first = Target(requested, call.provider)
    targets = [first]
    chain = next((c for c in routing.fallback_chains if c.trigger_model == first.model), None)
    if chain is not None:
        for model in chain.fallbacks:
            target = planner.target(model)
            if target is not None and all(t.model != model or t.provider != target.provider for t in targets):
                targets.append(target)
    return Route(requested, tuple(targets), rule, tuple(planner.notes))


def _has_rules(routing: Routing) -> bool:
    return bool(routing.aliases or routing.fallback_chains or routing.weights or routing.latency_groups)


def _weighted(rules: Sequence[Any], rng: random.Random) -> str:
    total = sum(r.weight for r in rules)
    point = rng.random() * total
    for rule in rules:
        point -= rule.weight
        if point < 0 and rule.weight > 0:
            return str(rule.model)
    return str(next(r.model for r in reversed(rules) if r.weight > 0))


# --- requests for a target -----------------------------------------------------------------------------------

HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "upgrade"}
)


@dataclass(frozen=True)
class RequestParts:
    """An upstream request as plain values."""

    method: str
    url: str  # absolute, query included
    headers: tuple[tuple[str, str], ...]
    body: bytes


def with_model(api: str, parts: RequestParts, old_model: str | None, model: str) -> RequestParts:
    """The same request with another model: the model's path segment where the path names it (Gemini's and
    Vertex's `/models/<model>:`, Bedrock's `/model/<model id>/`), else the JSON `model`."""
    if old_model:
        for before, after in (
            (f"/models/{old_model}:", f"/models/{model}:"),
            (f"/model/{old_model}/", f"/model/{model}/"),
            (f"/model/{quote(old_model, safe='')}/", f"/model/{quote(model, safe='')}/"),
        ):
            if before in parts.url:
                return dataclasses.replace(parts, url=parts.url.replace(before, after, 1))
    body = body_with_model(parts.body, model)
    return dataclasses.replace(parts, body=body) if body is not None else parts


def body_with_model(body: bytes, model: str) -> bytes | None:
    """The JSON body with its `model` set, or None when the body is not a JSON object."""
    try:
        value = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    value["model"] = model
    return json.dumps(value, ensure_ascii=False).encode()


def compat_url(provider: ProviderSettings) -> str:
    """The OpenAI-compatible chat-completions URL of a provider."""
    return provider.url(COMPAT_CHAT_PATH[provider.format])


def cross_auth(provider: ProviderSettings) -> list[tuple[str, str]]:
    """The credentials of an OpenAI-compatible endpoint, from `providers.<name>.api_key_env`."""
    key = api_key_for(provider) or ""
    headers = [("authorization", f"Bearer {key}")]
    if provider.format == "anthropic":
        headers.append(("x-api-key", key))
    return headers


def cross_request(parts: RequestParts, provider: ProviderSettings, model: str) -> RequestParts:
    """An OpenAI chat-completions request sent to another provider's OpenAI-compatible endpoint."""
    headers = [(k, v) for k, v in parts.headers if k.lower() not in SECRET_HEADERS]
    headers += cross_auth(provider)
    body = body_with_model(parts.body, model)
    return RequestParts(
        parts.method, compat_url(provider), tuple(headers), body if body is not None else parts.body
    )


def request_for(
    api: str,
    base: RequestParts,
    base_model: str | None,
    target: Target,
    providers: Mapping[str, ProviderSettings],
) -> RequestParts:
    """The request for one target, from the request as it would go to the call's own provider."""
    if target.cross:
        return cross_request(base, providers[target.provider], target.model)
    if target.model == base_model:
        return base
    return with_model(api, base, base_model, target.model)


# --- configuration checks (PUT /api/config/routing) ------------------------------------------------------------


class KnowsModel(Protocol):
    def __call__(self, provider: str, model: str) -> bool: ...


def check_routing(settings: Settings, knows: KnowsModel) -> list[str]:
    """Raise ConfigError for a cross-provider rule that cannot be served; warnings for unknown model names."""
    routing = settings.routing
    for i, alias in enumerate(routing.aliases):
        _check_cross(settings, alias.from_, alias.to, f"routing.aliases[{i}].to")
    for i, chain in enumerate(routing.fallback_chains):
        for j, model in enumerate(chain.fallbacks):
            _check_cross(settings, chain.trigger_model, model, f"routing.fallback_chains[{i}].fallbacks[{j}]")
    warnings: list[str] = []
    for i, rule in enumerate(routing.weights):
        families = {model_family(r.model) for r in rule.rules} - {None}
        if len(families) > 1:
            warnings.append(
                f"routing.weights[{i}]: the models belong to different providers "
                f"({', '.join(sorted(str(f) for f in families))}), so no provider serves them all and the "
                "rule never applies"
            )
    groups = {g.name for g in routing.latency_groups}
    seen: dict[str, str] = {}
    for i, alias in enumerate(routing.aliases):
        seen.setdefault(alias.to, f"routing.aliases[{i}].to")
    for i, chain in enumerate(routing.fallback_chains):
        seen.setdefault(chain.trigger_model, f"routing.fallback_chains[{i}].trigger_model")
        for j, model in enumerate(chain.fallbacks):
            seen.setdefault(model, f"routing.fallback_chains[{i}].fallbacks[{j}]")
    for i, rule in enumerate(routing.weights):
        for j, weight in enumerate(rule.rules):
            seen.setdefault(weight.model, f"routing.weights[{i}].rules[{j}].model")
    for i, group in enumerate(routing.latency_groups):
        for j, model in enumerate(group.models):
            seen.setdefault(model, f"routing.latency_groups[{i}].models[{j}]")
    for model, where in seen.items():
        if model in groups:
            continue
        provider = provider_for_family(settings, model_family(model) or "") or "openai"
        if not knows(provider, model):
            warnings.append(
                f"{where}: unknown model {model!r} (not in the price database; calls are unpriced)"
            )
    return warnings


def _check_cross(settings: Settings, source_model: str, target_model: str, where: str) -> None:
    source, target = model_family(source_model), model_family(target_model)
    if source is None or target is None or source == target:
        return
    if source != "openai":
        raise ConfigError(
            f"routes {source_model!r} ({source}) to {target_model!r} ({target}): only OpenAI chat-completions "
            "requests can be sent to another provider (through its OpenAI-compatible endpoint)",
            where,
        )
    name = provider_for_family(settings, target)
    if name is None:
        raise ConfigError(f"{target_model!r} needs a {target} provider, and none is configured", where)
    if not settings.providers[name].api_key_env:
        raise ConfigError(
            f"{target_model!r} is served cross-provider by {name!r}, which needs "
            f"providers.{name}.api_key_env (the environment variable holding its API key)",
            where,
        )


@dataclass
class ChainPlan:
    """Set by the routing stage on a call whose routed model has a fallback chain (`Exchange.chain`); the
    upstream stage hands it to the chain service (`tokenlens.chain`)."""

    targets: tuple[Target, ...]
    own_url: str  # the request's URL on its own provider (model already routed, before a cross-provider move)
    base_model: str | None  # the model that URL and body name
    client_auth: tuple[tuple[str, str], ...]  # the client's own credentials, for targets on its provider
    providers: Mapping[str, ProviderSettings]
    token: str | None = None
