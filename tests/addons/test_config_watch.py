import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons

from tokenlens.addons.config_watch import ConfigWatcher, allow_hosts_for
from tokenlens.app import AppDeps


def test_a_changed_file_applies_and_updates_interception(deps: AppDeps) -> None:
    path: Path = deps.config_path
    watcher = ConfigWatcher(deps)
    with taddons.context(watcher) as tctx:
        tctx.options.update(allow_hosts=allow_hosts_for(deps.settings.get()))
        path.write_text(
            "providers:\n  vllm: {upstream: 'https://llm.internal:8443'}\nbudgets: {daily_usd: 5}\n"
        )
        assert watcher.check()
        settings = deps.settings.get()
        assert settings.budgets.daily_usd == 5 and "vllm" in settings.providers
        assert r"^llm\.internal:8443$" in tctx.options.allow_hosts
        assert not watcher.check()  # unchanged file: nothing to do


def test_an_invalid_file_keeps_the_running_configuration(deps: AppDeps) -> None:
    before = deps.settings.get()
    deps.config_path.write_text("budgets: {daily_usd: ten}\n")
    watcher = ConfigWatcher(deps)
    deps.config_path.write_text("budgets: {daily_usd: eleven}\n")
    with taddons.context(watcher):
        assert not watcher.check()
    assert deps.settings.get() is before


def test_server_and_storage_are_read_at_start_only(deps: AppDeps) -> None:
    before = deps.settings.get()
    watcher = ConfigWatcher(deps)
    deps.config_path.write_text("server: {port: 9999}\nalerts: {daily_cost_threshold: 3}\n")
    with taddons.context(watcher):
        assert watcher.check()
    after = deps.settings.get()
    assert after.server == before.server and after.alerts.daily_cost_threshold == 3


def test_the_file_is_read_off_the_event_loop(deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with thousands of kill switches takes seconds to parse: the proxy's loop must not wait on it."""
    import tokenlens.addons.config_watch as module

    threads: list[int] = []
    real_load = module.load_settings

    def load(path: Path) -> Any:
        threads.append(threading.get_ident())
        return real_load(path)

    monkeypatch.setattr(module, "load_settings", load)
    watcher = ConfigWatcher(deps, interval=0.01)

    async def run() -> int:
        task = asyncio.get_running_loop().create_task(watcher._watch())
        deps.config_path.write_text("budgets: {daily_usd: 7}\n")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if deps.settings.get().budgets.daily_usd == 7:
                break
        task.cancel()
        return threading.get_ident()

    with taddons.context(watcher):
        loop_thread = asyncio.run(run())
    assert deps.settings.get().budgets.daily_usd == 7
    assert threads and loop_thread not in threads


def test_a_change_made_while_the_file_was_read_is_not_undone(deps: AppDeps) -> None:
    """The config API writes the file and applies the change at once; a reload that read the file just before
    must not put the older configuration back (a call in between would meet stale guardrails)."""
    from tokenlens.config import load_settings

    watcher = ConfigWatcher(deps)
    deps.config_path.write_text("budgets: {daily_usd: 1}\n")
    with taddons.context(watcher):
        version = deps.settings.version
        stale = watcher.read()  # the watcher read the file...
        assert stale is not None
        deps.config_path.write_text("budgets: {daily_usd: 2}\n")  # ...then the API wrote and applied a change
        deps.settings.replace(load_settings(deps.config_path))
        assert not watcher.apply(stale, version)
        assert deps.settings.get().budgets.daily_usd == 2
        assert watcher.check()  # read again next time: the file's current content
        assert deps.settings.get().budgets.daily_usd == 2
