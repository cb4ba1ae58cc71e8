"""Peers of TokenLens for bench/gateway.py: the LiteLLM proxy, installed by the benchmark itself.

LiteLLM is never a dependency of TokenLens. On first use the benchmark creates a virtual environment of its
own under `.cache/bench/litellm-<version>/` (git-ignored) with the benchmark's Python 3.12 interpreter and
installs exactly `litellm[proxy]==<version>` into it; later runs reuse it. The version is pinned, and the
releases known to be compromised are refused outright, whatever the pin says.

    .venv/bin/python bench/peers.py --install   # only install (or check) the pinned LiteLLM
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchlib import REPO, REQUEST_HEADERS, Proc, Processes, wait_http

LITELLM_VERSION = "1.108.7"
# Releases published with credential-stealing code (PyPI, March 2026): never installed or run.
COMPROMISED_LITELLM = frozenset({"1.82.7", "1.82.8"})
# A file the compromised releases dropped into site-packages; an environment holding it is not used.
COMPROMISE_MARKERS = ("litellm_init.pth",)
CACHE_DIR = REPO / ".cache" / "bench"
LITELLM_MODEL = "gpt-4o-mini"  # the model of benchlib.CHAT_BODY
BENCH_KEY = REQUEST_HEADERS["Authorization"].removeprefix("Bearer ")


class PeerError(RuntimeError):
    """The peer could not be installed or started."""


def base_python() -> str:
    """The interpreter this venv was made from (Python 3.12 for the project's .venv)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(base)


def litellm_env(version: str = LITELLM_VERSION) -> Path:
    return CACHE_DIR / f"litellm-{version}"


def _installed_version(python: Path) -> str | None:
    out = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def _check_clean(env: Path) -> None:
    for marker in COMPROMISE_MARKERS:
        found = sorted(env.glob(f"lib/python*/site-packages/{marker}"))
        if found:
            raise PeerError(f"{found[0]} is in the LiteLLM environment: refusing to run it; delete {env}")


def ensure_litellm(version: str = LITELLM_VERSION, *, quiet: bool = False) -> Path:
    """The `litellm` executable of the pinned version, installing it on first use (needs the package index)."""
    if version in COMPROMISED_LITELLM:
        raise PeerError(f"litellm {version} is a compromised release; refusing to install it")
    env = litellm_env(version)
    python = env / "bin" / "python"
    exe = env / "bin" / "litellm"
    if python.exists() and exe.exists() and _installed_version(python) == version:
        _check_clean(env)
        return exe
    if not quiet:
        print(
            f"installing litellm[proxy]=={version} into {env.relative_to(REPO)} (first use) ...", flush=True
        )
    env.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base_python(), "-m", "venv", "--clear", str(env)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-U", "pip"], check=True)
    subprocess.run([*pip, f"litellm[proxy]=={version}"], check=True)
    installed = _installed_version(python)
    if installed != version:
        raise PeerError(f"installed litellm is {installed}, wanted {version}")
    _check_clean(env)
    if not exe.exists():
        raise PeerError(f"{exe} missing after the install")
    return exe


def litellm_config(sim_port: int) -> str:
    """LiteLLM proxy configuration: the benchmark's model forwarded to the simulator's OpenAI API.

    The master key is the benchmark's bearer token (LiteLLM refuses to start without one; a key equal to the
    master key is checked without a database), no database, no callbacks; the client's x-sim-* knob headers
    are forwarded so the simulator answers LiteLLM exactly as it answers the other targets.
    """
    return f"""model_list:
  - model_name: {LITELLM_MODEL}
    litellm_params:
      model: openai/{LITELLM_MODEL}
      api_base: http://127.0.0.1:{sim_port}/v1
      api_key: sk-bench-not-a-key
litellm_settings:
  telemetry: false
  drop_params: true
  request_timeout: 30
general_settings:
  master_key: {BENCH_KEY}
  forward_client_headers_to_llm_api: true
"""


LITELLM_ENV = {
    # Offline: the bundled model price map instead of the one LiteLLM would download at import.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
}


def start_litellm(
    procs: Processes,
    workdir: Path,
    sim_port: int,
    port: int,
    cpus: set[int] | None = None,
    version: str = LITELLM_VERSION,
) -> Proc:
    """The LiteLLM proxy (one worker) on 127.0.0.1:`port`, forwarding to the simulator; ready when it returns."""
    exe = ensure_litellm(version)
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(sim_port))
    env = {**LITELLM_ENV, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = procs.start(
        "litellm",
        [
            str(exe),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        cwd=workdir,
        cpus=cpus,
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout=180)
    return proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--install", action="store_true", help="install (or check) the pinned LiteLLM and exit")
    p.add_argument("--version", default=LITELLM_VERSION, help=f"LiteLLM version (default {LITELLM_VERSION})")
    args = p.parse_args(argv)
    exe = ensure_litellm(args.version)
    print(f"litellm {args.version}: {exe}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
