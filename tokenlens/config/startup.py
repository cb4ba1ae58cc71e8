"""Start-up checks and helpers that read the settings: loopback hosts, why the daemon must refuse to start,
the time zone."""

from __future__ import annotations

import functools
import ipaddress
import os
import zoneinfo
from datetime import datetime, tzinfo

from tokenlens.config.model import Settings
from tokenlens.config.validation import _show

# --- start-up checks and helpers ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (a `:port` suffix and `[...]` brackets are allowed). Kept for
    the last 1,024 names: the access gate asks for every request's `Host` (parsing an address takes ~10 us)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.removesuffix(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def startup_problem(settings: Settings) -> str | None:
    """Why the daemon must refuse to start with these settings (one sentence), or None."""
    server = settings.server
    if not is_loopback_host(server.host) and not server.api_token:
        return (
            f"server.api_token: must be set because server.host {_show(server.host)} is not a loopback "
            "address, and the gateway and its API would otherwise be open to the network"
        )
    if server.upstream_ca is not None and not os.path.isfile(os.path.expanduser(server.upstream_ca)):
        return (
            f"server.upstream_ca: {_show(server.upstream_ca)} is not a file (a PEM bundle of CA certificates)"
        )
    return None


def resolve_timezone(name: str) -> tzinfo:
    """The tzinfo for a `timezone` setting: an IANA zone, or for "local" the machine's zone."""
    if name != "local":
        return zoneinfo.ZoneInfo(name)
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return zoneinfo.ZoneInfo(env)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return zoneinfo.ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local
