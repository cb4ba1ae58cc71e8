"""`tokenlens ca`: the gateway's CA certificate and the exports for HTTPS_PROXY mode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import certifi
import typer
from mitmproxy.certs import CertStore
from mitmproxy.options import CONF_BASENAME

from tokenlens.config import ConfigError, config_path, load_settings, tokenlens_home

CA_KEY_SIZE = 2048


def ensure_ca(home: Path) -> Path:
    """The CA certificate in `home` (created when absent, as the daemon would) and the combined bundle.

    The bundle is the system roots plus the gateway CA: pointing SSL_CERT_FILE at the gateway CA alone
    would break every host that is tunnelled rather than intercepted.
    """
    CertStore.from_store(home, CONF_BASENAME, CA_KEY_SIZE)
    ca_cert = home / f"{CONF_BASENAME}-ca-cert.pem"
    bundle = home / "ca-bundle.pem"
    content = Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + ca_cert.read_bytes()
    if not bundle.exists() or bundle.read_bytes() != content:
        tmp = bundle.with_suffix(".tmp")
        tmp.write_bytes(content)
        tmp.replace(bundle)
    return ca_cert


def ca_exports(home: Path, host: str, port: int) -> str:
    bundle = home / "ca-bundle.pem"
    proxy = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}"
    return "\n".join(
        [
            f"export HTTPS_PROXY={proxy}",
            f"export SSL_CERT_FILE={bundle}",
            f"export REQUESTS_CA_BUNDLE={bundle}",
            f"export NODE_EXTRA_CA_CERTS={home / f'{CONF_BASENAME}-ca-cert.pem'}",
        ]
    )


def ca(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (default $TOKENLENS_HOME).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Configuration file.")] = None,
) -> None:
    """Print the CA certificate path and the exports for HTTPS_PROXY mode (creates the CA when absent)."""
    home = data_dir or tokenlens_home()
    try:
        settings = load_settings(config or config_path())
    except ConfigError as problem:
        typer.echo(f"Configuration error: {problem}", err=True)
        raise typer.Exit(2) from None
    home.mkdir(parents=True, exist_ok=True)
    ca_cert = ensure_ca(home)
    typer.echo(f"# CA certificate: {ca_cert}")
    typer.echo("# Trust it system-wide, or use these exports (bundle = system roots + the TokenLens CA):")
    typer.echo(ca_exports(home, settings.server.host, settings.server.port))
