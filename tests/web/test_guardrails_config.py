"""PUT /api/config/guardrails refuses bad and catastrophic-backtracking patterns (docs/analytics-api.md)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient


@pytest.mark.parametrize("pattern", ["(a+)+$", "(\\w*\\s?)*x", "(a|aa)*b", "[unclosed"])
def test_bad_patterns_get_400_naming_the_field(web_client: FlaskClient, pattern: str) -> None:
    body = {"custom_rules": [{"name": "bad", "pattern": pattern, "action": "block"}]}
    response = web_client.put("/api/config/guardrails", json=body)
    assert response.status_code == 400
    data = response.get_json()
    assert "pattern" in data["field"] and data["error"]
    assert web_client.get("/api/config/guardrails").get_json()["custom_rules"] == []


def test_a_safe_pattern_is_accepted(web_client: FlaskClient) -> None:
    body = {"custom_rules": [{"name": "no-ssn", "pattern": "\\d{3}-\\d{2}-\\d{4}", "action": "block"}]}
    response = web_client.put("/api/config/guardrails", json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["custom_rules"][0]["name"] == "no-ssn"
