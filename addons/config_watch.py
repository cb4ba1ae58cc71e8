"""Configuration reload: a change to the YAML file (by hand or through the config API) applies to the next
request, without a restart. An invalid file is reported and the running configuration stays as it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from mitmproxy import ctx

from tokenlens.app import AppDeps
from tokenlens.config import ConfigError, Settings, load_settings
from tokenlens.platforms import allow_host_patterns
from tokenlens.providers import Upstream, intercept_host_patterns

log = logging.getLogger(__name__)


def allow_hosts_for(settings: Settings) -> list[str]:
    """TLS is intercepted for the providers' hosts and the cloud platforms' (Azure OpenAI, Vertex, Bedrock)."""
    patterns = intercept_host_patterns(
        Upstream.parse(n, p.upstream, p.format) for n, p in settings.providers.items()
    )
    return patterns + [p for p in allow_host_patterns(settings.platforms) if p not in patterns]


class ConfigWatcher:
    name = "tokenlens.config"

    def __init__(self, deps: AppDeps, interval: float = 1.0) -> None:
        self.deps = deps
        self.interval = interval
        self._stamp = self._file_stamp()
        self._task: asyncio.Task[None] | None = None

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.deps.config_path.stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            version = self.deps.settings.version
            fresh = await asyncio.to_thread(self.read)  # stat and parse off the event loop (a big file: s)
            if fresh is not None:
                self.apply(fresh, version)

    def check(self) -> bool:
        """Reload when the file changed; True when a new configuration was applied."""
        version = self.deps.settings.version
        fresh = self.read()
        return fresh is not None and self.apply(fresh, version)

    def read(self) -> Settings | None:
        """The file's configuration when it changed since the last read and is valid, else None (blocking)."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            return load_settings(self.deps.config_path)
        except ConfigError as problem:
            log.error("configuration not reloaded, keeping the running one: %s", problem)
            return None

    def apply(self, fresh: Settings, version: int) -> bool:
        """Make `fresh` the running configuration (on the event loop: it updates mitmproxy's options), unless
        the configuration changed since the file was read (`version`): the config API writes the file and
        applies it itself, and an older read must not undo that; the file is read again next time."""
        current = self.deps.settings.get()
        # server and storage are read at start only
        fresh = dataclasses.replace(fresh, server=current.server, storage=current.storage)
        if self.deps.config_sync is not None:  # sections changed through a gateway's API win over the file
            fresh = self.deps.config_sync.overlay(fresh)
        if not self.deps.settings.replace_if_unchanged(version, fresh):
            self._stamp = None
            return False
        ctx.options.update(allow_hosts=allow_hosts_for(fresh))
        log.info("configuration reloaded from %s", self.deps.config_path)
        return True
