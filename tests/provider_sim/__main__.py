"""``python -m provider_sim --port 9001 [--https-port 9443]``: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provider_sim", description="Fake OpenAI/Anthropic/Google AI APIs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="plain HTTP port (0: any free port)")
    parser.add_argument("--https-port", type=int, default=None, help="also serve HTTPS on this port (0: any)")
    parser.add_argument(
        "--certs-dir", default=None, help="write ca.pem/cert.pem/key.pem here (default: a temp dir)"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a default knob header, e.g. --header x-sim-reply-words:50 (repeatable)",
    )
    args = parser.parse_args(argv)
    sim = Simulator(
        https=args.https_port is not None,
        host=args.host,
        port=args.port,
        https_port=args.https_port or 0,
        certs_dir=args.certs_dir,
    )
    if args.header:
        sim.set_default_headers(dict(h.split(":", 1) for h in args.header))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sim:
        print(f"provider-sim listening on {sim.url}", flush=True)
        if sim.https_url:
            print(f"provider-sim listening on {sim.https_url} (CA: {sim.ca_file})", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
