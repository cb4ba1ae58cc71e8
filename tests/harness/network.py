"""This machine's own non-loopback address, for tests of clients that are not on loopback."""

from __future__ import annotations

import functools
import ipaddress
import shutil
import socket
import subprocess


def _bindable(address: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


@functools.cache
def lan_address() -> str | None:
    """A non-loopback IPv4 address of this machine that a test client can bind to, or None."""
    candidates: list[str] = []
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    if shutil.which("hostname"):
        done = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
        candidates += done.stdout.split()
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_loopback and not ip.is_link_local and _bindable(candidate):
            return candidate
    return None
