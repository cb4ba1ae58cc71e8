"""`tokenlens daemon`: the gateway in the foreground (docs/gateway.md).

Main thread: mitmproxy's DumpMaster with the pipeline addons. A thread: the Flask app on an internal loopback
port, reached through the gateway's own port. A thread: the record writer. SIGINT/SIGTERM shut down cleanly and
every queued record is written before the process exits.

`--workers N` (N > 1): this process starts N gateway processes (workers) on the same port and store and waits
for them. mitmproxy 12 binds its listener with `asyncio.start_server(handler, host, port)` and has no option for
SO_REUSEPORT, so a worker makes that one call (in `mitmproxy.proxy.mode_servers` only) pass `reuse_port=True`;
the kernel then spreads connections over the workers. Workers share budgets through the store
(`tokenlens.shared_ledger`), as gateways on a PostgreSQL store do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from mitmproxy import options
from mitmproxy.master import Master
from werkzeug.serving import make_server

from tokenlens import price_data
from tokenlens.addons import gateway, mitmproxy_addons
from tokenlens.addons.config_watch import allow_hosts_for
from tokenlens.analysis import stop_on_signals
from tokenlens.app import AppDeps
from tokenlens.cli.ca import ensure_ca
from tokenlens.config import (
    ConfigError,
    Settings,
    config_path,
    load_settings,
    startup_problem,
    tokenlens_home,
)
from tokenlens.runtime import build_runtime, preload_injection_detector
from tokenlens.store import open_store
from tokenlens.web import create_app

log = logging.getLogger("tokenlens")

WORKER_ENV = "TOKENLENS_WORKER"  # set in the environment of the processes `--workers N` starts
SWITCH_INTERVAL_S = 0.001


class _ReusePortAsyncio:
    """`asyncio` as `mitmproxy.proxy.mode_servers` sees it in a worker: its listeners bind with SO_REUSEPORT."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await asyncio.start_server(*args, **kwargs)


def _listen_with_reuse_port() -> None:
    from mitmproxy.proxy import mode_servers

    setattr(mode_servers, "asyncio", _ReusePortAsyncio())  # noqa: B010 (a module attribute, on purpose)


def port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return (
                    f"Port {port} on {host} is already in use (is TokenLens already running? try `tokenlens status`); "
                    "stop that process or choose another port with --port."
                )
            return f"Cannot listen on {host}:{port}: {e.strerror}."
    return None


async def _serve(deps: AppDeps) -> None:
    settings = deps.settings.get()
    logging.getLogger().setLevel(logging.INFO)
    opts = options.Options(
        listen_host=settings.server.host,
        listen_port=settings.server.port,
        mode=["regular"],
        confdir=str(deps.home),
    )
    master = Master(opts, with_termlog=True)
    master.addons.add(*mitmproxy_addons())
    updates: dict[str, object] = {
        "termlog_verbosity": "warn",
        "tcp_timeout": 3600,  # a slow model answer must not be cut by mitmproxy's 600 s idle timeout
        "allow_hosts": allow_hosts_for(settings),
    }
    if settings.server.upstream_ca:
        updates["ssl_verify_upstream_trusted_ca"] = str(settings.server.upstream_ca)
    master.options.update(**updates)
    master.addons.add(gateway(deps))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


def _loopback_listener() -> socket.socket:
    """The web app's internal port, bound before the app is built so that its number is known to the proxy."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    return listener


def run_gateway(settings: Settings, home: Path, config_file: Path, *, worker: str | None = None) -> None:
    """One gateway process (`worker`: its index when it is one of `--workers N`): build, serve, close."""
    home.mkdir(parents=True, exist_ok=True)
    price_data.without_updater()
    ensure_ca(home)
    listener = _loopback_listener()
    runtime = build_runtime(
        settings,
        home,
        config_file,
        shared=worker is not None,
        web_port=listener.getsockname()[1],
        analysis_process=True,
        worker=worker,
    ).start()
    deps = runtime.deps
    deps.settings.on_change(preload_injection_detector)  # when it is turned on later
    preload_injection_detector(deps.settings.get())
    if worker is not None:
        _listen_with_reuse_port()
    web = make_server("127.0.0.1", deps.web_port, create_app(deps), threaded=True, fd=listener.fileno())
    threading.Thread(target=web.serve_forever, name="tokenlens-web", daemon=True).start()
    host, port = settings.server.host, settings.server.port
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    if worker is None or worker == "0":
        typer.echo(
            f"TokenLens gateway on http://{shown}:{port} (dashboard http://{shown}:{port}/, data in {home})",
            err=True,
        )
    # Everything start-up allocated, out of the collector's reach: a full collection over those long-lived
    # objects took 80-90 ms under load (bench/README.md).
    gc.freeze()
    # The proxy's event loop gets the GIL back within 1 ms when the spool or web thread holds it (Python's
    # default is 5 ms): at one client the p99 latency fell from 12.5-13.3 to 8.5-9 ms in four runs each way
    # (bench/README.md, "The one-client tail, call by call", for what is left of it).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        asyncio.run(_serve(deps))
    finally:
        web.shutdown()
        written = runtime.close()
        typer.echo(
            f"TokenLens stopped; records flushed ({'all written' if written else 'some NOT written'}).",
            err=True,
        )


def daemon(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default server.host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default server.port, 8420).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Configuration file (default $TOKENLENS_CONFIG).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default $TOKENLENS_HOME, ~/.tokenlens)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Gateway processes sharing the port (SO_REUSEPORT) and the store (default 1)."
        ),
    ] = 1,
) -> None:
    """Run the gateway in the foreground. Ready when GET /healthz answers 200."""
    home = (data_dir or tokenlens_home()).expanduser()
    config_file = (config or config_path()).expanduser()
    if config is not None and not config_file.exists():
        typer.echo(f"Configuration file {config_file} does not exist.", err=True)
        raise typer.Exit(2)
    try:
        settings = load_settings(config_file)
    except ConfigError as error:
        typer.echo(f"Configuration error in {config_file}: {error}", err=True)
        raise typer.Exit(2) from None
    server = dataclasses.replace(
        settings.server,
        host=host if host is not None else settings.server.host,
        port=port if port is not None else settings.server.port,
    )
    settings = dataclasses.replace(settings, server=server)
    worker = os.environ.get(WORKER_ENV)
    problem = startup_problem(settings) or (None if worker else port_problem(server.host, server.port))
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(1)
    if workers > 1 and not worker:
        raise typer.Exit(run_workers(workers, settings, home, config_file))
    run_gateway(settings, home, config_file, worker=worker)


def run_workers(count: int, settings: Settings, home: Path, config_file: Path) -> int:
    """Start `count` gateway processes on the same port and store; stop them all on SIGINT/SIGTERM or when
    one exits. Returns the exit code (the first non-zero one of the workers)."""
    home.mkdir(parents=True, exist_ok=True)
    ensure_ca(home)  # once, before the workers read it
    open_store(settings.storage.url, home).close()  # migrated once, before the workers open it
    command = [sys.executable, "-m", "tokenlens", "daemon", "--config", str(config_file)]
    command += ["--data-dir", str(home), "--host", settings.server.host, "--port", str(settings.server.port)]
    processes = [
        subprocess.Popen(command, env={**os.environ, WORKER_ENV: str(index)}) for index in range(count)
    ]
    stopping = threading.Event()
    stop_on_signals(stopping)
    typer.echo(f"TokenLens: {count} gateway workers on port {settings.server.port}", err=True)
    while not stopping.is_set() and all(p.poll() is None for p in processes):
        stopping.wait(0.2)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return next((code for code in codes if code), 0)
