"""Recommendations drawn from the per-call analysis: history bloat (docs/analytics-api.md#how-the-figures-are-computed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flask.testing import FlaskClient


def test_history_bloat_is_recommended_with_its_saving(web_client: FlaskClient, tmp_path: Path) -> None:
    now = time.time()
    lines = []
    # chatty-agent: 4 calls of 10,000 input tokens at $3/M (input cost $0.03 each), 80% of it history
    for i in range(4):
        lines.append(
            {
                "id": f"bloat{i}",
                "ts": now - 3600 * (i + 1),
                "provider": "anthropic",
                "model": "claude-sonnet-4-6",
                "source": "chatty-agent",
                "input_tokens": 10_000,
                "output_tokens": 100,
                "input_cost_usd": 0.03,
                "output_cost_usd": 0.0015,
                "cost_usd": 0.0315,
                "details": {
                    "heatmap": {
                        "system": 500,
                        "tools": 0,
                        "context": 0,
                        "history": 8000,
                        "query": 1500,
                        "turns": 5,
                        "scaled": True,
                    }
                },
            }
        )
    # lean-agent: 20% history, not bloated
    lines.append(
        {
            "id": "lean0",
            "ts": now - 3600,
            "provider": "anthropic",
            "model": "claude-sonnet-4-6",
            "source": "lean-agent",
            "input_tokens": 1000,
            "output_tokens": 100,
            "details": {
                "heatmap": {
                    "system": 800,
                    "tools": 0,
                    "context": 0,
                    "history": 200,
                    "query": 0,
                    "turns": 2,
                    "scaled": True,
                }
            },
        }
    )
    body = "\n".join(json.dumps(line) for line in lines)
    imported = web_client.post("/api/import", data=body, content_type="application/x-ndjson")
    assert imported.status_code == 200 and imported.json["imported"] == 5
    recs = web_client.get("/api/usage/recommendations?days=7").json["recommendations"]
    bloat = [r for r in recs if r["kind"] == "history_bloat"]
    assert [r["source"] for r in bloat] == ["chatty-agent"]
    # trimming history from 80% to the 60% threshold saves 20% of $0.12 input spend in 7 days, per 30 days
    assert abs(bloat[0]["saving_usd_month"] - 0.2 * 0.12 * 30 / 7) < 1e-9
    assert bloat[0]["evidence"]["history_share"] == 0.8
