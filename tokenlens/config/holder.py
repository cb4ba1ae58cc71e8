"""The current settings of a running gateway, and the one announcement of their changes.

`SettingsHolder.get()` is what every reader calls (no lock: the settings are frozen and replaced as a whole).
Whoever changes the configuration (the config API, the file watcher, the shared-config sync) calls `replace`
or `replace_if_unchanged`; each replacement is announced once to the callbacks registered with `on_change`,
with the names of the top-level sections whose value changed (mitmproxy's `configure(updated)`), so state
derived from the settings is rebuilt in one place instead of being checked on every read.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import weakref
from collections.abc import Callable

from tokenlens.config.model import Settings

log = logging.getLogger(__name__)

type ChangeCallback = Callable[[Settings, frozenset[str]], None]
"""Called with (the new settings, the names of the sections whose value changed)."""


def changed_sections(old: Settings, new: Settings) -> frozenset[str]:
    """The top-level sections (`Settings` field names) whose value differs between `old` and `new`."""
    if old is new:
        return frozenset()
    return frozenset(
        f.name for f in dataclasses.fields(Settings) if getattr(old, f.name) != getattr(new, f.name)
    )


class SettingsHolder:
    """The current Settings; replaced as a whole when the configuration changes (readers never lock).

    `version` counts replacements (for `replace_if_unchanged`, a compare and swap). A replacement that changes
    at least one section is announced to the `on_change` callbacks, in the thread that replaced the settings,
    after the swap and before `replace` returns; replacements are announced in the order they happened. A
    callback that raises is logged and the others still run. A callback must not replace the settings itself.
    A bound method is held weakly (as blinker's signals, mitmproxy's, hold receivers): registering
    `self.configure` does not keep `self` alive, and a collected object is forgotten.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Held across the swap and its announcement, so two replacements are never announced out of order.
        self._lock = threading.RLock()
        self._callbacks: list[Callable[[], ChangeCallback | None]] = []  # None: a collected method's object
        self.version = 0

    def get(self) -> Settings:
        return self._settings

    def on_change(self, callback: ChangeCallback) -> None:
        """Call `callback(settings, updated)` after every replacement that changes a section, where `updated`
        is the set of the changed sections' names (`"pricing"`, `"providers"`, ...)."""
        ref: Callable[[], ChangeCallback | None] = (
            weakref.WeakMethod(callback) if inspect.ismethod(callback) else (lambda: callback)
        )
        with self._lock:
            self._callbacks.append(ref)

    def replace(self, settings: Settings) -> None:
        with self._lock:
            self._swap(settings)

    def replace_if_unchanged(self, version: int, settings: Settings) -> bool:
        """Replace only if nothing replaced the settings since `version` was read (compare and swap)."""
        with self._lock:
            if self.version != version:
                return False
            self._swap(settings)
            return True

    def _swap(self, settings: Settings) -> None:
        old, self._settings = self._settings, settings
        self.version += 1
        updated = changed_sections(old, settings)
        if not updated:
            return
        live = [(ref, callback) for ref in self._callbacks if (callback := ref()) is not None]
        self._callbacks = [ref for ref, _ in live]
        for _, callback in live:
            try:
                callback(settings, updated)
            except Exception:
                log.exception("a settings change callback failed (%s changed)", ", ".join(sorted(updated)))
