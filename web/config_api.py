"""Configuration API (docs/analytics-api.md): GET returns a section in the shape of the file, PUT validates and replaces it.

A valid PUT is written back into the YAML file (only that section; the user's comments elsewhere stay) and
applies to the next request without a restart. With a shared store (PostgreSQL) the section is also kept in
the store, and every gateway on it applies it within a second (tokenlens.config_sync). An invalid body gets 400 `{"error", "field"}` and changes
nothing. Sections may register extra checks (`register_check`) that raise ConfigError or return warnings.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from tokenlens.app import AppDeps
from tokenlens.config import ConfigError, Settings, replace_section, section_to_dict, write_section

bp = Blueprint("config_api", __name__)

ROUTES: dict[str, str] = {
    "/api/config/quotas": "quotas",
    "/api/config/routing": "routing",
    "/api/config/guardrails": "guardrails",
    "/api/settings/budget": "budgets",
    "/api/settings/alerts": "alerts",
    "/api/settings/pricing": "pricing",
    "/api/settings/webhooks": "webhooks",
    "/api/settings/dedup": "dedup",
}
SECRET_MASK = "********"

# section -> checks run on the candidate Settings; each raises ConfigError or returns warnings
SectionCheck = Callable[[Settings, AppDeps], list[str]]
_checks: dict[str, list[SectionCheck]] = {}
_write_lock = threading.Lock()


def register_check(section: str, check: SectionCheck) -> None:
    _checks.setdefault(section, []).append(check)


def _deps() -> AppDeps:
    found: AppDeps = current_app.extensions["tokenlens"]
    return found


def _bad(message: str, field: str | None) -> tuple[Response, int]:
    return jsonify({"error": message, "field": field}), 400


def _masked(name: str, data: Any) -> Any:
    if name == "webhooks":
        return [{**hook, "secret": SECRET_MASK if hook.get("secret") else None} for hook in data]
    return data


def _unmasked(name: str, data: Any, current: Settings) -> Any:
    """A webhook secret sent back as the mask keeps the secret already configured for that URL."""
    if name != "webhooks" or not isinstance(data, list):
        return data
    known = {hook.url: hook.secret for hook in current.webhooks}
    return [
        {**hook, "secret": known.get(str(hook.get("url")))}
        if isinstance(hook, dict) and hook.get("secret") == SECRET_MASK
        else hook
        for hook in data
    ]


def get_section(name: str) -> Response:
    return jsonify(_masked(name, section_to_dict(_deps().settings.get(), name)))


def put_section(name: str) -> Response | tuple[Response, int]:
    body = request.get_json(silent=True)
    if body is None:
        return _bad("the body must be JSON", None)
    deps = _deps()
    with _write_lock:
        current = deps.settings.get()
        try:
            candidate = replace_section(current, name, _unmasked(name, body, current))
            warnings = [w for check in _checks.get(name, []) for w in check(candidate, deps)]
        except ConfigError as problem:
            return _bad(str(problem), problem.field)
        data = section_to_dict(candidate, name)
        sync = deps.config_sync
        with sync.lock if sync is not None else contextlib.nullcontext():
            try:
                write_section(deps.config_path, name, data)
            except ConfigError as problem:
                return _bad(str(problem), problem.field)
            if sync is not None:
                try:
                    sync.publish(name, data)  # every gateway on the store applies it
                except Exception as problem:
                    # nothing changes anywhere: the file gets its section back
                    write_section(deps.config_path, name, section_to_dict(current, name))
                    message = f"the shared store could not be updated ({type(problem).__name__}: {problem})"
                    return jsonify({"error": message, "field": None}), 503
            deps.settings.replace(candidate)
    result = _masked(name, section_to_dict(candidate, name))
    if warnings:
        result = (
            {"section": result, "warnings": warnings}
            if isinstance(result, list)
            else {**result, "warnings": warnings}
        )
    return jsonify(result)


def _register() -> None:
    for path, name in ROUTES.items():
        bp.add_url_rule(path, f"get_{name}", lambda name=name: get_section(name), methods=["GET"])
        bp.add_url_rule(path, f"put_{name}", lambda name=name: put_section(name), methods=["PUT"])


_register()
