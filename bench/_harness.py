"""Shared plumbing for the benchmark scripts: payloads, processes, /proc sampling, machine facts.

Nothing here times anything by itself; ``run.py`` and ``memory.py`` drive it. Every child process is
started in its own session and torn down by ``Processes.close()`` (SIGTERM to its process group, then
SIGKILL after a grace period), which the scripts call from ``finally`` blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BOUNDARY = "bifrostbenchboundary7MA4YWxkTrZu0gW"
API_KEY = "sk-bench"
TRANSCRIPTIONS = "/v1/audio/transcriptions"


class BenchError(RuntimeError):
    """A failure that makes the run meaningless (a process did not start, a sanity check failed)."""


# -- sizes ---------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}


def parse_size(text: str) -> int:
    """``"100k"`` -> 100_000; ``"5m"`` -> 5_000_000 (decimal units, like the issue's "100 KB")."""
    raw = text.strip().lower()
    digits = raw.rstrip("kmgb")
    unit = raw[len(digits) :]
    if unit not in _UNITS or not digits:
        raise ValueError(f"bad size {text!r} (use e.g. 100k, 5m)")
    return int(float(digits) * _UNITS[unit])


def size_label(n: int) -> str:
    """100_000 -> "100 KB", 5_000_000 -> "5 MB"."""
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


# -- payloads ------------------------------------------------------------------------------------


def wav_header(total_size: int, sample_rate: int = 16_000) -> bytes:
    """A 44-byte PCM WAV header for a file of ``total_size`` bytes (16-bit mono)."""
    data_size = max(0, total_size - 44)
    byte_rate = sample_rate * 2
    return (
        b"RIFF" + (36 + data_size).to_bytes(4, "little") + b"WAVE"
        b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little") + byte_rate.to_bytes(4, "little")
        + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
        + b"data" + data_size.to_bytes(4, "little")
    )


def _field(name: str, value: str) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
    ).encode()


def multipart_parts(model: str, file_size: int, file_first: bool = False) -> tuple[bytes, bytes]:
    """The multipart body around the file bytes: (everything before the file, everything after).

    Field order is what the SDKs and ``curl -F`` send: ``model``, then ``response_format``, then the
    ``file`` part last. ``file_first`` puts the file first instead (exercises a gateway's spool path).
    """
    file_head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + wav_header(file_size)
    fields = _field("model", model) + _field("response_format", "json")
    closing = f"--{BOUNDARY}--\r\n".encode()
    if file_first:
        return file_head, b"\r\n" + fields + closing
    return fields + file_head, b"\r\n" + closing


def content_type() -> str:
    return f"multipart/form-data; boundary={BOUNDARY}"


def body_length(model: str, file_size: int, file_first: bool = False) -> int:
    head, tail = multipart_parts(model, file_size, file_first)
    return len(head) + max(0, file_size - 44) + len(tail)


def iter_body(model: str, file_size: int, chunk: int = 64 * 1024, file_first: bool = False) -> Iterator[bytes]:
    """The multipart body in chunks, generated on the fly (a fixed noise block, never the whole file)."""
    head, tail = multipart_parts(model, file_size, file_first)
    noise = os.urandom(chunk)
    yield head
    remaining = max(0, file_size - 44)
    while remaining:
        n = min(chunk, remaining)
        yield noise if n == chunk else noise[:n]
        remaining -= n
    yield tail


def write_body_file(path: Path, model: str, file_size: int) -> int:
    """Write one complete multipart body (WAV header + random noise) to ``path``; its length."""
    with path.open("wb") as out:
        for piece in iter_body(model, file_size, chunk=1024 * 1024):
            out.write(piece)
    return path.stat().st_size


def write_wrk_script(path: Path, body_path: Path) -> None:
    """A wrk Lua script that POSTs ``body_path`` and prints its summary as one ``BENCH_JSON`` line.

    Latencies are wrk's own (they include wrk's coordinated-omission correction, see README).
    """
    path.write_text(
        f"""-- generated by bench/run.py
local f = assert(io.open("{body_path}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "{content_type()}"
wrk.headers["Authorization"] = "Bearer {API_KEY}"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""
    )


def write_gateway_config(path: Path, upstream_port: int) -> None:
    """The gateway's config: upstream-Bifrost-shaped JSON pointing the openai provider at the fake."""
    config = {
        "providers": {
            "openai": {
                "keys": [{"name": "bench", "value": API_KEY, "weight": 1, "models": ["*"]}],
                "network_config": {"base_url": f"http://127.0.0.1:{upstream_port}"},
            }
        }
    }
    path.write_text(json.dumps(config, indent=2))


# -- HTTP helpers (stdlib only, loopback) --------------------------------------------------------


def free_port() -> int:
    """A port the kernel considers free right now (there is a small race; fine on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """POST ``body``; (status, lower-cased headers, body), also for error statuses."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Service:
    """A started server process and where it writes its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_summary(self, start: int = 0, end: int | None = None, top: int = 12) -> str:
        """Distinct log lines between two byte offsets, most frequent first, with their counts."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(start)
                text = f.read(None if end is None else max(0, end - start)).decode(errors="replace")
        except OSError:
            return ""
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.strip():
                counts[line.rstrip()] = counts.get(line.rstrip(), 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        lines = [f"{n:6d} x {line[:200]}" for line, n in ranked[:top]]
        if len(ranked) > top:
            lines.append(f"       ... and {len(ranked) - top} other distinct lines")
        return "\n".join(lines)


class Processes:
    """Owns every child process a script starts, and ends them all (by pid/pgid) on ``close()``."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.started_pids: set[int] = set()  # every pid ever started here (for CPU accounting)

    def start(self, argv: list[str], log_path: Path, cwd: Path | None = None,
              stdout_pipe: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = log_path.open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,  # own process group: Ctrl-C goes to us, we end it ourselves
        )
        self._procs.append(proc)
        self.started_pids.add(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """End ``proc`` if it still runs: SIGTERM its process group, SIGKILL after ``grace`` seconds.

        Only a process that has not been reaped yet is signalled, so its pid (= its process group id,
        it was started in its own session) cannot have been reused by an unrelated process.
        """
        if proc.returncode is None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
            # workers that outlived their parent still hold the group id (so it cannot be reused)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in list(reversed(self._procs)):
            self.stop(proc)
        for log in self._logs:
            log.close()
        self._logs.clear()


def install_signal_handlers() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks tear everything down.

    SIGINT is set explicitly: a process started in the background of a non-interactive shell
    inherits it ignored, and then Ctrl-C / ``kill -INT`` would do nothing.
    """

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode} before it was ready:\n"
                             + tail(log))
        try:
            status, _ = http_get(url, timeout=1.0)
            if status == 200:
                return
            last_error = f"HTTP {status}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.05)  # poll interval
    raise BenchError(f"{what} not ready after {timeout:.0f} s ({last_error}):\n" + tail(log))


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def taskset(cpus: list[int]) -> list[str]:
    """``taskset -c <cpus>`` prefix (empty when taskset is missing: the run is then unpinned)."""
    if not cpus or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in cpus)]


def start_upstream(procs: Processes, workdir: Path, cpu: int | None) -> Service:
    """Start bench/upstream.py on ``cpu``; return once it prints its port and answers /health."""
    argv = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", "0"]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    log = workdir / "upstream.log"
    proc = procs.start(argv, log, stdout_pipe=True)
    assert proc.stdout is not None
    port = 0
    deadline = time.monotonic() + 15
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not port and time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("LISTENING "):
                    port = int(line.split()[2])
    if not port:
        raise BenchError("fake upstream did not start:\n" + tail(log))
    wait_http_ok(f"http://127.0.0.1:{port}/health", proc, 10, "fake upstream", log)
    return Service("upstream", proc, log, port)


def gateway_binary() -> Path:
    """``bifrost-stt`` next to the running interpreter (the venv), else the repo's .venv."""
    here = Path(sys.executable).parent / "bifrost-stt"
    return here if here.exists() else REPO_DIR / ".venv" / "bin" / "bifrost-stt"


def start_gateway(procs: Processes, workdir: Path, cpu: int | None, upstream_port: int,
                  port: int | None = None, ready_timeout: float = 60.0,
                  command: str | None = None) -> tuple[Service, list[str]]:
    """Start ``bifrost-stt serve`` pinned to ``cpu`` with a config aimed at the fake upstream.

    ``command`` replaces it with another server (``{config}``, ``{port}`` and ``{upstream}`` are
    filled in), to compare builds or peers. Runs in ``workdir`` (so nothing it might write lands in
    the repo). Returns once GET /health is 200.
    """
    config = workdir / "gateway-config.json"
    write_gateway_config(config, upstream_port)
    port = port or free_port()
    if command:
        server = shlex.split(command.format(config=config, port=port, upstream=upstream_port))
        # it runs in workdir: make relative paths (e.g. .venv/bin/python) absolute from here
        server = [os.path.abspath(a) if "/" in a and not a.startswith("/") and Path(a).exists()
                  else a for a in server]
    else:
        binary = gateway_binary()
        if not binary.exists():
            raise BenchError(f"{binary} does not exist (is the gateway's CLI installed?)")
        server = [str(binary), "serve", "--config", str(config), "--port", str(port),
                  "--workers", "1", "--log-level", "warning"]
    argv = taskset([cpu] if cpu is not None else []) + server
    log = workdir / "gateway.log"
    proc = procs.start(argv, log, cwd=workdir)
    wait_http_ok(f"http://127.0.0.1:{port}/health", proc, ready_timeout, "gateway", log)
    return Service("gateway", proc, log, port), argv


# -- CPU placement ------------------------------------------------------------------------------


@dataclass
class Layout:
    upstream: int | None
    gateway: int | None
    client: list[int]
    direct_client: list[int]

    def describe(self) -> str:
        return (f"upstream cpu {self.upstream}, gateway cpu {self.gateway}, load generator cpu "
                f"{','.join(map(str, self.client))} (direct runs: cpu {','.join(map(str, self.direct_client))})")


def plan_layout(spec: str | None) -> Layout:
    """CPU placement. ``spec`` is ``UPSTREAM,GATEWAY,CLIENT`` (CLIENT may be ``2:3`` for several).

    Default: upstream on the first usable CPU, gateway alone on the second, the load generator on the
    third (and fourth) when there is one, else sharing the upstream's CPU. Direct runs put the load
    generator on the gateway's CPU when it would otherwise share the upstream's (the gateway is idle
    then), so the floor is measured with client and upstream apart.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if spec:
        parts = spec.split(",")
        if len(parts) != 3:
            raise ValueError("--cores wants UPSTREAM,GATEWAY,CLIENT, e.g. 0,1,2 or 0,1,2:3")
        upstream, gateway = int(parts[0]), int(parts[1])
        client = [int(c) for c in parts[2].split(":")]
    elif len(cpus) >= 3:
        upstream, gateway, client = cpus[0], cpus[1], cpus[2:4]
    elif len(cpus) == 2:
        upstream, gateway, client = cpus[0], cpus[1], [cpus[0]]
    else:
        return Layout(None, None, [], [])
    direct_client = client
    if client == [upstream] and gateway is not None:
        direct_client = [gateway]
    return Layout(upstream, gateway, client, direct_client)


# -- /proc sampling ------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    result, stack = [], [pid]
    while stack:
        current = stack.pop()
        result.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                    stack.extend(int(c) for c in children)
        except OSError:
            continue
    return result


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kb(pid: int) -> int:
    """Current resident set size of ``pid`` and its descendants, in KiB (VmRSS summed)."""
    return sum(_status_kb(p, "VmRSS:") for p in process_tree(pid))


def hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid`` and its descendants, in KiB (summed)."""
    return sum(_status_kb(p, "VmHWM:") for p in process_tree(pid))


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/<pid>/clear_refs``); False if not allowed."""
    ok = True
    for p in process_tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of ``pid`` and its live descendants, in seconds."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _scan_processes() -> dict[tuple[int, int], float]:
    """(pid, start time in ticks) -> user+system CPU seconds, for every user-space process."""
    seen: dict[tuple[int, int], float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, flags = int(fields[1]), int(fields[6])
        if int(entry) == 2 or ppid == 2 or flags & 0x00200000:  # kernel threads (PF_KTHREAD)
            continue
        seen[(int(entry), int(fields[19]))] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seen


class OtherCpuWatcher:
    """CPU used by processes outside the bench while it measures, in % of one core.

    /proc is scanned at the start, every ``interval`` seconds and at the end; a process's share is
    its CPU time at its last sighting minus at its first (or all of it when it started during the
    window). Kernel threads are left out (ksoftirqd & co. mostly carry the bench's own loopback
    traffic), and so is anything shorter-lived than ``interval``: the figure is a lower bound.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._first: dict[tuple[int, int], float] = {}
        self._last: dict[tuple[int, int], float] = {}
        self._start_ticks = 0.0
        self._t0 = 0.0
        self._wall = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="other-cpu", daemon=True)

    def __enter__(self) -> OtherCpuWatcher:
        self._start_ticks = _uptime() * CLK_TCK
        self._first = _scan_processes()
        self._last = dict(self._first)
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._last.update(_scan_processes())
        self._wall = time.monotonic() - self._t0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(_scan_processes())

    def percent(self, exclude: set[int]) -> float:
        """Other processes' CPU over the window, % of one core (``exclude``: the bench's pids)."""
        total = 0.0
        for key, cpu in self._last.items():
            pid, started = key
            if pid in exclude:
                continue
            if key in self._first:
                total += cpu - self._first[key]
            elif started >= self._start_ticks - CLK_TCK:  # started during the window
                total += cpu
        cap = 100.0 * (os.cpu_count() or 1)
        return min(cap, total / self._wall * 100) if self._wall else 0.0


def mb(kib: int | float) -> float:
    return kib / 1024


class RssSampler:
    """A background thread sampling a process tree's RSS every ``interval`` seconds (the max is kept)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.peak_kb = rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak_kb = max(self.peak_kb, rss_kb(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            self.samples += 1


def settled_rss_kb(pid: int, timeout: float = 3.0, interval: float = 0.2) -> int:
    """RSS once two consecutive samples agree within 1% (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    previous = rss_kb(pid)
    while time.monotonic() < deadline:
        time.sleep(interval)  # sampling interval, not synchronisation
        current = rss_kb(pid)
        if abs(current - previous) <= max(64, previous // 100):
            return current
        previous = current
    return previous


# -- machine facts -------------------------------------------------------------------------------


@dataclass
class Machine:
    cpu_model: str
    cpus_online: int
    cpus_allowed: list[int]
    kernel: str
    python: str
    date: str
    loadavg: str
    commit: str = "?"
    extra: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [
            f"- machine: {self.cpu_model}, {self.cpus_online} CPUs online "
            f"(usable: {','.join(map(str, self.cpus_allowed))}), Linux {self.kernel}",
            f"- Python {self.python}; date {self.date}; load average at start {self.loadavg}",
            f"- repo commit {self.commit}",
        ]
        lines += [f"- {key}: {value}" for key, value in self.extra.items()]
        return lines


def machine_facts() -> Machine:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit, load = "?", "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(REPO_DIR), "log", "-1", "--format=%h %s"],
                             capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "?"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return Machine(
        cpu_model=model,
        cpus_online=os.cpu_count() or 0,
        cpus_allowed=sorted(os.sched_getaffinity(0)),
        kernel=platform.release(),
        python=platform.python_version(),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        loadavg=load,
        commit=commit,
    )
