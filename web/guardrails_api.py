"""Guardrails configuration checks: custom-rule patterns must compile and must not backtrack catastrophically.

Registered with the config API at import, so `PUT /api/config/guardrails` answers 400 `{"error", "field"}`
for a bad pattern before anything is written.
"""

from __future__ import annotations

from flask import Blueprint

from tokenlens.app import AppDeps
from tokenlens.config import ConfigError, Settings
from tokenlens.guardrails.patterns import check_pattern
from tokenlens.web import config_api

bp = Blueprint("guardrails_api", __name__)


def check_custom_rules(settings: Settings, deps: AppDeps) -> list[str]:
    for i, rule in enumerate(settings.guardrails.custom_rules):
        try:
            check_pattern(rule.pattern)
        except ValueError as problem:
            raise ConfigError(f"pattern {problem}", f"guardrails.custom_rules[{i}].pattern") from None
    return []


config_api.register_check("guardrails", check_custom_rules)
