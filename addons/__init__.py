"""The mitmproxy layer: one addon per pipeline stage, in the order of docs/gateway.md#the-pipeline.

`gateway(deps)` is the one addon the daemon gives mitmproxy (`dispatch.Pipeline`), running `pipeline(deps)`.
"""

from __future__ import annotations

from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig

from tokenlens.addons.access import AccessControl
from tokenlens.addons.budget import BudgetCheck
from tokenlens.addons.config_watch import ConfigWatcher
from tokenlens.addons.dedup import DedupCache
from tokenlens.addons.dispatch import GatePolicy, Pipeline, request_stages
from tokenlens.addons.guardrails_request import RequestGuardrails
from tokenlens.addons.guardrails_response import ResponseGuardrails
from tokenlens.addons.heatmap import TokenHeatmap
from tokenlens.addons.ingress import Ingress
from tokenlens.addons.lan_guard import LanGuard
from tokenlens.addons.platform_auth import PlatformAuth
from tokenlens.addons.quota import QuotaCheck
from tokenlens.addons.recorder import Recorder
from tokenlens.addons.routing import ModelRouter
from tokenlens.addons.upstream import Upstream
from tokenlens.addons.waste import WasteDetector
from tokenlens.addons.websocket import WebSocketCalls
from tokenlens.addons.workflows import AgentWorkflows
from tokenlens.app import AppDeps
from tokenlens.config import Settings


def _never(settings: Settings) -> bool:
    return False


# The gates: a request one of them cannot check is refused (503, `x-tokenlens-blocked-by` naming the gate)
# unless that gate's `fail_open` is true. An error in any other stage (analyses) is logged and the call goes on.
GATES: dict[type, GatePolicy] = {
    AccessControl: ("request", _never),
    Ingress: ("request", _never),
    BudgetCheck: ("budget", lambda settings: settings.budgets.fail_open),
    QuotaCheck: ("quota", lambda settings: settings.quotas.fail_open),
    ModelRouter: ("routing", _never),
    RequestGuardrails: ("guardrail", lambda settings: settings.guardrails.fail_open),
}


def pipeline(deps: AppDeps) -> list[object]:
    """The stages in order; every hook runs through this list top to bottom."""
    # The request stages, which also gate and analyse each call on a WebSocket (one per response.create frame).
    call_stages = [
        AgentWorkflows(deps),  # conversations, session turns, rate-limit headers (deferred analyses)
        BudgetCheck(deps),  # 1
        QuotaCheck(deps),  # 2
        ModelRouter(deps),  # 3
        RequestGuardrails(deps),  # 4
        WasteDetector(deps),  # 5
        TokenHeatmap(deps),  # 6
    ]
    gates = [stage for stage in call_stages if type(stage) in GATES]
    return [
        ConfigWatcher(deps),  # keeps deps.settings current
        AccessControl(deps),  # who may use the gateway: allowed clients, Host names, the API token
        Ingress(deps),  # what is this request: provider call, dashboard, or someone else's traffic
        LanGuard(deps),  # other machines' clients never reach this host's own services
        WebSocketCalls(  # the calls on Responses and Realtime WebSockets
            deps, request_stages(deps, call_stages, GATES), request_stages(deps, gates, GATES)
        ),
        *call_stages,
        DedupCache(deps),  # 7
        PlatformAuth(deps),  # signs platform calls (Bedrock, Vertex) after routing; keeps client-signed ones
        Upstream(),  # 8
        ResponseGuardrails(deps),  # 9
        Recorder(deps),  # 10; 11, the broadcast, is the writer thread's (`tokenlens.bus.RecordFanout`)
    ]


def mitmproxy_addons() -> list[object]:
    """The few of mitmproxy's own addons a gateway runs beside `gateway` (mitmdump loads about 35, and every
    hook of every request visits each of them): the proxy server and its layers, TLS interception (HTTPS_PROXY
    mode), the refusal of h2c upgrades mitmproxy cannot relay, and the start-up error check. Access control
    (`server.allowed_clients`, the API token) is the ingress stage's; nothing is blocked by mitmproxy itself."""
    return [
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        errorcheck.ErrorCheck(),
    ]


def gateway(deps: AppDeps) -> Pipeline:
    """The one addon mitmproxy runs."""
    return Pipeline(deps, pipeline(deps), GATES)
