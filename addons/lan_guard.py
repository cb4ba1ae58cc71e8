"""LAN guard: a client on another machine is never forwarded to this host's own services (docs/analytics-api.md).

With a non-loopback `server.host`, an allowed LAN client must not reach what only this machine can (loopback,
link-local, unspecified or multicast addresses), unless a provider upstream or the dashboard is there. The
upstream's name is resolved once, here (after the ingress may have redirected a provider's real host to its
configured upstream), and the connection pinned to that address, so a name cannot be rebound in between.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from mitmproxy.proxy import server_hooks

from tokenlens.access import client_allowed, internal_address
from tokenlens.app import AppDeps
from tokenlens.config import Settings
from tokenlens.providers import upstreams_from

log = logging.getLogger(__name__)


class LanGuard:
    name = "tokenlens.lan_guard"

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        self._upstreams: frozenset[tuple[str, int]] = frozenset()
        deps.settings.on_change(self._settings_changed)
        self._settings_changed(deps.settings.get(), frozenset({"providers"}))

    def _settings_changed(self, settings: Settings, updated: frozenset[str]) -> None:
        if "providers" in updated:
            self._upstreams = frozenset((u.host, u.port) for u in upstreams_from(settings).values())

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        peer = data.client.peername[0] if data.client.peername else ""
        if not data.server.address or client_allowed(str(peer), ()):
            return  # loopback clients can reach this machine's services anyway
        host, port = data.server.address
        if (host, port) == ("127.0.0.1", self.deps.web_port) or (host, port) in self._upstreams:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return  # mitmproxy reports the failure as usual
        addresses = [str(info[4][0]) for info in infos]
        if any(internal_address(a) for a in addresses):
            log.warning(
                "refused to forward client %s to %s:%s (a local address of this host)", peer, host, port
            )
            data.server.error = "TokenLens does not forward other machines' clients to local addresses."
        elif addresses:
            data.server.address = (addresses[0], port)
