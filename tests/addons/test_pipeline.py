from tokenlens.addons import TokenLens
from tokenlens.addons.broadcast import Broadcaster
from tokenlens.app import AppDeps


def test_stages_run_in_the_order_of_spec_section_6(deps: AppDeps) -> None:
    names = [a.name for a in TokenLens(deps, Broadcaster(deps.bus)).addons]
    assert names == [
        "tokenlens.config",
        "tokenlens.ingress",
        "tokenlens.workflows",
        "tokenlens.budget",
        "tokenlens.quota",
        "tokenlens.routing",
        "tokenlens.request_guardrails",
        "tokenlens.waste",
        "tokenlens.heatmap",
        "tokenlens.dedup",
        "tokenlens.upstream",
        "tokenlens.response_guardrails",
        "tokenlens.recorder",
        "tokenlens.broadcast",
    ]
    assert len(set(names)) == len(names)  # mitmproxy refuses duplicate addon names
