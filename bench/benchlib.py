"""Shared machinery of the benchmarks: processes, load generators, the record check, statistics.

Everything runs on 127.0.0.1. Every process started here is stopped with SIGTERM (then SIGKILL after a
grace period, by its own pid) when the `Processes` context ends, on errors and Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
RESULTS_DIR = BENCH_DIR / "results"

CHAT_PATH = "/v1/chat/completions"
GATEWAY_PREFIX = "/proxy/openai"
# A small chat completion (about 200 bytes), as an SDK would send it.
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {
            "role": "user",
            "content": "Say hello to the benchmark please, in one short sentence, nothing else.",
        },
    ],
    "max_tokens": 64,
}
REQUEST_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-not-a-key"}


def chat_body_bytes() -> bytes:
    return json.dumps(CHAT_BODY, separators=(",", ":")).encode()


def stream_body(include_usage: bool) -> bytes:
    """The chat completion streamed (with its usage chunk when `include_usage`)."""
    body: dict[str, Any] = {**CHAT_BODY, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process from /proc/<pid>/status, in MiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from the parent pids in /proc/*/stat); empty when `pid` is gone."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    if not os.path.exists(f"/proc/{pid}"):
        return []
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def tree_rss_mib(pid: int) -> tuple[float | None, int]:
    """(summed RSS in MiB, number of processes) of `pid` and its descendants; (None, 0) when it is gone.

    Pages shared between a parent and its forked children are counted in each, as `ps` would.
    """
    values = [v for v in (rss_mib(p) for p in process_tree(pid)) if v is not None]
    return (sum(values) if values else None), len(values)


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time so far of `pid` and its living descendants."""
    values = [v for v in (cpu_seconds(p) for p in process_tree(pid)) if v is not None]
    return sum(values) if values else None


def wait_idle(pid: int, timeout: float = 15.0, window: float = 0.5, busy: float = 0.1) -> float:
    """Wait until the process uses less than `busy` of a core over `window` s (start-up work done)."""
    start = time.monotonic()
    last = cpu_seconds(pid) or 0.0
    while time.monotonic() - start < timeout:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now is None:
            break
        if now - last < busy * window:
            break
        last = now
    return time.monotonic() - start


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far, from /proc/stat.

    Steal (other VMs) counts as busy; interrupt and softirq time does not: it is mostly the loopback traffic
    of the benchmark itself, which no process is charged for.
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + steal
    return busy, busy + idle + iowait + irq + softirq


class Background:
    """CPU used by everything except the benchmark and its processes, as a fraction of the machine.

    The machine is shared: when others use it during a measurement, the numbers are not comparable.
    """

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")
        self._start: tuple[int, int, float] = (0, 0, 0.0)

    def _ours(self) -> float:
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system  # children: finished wrk runs
        return own + sum(cpu_seconds(pid) or 0.0 for pid in self.pids())

    def start(self) -> None:
        busy, total = machine_jiffies()
        self._start = (busy, total, self._ours())

    def stop(self) -> float:
        busy, total = machine_jiffies()
        busy0, total0, ours0 = self._start
        if total <= total0:
            return 0.0
        others = (busy - busy0) / self.tick - (self._ours() - ours0)
        return max(0.0, others / ((total - total0) / self.tick))

    def wait_quiet(self, threshold: float, timeout: float, window: float = 1.0) -> tuple[float, float]:
        """Wait (at most `timeout` s) for a `window` in which others use less than `threshold` of the machine.

        Returns (the last measured fraction, seconds waited).
        """
        started = time.monotonic()
        while True:
            self.start()
            time.sleep(window)
            load = self.stop()
            waited = time.monotonic() - started
            if load < threshold or waited >= timeout:
                return load, waited


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Interrupted(Exception):
    """SIGTERM to the benchmark itself (Ctrl-C arrives as KeyboardInterrupt)."""


class Processes:
    """Starts subprocesses in their own sessions and stops them all (SIGTERM, newest first) on exit."""

    def __init__(self, workdir: Path, cpus: set[int] | None = None) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.procs: list[Proc] = []
        self._old_term: Any = None

    def __enter__(self) -> Processes:
        def on_term(signum: int, frame: FrameType | None) -> None:
            raise Interrupted(f"signal {signum}")

        self._old_term = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGTERM, self._old_term)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        cpus: set[int] | None = None,
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        affinity = cpus if cpus is not None else self.cpus

        def pin() -> None:
            if affinity:
                os.sched_setaffinity(0, affinity)

        with open(log, "wb") as out:
            popen = subprocess.Popen(  # noqa: S603 - our own argv
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=str(cwd or REPO),
                start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
                preexec_fn=pin if affinity else None,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 15.0) -> int | None:
        if proc.alive():
            try:
                proc.popen.send_signal(signal.SIGTERM)
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                print(
                    f"  {proc.name} (pid {proc.pid}) ignored SIGTERM for {grace:.0f}s; killing it", flush=True
                )
                proc.popen.kill()
                proc.popen.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.popen.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as e:  # keep stopping the others
                print(f"  could not stop {proc.name} (pid {proc.pid}): {e}", flush=True)


def wait_http(url: str, proc: Proc, timeout: float = 30.0, expect: int | None = 200) -> None:
    """Poll `url` until it answers (with `expect`, if given); fail early when the process died."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            r = httpx.get(url, timeout=2)
            if expect is None or r.status_code == expect:
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout:.0f}s (last: {last}):\n{proc.tail()}")


def wait_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout:.0f}s:\n{proc.tail()}")


def start_simulator(procs: Processes, cpus: set[int] | None = None) -> tuple[Proc, int]:
    port = free_port()
    proc = procs.start(
        "provider-sim",
        [sys.executable, "-m", "provider_sim", "--port", str(port)],
        env={"PYTHONPATH": str(REPO / "tests")},
        cpus=cpus,
    )
    wait_port(port, proc)
    return proc, port


def start_tokenlens(
    procs: Processes,
    workdir: Path,
    sim_port: int | None,
    cpus: set[int] | None = None,
    *,
    data_dir: Path | None = None,
    config_text: str = "",
    ready_s: float = 60,
) -> tuple[Proc, int]:
    """`tokenlens daemon` with the full default pipeline: a fresh SQLite store (or `data_dir`'s), OpenAI ->
    the simulator when `sim_port` is given, and `config_text` added to the configuration."""
    port = free_port()
    config = workdir / "tokenlens.yaml"
    upstream = f"providers:\n  openai:\n    upstream: http://127.0.0.1:{sim_port}\n" if sim_port else ""
    config.write_text(upstream + config_text)
    proc = procs.start(
        "tokenlens",
        [
            str(VENV_BIN / "tokenlens"),
            "daemon",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir or workdir / "tokenlens-data"),
            "--config",
            str(config),
        ],
        cpus=cpus,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=ready_s)
    wait_idle(proc.pid)  # start-up work that goes on after /healthz answers
    return proc, port


# ------------------------------------------------------------------------------------------------ records


def kpi_calls(port: int) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{port}/api/usage/kpi", timeout=10)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def wait_for_calls(port: int, expected: int, timeout: float = 10.0) -> dict[str, Any]:
    """The KPI once `calls` reached `expected` (or after `timeout`; then it is what was there)."""
    deadline = time.monotonic() + timeout
    while True:
        kpi = kpi_calls(port)
        if kpi["calls"] >= expected or time.monotonic() > deadline:
            if kpi["calls"] == expected:
                time.sleep(0.3)  # anything beyond expected would show up now
                kpi = kpi_calls(port)
            return kpi
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------ load


@dataclass
class LoadResult:
    """One closed-loop keep-alive run: `connections` clients, each sending its next request on an answer."""

    generator: str
    connections: int
    duration_s: float
    sent: int  # requests written (the gateway must record exactly this many)
    completed: int  # answers received
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    mean_ms: float = math.nan

    @property
    def rps(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps}


WRK_LUA = r"""
-- Generated by bench/benchlib.py: POST a fixed JSON body, count requests written, report JSON.
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
%(headers)s
sent = 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  -- wrk calls request() once on the first thread to verify the script before the run: not a request sent.
  if #threads == 1 then thread:set("sent", -1) end
end
function init(args) req = wrk.format() end
function request() sent = sent + 1; return req end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("sent") end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"sent":%%d,"completed":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d,"mean":%%f}\n',
    total, summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    exe = wrk_path()
    if not exe:
        return "absent"
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "wrk"


def install_wrk() -> bool:
    """`apt-get install -y wrk` (Debian/Ubuntu, as root). True when wrk is then on PATH."""
    if wrk_path():
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("  --install-wrk needs root and apt-get; install wrk yourself (apt-get install -y wrk)")
        return False
    print("  installing wrk with apt-get ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
    return wrk_path() is not None


def write_wrk_script(workdir: Path, body: bytes, headers: dict[str, str], name: str = "post") -> Path:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path = workdir / f"{name}.lua"
    path.write_text(WRK_LUA % {"body": body.decode(), "headers": lines})
    return path


def run_wrk(
    url: str, connections: int, duration: float, script: Path, cpus: set[int] | None = None
) -> LoadResult:
    exe = wrk_path()
    assert exe is not None
    argv = [
        exe,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=duration + 30,
        preexec_fn=pin if cpus else None,
    )
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    d = json.loads(match.group(1))
    return LoadResult(
        generator="wrk",
        connections=connections,
        duration_s=d["duration_us"] / 1e6,
        sent=d["sent"],
        completed=d["completed"],
        errors={k: d[k] for k in ("connect", "read", "write", "status", "timeout") if d[k]},
        p50_ms=d["p50"] / 1000,
        p90_ms=d["p90"] / 1000,
        p99_ms=d["p99"] / 1000,
        max_ms=d["max"] / 1000,
        mean_ms=d["mean"] / 1000,
    )


async def _py_worker(
    port: int, request: bytes, deadline: float, latencies: list[int], counts: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            writer.write(request)
            counts["sent"] += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            lower = head.lower()
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
            if m:
                await reader.readexactly(int(m.group(1)))
            elif b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            latencies.append(time.perf_counter_ns() - t0)
            counts["completed"] += 1
            if not 200 <= status < 300:
                counts["status"] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        counts["read"] += 1
    finally:
        writer.close()


async def _py_load(
    port: int, path: str, connections: int, duration: float, body: bytes | None = None
) -> LoadResult:
    body = chat_body_bytes() if body is None else body
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in REQUEST_HEADERS.items()
    )
    request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[int] = []
    counts = {"sent": 0, "completed": 0, "status": 0, "read": 0}
    start = time.perf_counter()
    await asyncio.gather(
        *(_py_worker(port, request, start + duration, latencies, counts) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    ms = sorted(x / 1e6 for x in latencies)
    return LoadResult(
        generator="python",
        connections=connections,
        duration_s=elapsed,
        sent=counts["sent"],
        completed=counts["completed"],
        errors={k: counts[k] for k in ("status", "read") if counts[k]},
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1] if ms else math.nan,
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
    )


def run_python_load(
    port: int, path: str, connections: int, duration: float, body: bytes | None = None
) -> LoadResult:
    """Fallback load generator: asyncio raw sockets, keep-alive; each client finishes its last request."""
    return asyncio.run(_py_load(port, path, connections, duration, body))


class LoadGenerator:
    """wrk (with a Lua script for the POST) when installed, else the asyncio generator.

    `body` is the POSTed JSON (default: the small chat completion); `name` names the wrk script in `workdir`.
    """

    def __init__(
        self,
        workdir: Path,
        prefer: str = "auto",
        cpus: set[int] | None = None,
        *,
        body: bytes | None = None,
        name: str = "post",
    ) -> None:
        self.cpus = cpus
        if prefer == "wrk" and not wrk_path():
            raise SystemExit("--load wrk: wrk is not installed (apt-get install -y wrk, or --install-wrk)")
        self.kind = "wrk" if prefer in ("auto", "wrk") and wrk_path() else "python"
        self.body = chat_body_bytes() if body is None else body
        self.script = write_wrk_script(workdir, self.body, REQUEST_HEADERS, name)

    @property
    def description(self) -> str:
        if self.kind == "wrk":
            return f"{wrk_version()} (-t1, Lua POST script, keep-alive)"
        return "python asyncio raw sockets (keep-alive; shares the CPU with the targets, so direct is client-bound)"

    def run(self, port: int, path: str, connections: int, duration: float) -> LoadResult:
        if self.kind == "wrk":
            return run_wrk(f"http://127.0.0.1:{port}{path}", connections, duration, self.script, self.cpus)
        return run_python_load(port, path, connections, duration, self.body)


# ------------------------------------------------------------------------------------------------ stats


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


# ------------------------------------------------------------------------------------------------ environment


def git_revision() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    rev = out.stdout.strip() or "unknown"
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return rev + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    def ver(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "mitmproxy": ver("mitmproxy"),
        "tokenlens": ver("tokenlens"),
        "git": git_revision(),
        "wrk": wrk_version(),
    }


def results_path(prefix: str) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    return RESULTS_DIR / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tokenlens-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept the work directory (logs, store): {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


class Sampler:
    """Samples the RSS of a pid every `interval` seconds on a thread: (t, MiB) pairs."""

    def __init__(self, pid: int, interval: float, on_sample: Callable[[float, float], None] | None = None):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> float | None:
        value = rss_mib(self.pid)
        if value is not None:
            t = time.monotonic() - self._t0
            self.samples.append((t, value))
            if self.on_sample:
                self.on_sample(t, value)
        return value

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
