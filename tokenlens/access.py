"""Who may use the gateway's proxy routes, and where the gateway may forward (docs/analytics-api.md, "Protection").

Pure functions over header values and addresses, shared by the proxy layer and the web layer:
- a browser page on another site must not drive `/proxy/...` (a `fetch(..., {mode: "no-cors"})` needs no CORS
  permission to *send*): SDKs and agents send no `Origin` and no `Sec-Fetch-Site`, a browser always sends
  `Sec-Fetch-Site` and sends `Origin` on every POST;
- with a non-loopback `server.host`, proxy traffic carries `server.api_token` (`Proxy-Authorization: Bearer`
  or `Basic` with the token as password, as `HTTPS_PROXY=http://user:TOKEN@host:port` sends it, or
  `X-TokenLens-Token`);
- clients on other machines are not forwarded to the gateway host's loopback or link-local addresses (its
  local services), unless such an address is a configured provider upstream.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from tokenlens.config import ServerSettings, is_loopback_host

TOKEN_HEADER = "x-tokenlens-token"
CROSS_SITE_FETCH = frozenset({"cross-site", "same-site"})  # another port on localhost is "same-site"


def split_host(value: str) -> tuple[str, int | None]:
    """("name", port) of a Host header value: lower-case, brackets and a trailing dot removed."""
    text = value.strip().lower()
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        name = text[1:end] if end != -1 else text[1:]
        rest = text[end + 1 :] if end != -1 else ""
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        name, _, raw_port = text.partition(":")
        if raw_port.isdigit():
            port = int(raw_port)
    else:
        name = text  # a bare name, or a bare IPv6 address
    return name.removesuffix("."), port


def host_allowed(host_header: str, server: ServerSettings) -> bool:
    """Whether a `Host` header names the gateway: a loopback name, `server.host`, or one of
    `server.allowed_hosts` (an entry starting with "." also matches every subdomain); the port is ignored."""
    name, _ = split_host(host_header)
    if not name:
        return False
    if is_loopback_host(name):
        return True
    if name == split_host(server.host)[0]:
        return True
    for entry in server.allowed_hosts:
        allowed = split_host(entry)[0]
        if name == allowed or (allowed.startswith(".") and (name.endswith(allowed) or name == allowed[1:])):
            return True
    return False


def _origin_key(name: str, port: int | None, scheme: str) -> tuple[str, int]:
    default = 443 if scheme in ("https", "wss") else 80
    return ("<loopback>" if is_loopback_host(name) else name, port or default)


def same_origin(origin: str, host_header: str, scheme: str) -> bool:
    """Whether an `Origin` header names the host the request was sent to (loopback names are equivalent)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (sandboxed frames, file://) and anything odd
    try:
        origin_port = parts.port
    except ValueError:
        return False
    origin_key = _origin_key(parts.hostname.lower().removesuffix("."), origin_port, parts.scheme)
    name, port = split_host(host_header)
    return origin_key == _origin_key(name, port, scheme)


def cross_site_browser_request(headers: Mapping[str, str], host_header: str, scheme: str = "http") -> bool:
    """A request a web page on another site made (headers with lower-case names)."""
    if headers.get("sec-fetch-site", "").strip().lower() in CROSS_SITE_FETCH:
        return True
    origin = headers.get("origin")
    return origin is not None and not same_origin(origin, host_header, scheme)


def token_presented(headers: Mapping[str, str], expected: str | None) -> bool:
    """Whether the request carries `expected` as a proxy credential (headers with lower-case names)."""
    if not expected:
        return False
    want = expected.encode()
    own = headers.get(TOKEN_HEADER)
    if own is not None and hmac.compare_digest(own.strip().encode(), want):
        return True
    scheme, _, credential = headers.get("proxy-authorization", "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(credential.encode(), want)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(decoded.partition(":")[2].encode(), want)
    return False


def token_required(server_host: str) -> bool:
    """Proxy traffic needs the token exactly when the API does: the gateway listens beyond loopback."""
    return not is_loopback_host(server_host)


def internal_address(address: str) -> bool:
    """Loopback, link-local, unspecified or multicast: the gateway host's own services, not the internet."""
    try:
        ip = ipaddress.ip_address(address.rsplit("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast


def client_allowed(peer_host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a client address may use the gateway: loopback always, others when in `allowed` (IP networks)."""
    try:
        address = ipaddress.ip_address(peer_host.rsplit("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
