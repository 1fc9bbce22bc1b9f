"""Benchmark the gateway against the fake upstream: direct vs through the gateway, one command.

    .venv/bin/python bench/run.py [--quick] [--sizes 100k,5m] [--concurrency 1,16] [--duration 10]
                                  [--cores UPSTREAM,GATEWAY,CLIENT] [--route unified|openai] [--direct-only]

For every size x concurrency it runs wrk (a warm-up, then a bounded measured run) straight at the fake
upstream (the floor) and through ``bifrost-stt serve`` (1 worker, pinned to its own core), and prints
req/s, p50/p99, the p50 overhead at c=1, the gateway's CPU per request and its RSS (idle and peak,
children included) as a Markdown table, also written to bench/results/latest.md.

Exit status: 0 when every request succeeded; 1 when the gateway answered any request with a non-2xx
status or a socket error (a broken gateway is not reported as fast); 2 when the gateway could not be
started or failed the sanity request; 3 when the direct path itself failed (the bench is broken).

It is a benchmark, not a test: CI does not run it. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import _harness as h

RESULTS = h.BENCH_DIR / "results" / "latest.md"

# The reference figures (its machine, not this one): shown next to ours for context.
PEERS = {
    "overhead": ("1.6 ms", "7.8 ms"),
    "rps_100k": ("~600", "~145"),
    "rps_5m": ("~42", "~44"),
    "idle": ("79 MB", "310 MB"),
    "peak": ("412 MB", "499 MB"),
}
TARGETS = {"overhead_ms": 1.0, "rps_100k": 1250.0, "rps_5m": 175.0, "idle_mb": 80.0, "peak_mb": 150.0}


# -- data --------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One measured load run, as the load generator reported it."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @classmethod
    def from_json(cls, data: dict[str, float]) -> LoadResult:
        return cls(
            requests=int(data["requests"]),
            duration_s=data["duration_us"] / 1e6,
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            mean_ms=data["mean_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")},
        )


@dataclass
class Measurement:
    """A load run plus what was observed around it."""

    target: str  # "direct" or "gateway"
    size: int
    concurrency: int
    load: LoadResult
    client_cpu_s: float
    foreign_cpu_pct: float  # CPU used by processes not part of the bench, in % of one core
    upstream_requests: int  # requests the fake upstream completed during the run
    gateway_cpu_s: float | None = None
    peak_rss_kb: int | None = None
    rss_before_kb: int | None = None  # the gateway's RSS when the run started (after the warm-up)
    notes: list[str] = field(default_factory=list)

    @property
    def gateway_ms_per_request(self) -> float | None:
        if self.gateway_cpu_s is None or not self.load.requests:
            return None
        return self.gateway_cpu_s * 1000 / self.load.requests


# -- set-up --------------------------------------------------------------------------------------


def ensure_wrk() -> str | None:
    """Path to wrk, installing the Debian package if needed (apt-get update once on failure)."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    print("wrk not found: apt-get install -y wrk ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    for attempt in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(attempt, env=env, capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if attempt is install and done.returncode == 0:
            break
    return shutil.which("wrk")


# -- running load --------------------------------------------------------------------------------


def load_command(wrk: str | None, url: str, body: Path, script: Path, concurrency: int,
                 duration: int, cpus: list[int]) -> list[str]:
    """The argv of one bounded load run (wrk, or the Python fallback)."""
    if wrk:
        threads = max(1, min(concurrency, len(cpus) or 1))
        return h.taskset(cpus) + [
            wrk, "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s",
            "--latency", "--timeout", "30s", "-s", str(script), url,
        ]
    return h.taskset(cpus) + [
        sys.executable, str(h.BENCH_DIR / "loadgen.py"), "--url", url, "--body-file", str(body),
        "--content-type", h.content_type(), "--concurrency", str(concurrency),
        "--duration", str(duration), "--timeout", "30",
    ]


def run_load(procs: h.Processes, argv: list[str], duration: int, log: Path) -> LoadResult:
    """Run the load generator to completion (bounded: killed after duration + 60 s)."""
    proc = procs.start(argv, log, stdout_pipe=True)
    try:
        out, _ = proc.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise h.BenchError(f"load generator did not finish in {duration + 60} s: {' '.join(argv)}")
    finally:
        procs.stop(proc)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            return LoadResult.from_json(json.loads(line[len("BENCH_JSON "):]))
    raise h.BenchError(f"no summary from the load generator (exit {proc.returncode}):\n"
                       + out.decode(errors="replace")[-2000:] + "\n" + h.tail(log))


def upstream_stats(upstream: h.Service) -> dict[str, object]:
    status, body = h.http_get(f"http://127.0.0.1:{upstream.port}/stats")
    if status != 200:
        raise h.BenchError(f"fake upstream /stats answered {status}")
    return json.loads(body)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(procs: h.Processes, target: str, size: int, concurrency: int, argv: list[str],
            warmup_argv: list[str] | None, duration: int, warmup: int, upstream: h.Service,
            gateway: h.Service | None, workdir: Path) -> Measurement:
    """Warm up, then one measured run with CPU, RSS and upstream accounting around it."""
    log = workdir / f"load-{target}-{size}-{concurrency}.log"
    if warmup_argv and warmup > 0:
        run_load(procs, warmup_argv, warmup, log)
    before_up = upstream_stats(upstream)
    gw_cpu0 = h.cpu_seconds(gateway.pid) if gateway else 0.0
    child0 = children_cpu_s()
    rss_before = h.rss_kb(gateway.pid) if gateway else None
    hwm_ok = h.reset_hwm(gateway.pid) if gateway else False
    sampler = h.RssSampler(gateway.pid) if gateway else contextlib.nullcontext()
    with h.OtherCpuWatcher() as others, sampler:
        load = run_load(procs, argv, duration, log)
    client_cpu = children_cpu_s() - child0
    mine = {os.getpid(), *h.process_tree(upstream.pid)}
    gw_cpu = None
    peak = None
    if gateway:
        mine.update(h.process_tree(gateway.pid))
        gw_cpu = h.cpu_seconds(gateway.pid) - gw_cpu0
        assert isinstance(sampler, h.RssSampler)
        peak = max(sampler.peak_kb, h.hwm_kb(gateway.pid) if hwm_ok else 0)
    # the load generator ran as our child: every process it was is ours too
    mine.update(procs.started_pids)
    foreign = others.percent(mine)
    after_up = upstream_stats(upstream)
    m = Measurement(
        target=target, size=size, concurrency=concurrency, load=load, client_cpu_s=client_cpu,
        foreign_cpu_pct=foreign,
        upstream_requests=int(after_up["requests"]) - int(before_up["requests"]),  # type: ignore[call-overload]
        gateway_cpu_s=gw_cpu, peak_rss_kb=peak, rss_before_kb=rss_before,
    )
    if target == "gateway":
        # up to `concurrency` requests may be in flight when the warm-up ends and again when the
        # measured run ends; the gateway may still forward those: more than that is worth a look
        gap = m.upstream_requests - load.requests
        if abs(gap) > 2 * concurrency + 2 and not load.non_2xx:
            m.notes.append(f"upstream saw {m.upstream_requests} requests for {load.requests} answered "
                           "(retries? requests forwarded after the client went away?)")
    return m


# -- report --------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_mb(kib: int | None) -> str:
    return "—" if kib is None else f"{h.mb(kib):.0f} MB"


def with_ceiling(m: Measurement | None) -> str:
    """req/s, plus the CPU-bound ceiling 1 s / (gateway CPU per request): robust to other load."""
    if m is None:
        return "not run"
    per_request = m.gateway_ms_per_request
    ceiling = f" (CPU-bound ceiling {fmt_rps(1000 / per_request)})" if per_request else ""
    return fmt_rps(m.load.rps) + ceiling


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✅" if ok else "❌")


def render(machine: h.Machine, args: argparse.Namespace, layout: h.Layout, tool: str,
           results: list[Measurement], idle_kb: int | None, idle_after_kb: int | None,
           gateway_argv: list[str] | None, gateway_error: str | None, sanity: str | None,
           gateway_log: dict[str, str], route: tuple[str, str]) -> str:
    """The whole Markdown report."""
    by_key = {(m.target, m.size, m.concurrency): m for m in results}
    lines = [f"# bifrost-stt benchmark ({machine.date})", ""]
    lines += machine.lines()
    lines += [
        f"- load generator: {tool}; {args.warmup} s warm-up + {args.duration} s measured per run",
        f"- layout: {layout.describe()}",
        f"- gateway: {' '.join(gateway_argv) if gateway_argv else 'not run'}",
        f"- route: POST {route[0]} with model `{route[1]}`; fake upstream: bench/upstream.py (uvloop)",
        "",
    ]
    if gateway_error:
        first, _, rest = gateway_error.partition("\n")
        lines += [f"**Gateway not measured:** {first}", ""]
        if rest.strip():
            lines += ["```", *rest.strip().splitlines()[-12:], "```", ""]
    if sanity:
        lines += [f"Sanity request through the gateway: {sanity}", ""]

    lines += ["## Results", "",
              "| size | c | direct req/s | direct p50 | direct p99 | gateway req/s | gateway p50 | gateway p99 "
              "| p50 overhead | gateway CPU/req | gateway peak RSS | gateway errors | other load |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in args.size_list:
        for c in args.concurrency_list:
            d = by_key.get(("direct", size, c))
            g = by_key.get(("gateway", size, c))
            overhead = (g.load.p50_ms - d.load.p50_ms) if (g and d and c == 1) else None
            errors = "—"
            if g:
                errors = ("0" if not (g.load.non_2xx or g.load.socket_errors)
                          else f"{g.load.non_2xx} non-2xx, {g.load.socket_errors} socket")
            noise = max((m.foreign_cpu_pct for m in (d, g) if m), default=0.0)
            lines.append(
                f"| {h.size_label(size)} | {c} "
                f"| {fmt_rps(d.load.rps) if d else '—'} | {fmt_ms(d.load.p50_ms) if d else '—'} "
                f"| {fmt_ms(d.load.p99_ms) if d else '—'} "
                f"| {fmt_rps(g.load.rps) if g else '—'} | {fmt_ms(g.load.p50_ms) if g else '—'} "
                f"| {fmt_ms(g.load.p99_ms) if g else '—'} | {fmt_ms(overhead)} "
                f"| {fmt_ms(g.gateway_ms_per_request) if g else '—'} "
                f"| {fmt_mb(g.peak_rss_kb) if g else '—'} | {errors} | {noise:.0f}% |"
            )
    lines.append("")

    def get(size: int, c: int) -> tuple[Measurement | None, Measurement | None]:
        return by_key.get(("direct", size, c)), by_key.get(("gateway", size, c))

    d1, g1 = get(100_000, 1)
    d16, g16 = get(100_000, 16)
    d5, g5 = get(5_000_000, 16)
    overhead = (g1.load.p50_ms - d1.load.p50_ms) if (g1 and d1) else None
    lines += ["## Against the performance issue's targets", "",
              "| figure | ours | target | met | Portkey (Node) | LiteLLM (Python) |",
              "| --- | ---: | ---: | :-: | ---: | ---: |"]
    rows = [
        ("100 KB c=1 p50 overhead", fmt_ms(overhead), "≤ 1.0 ms",
         None if overhead is None else overhead <= TARGETS["overhead_ms"], PEERS["overhead"]),
        ("100 KB c=16 req/s", with_ceiling(g16), "≥ 1,250",
         None if not g16 else g16.load.rps >= TARGETS["rps_100k"], PEERS["rps_100k"]),
        ("5 MB c=16 req/s", with_ceiling(g5), "≥ 175",
         None if not g5 else g5.load.rps >= TARGETS["rps_5m"], PEERS["rps_5m"]),
        ("idle RSS", fmt_mb(idle_kb), "≤ 80 MB",
         None if idle_kb is None else h.mb(idle_kb) <= TARGETS["idle_mb"], PEERS["idle"]),
        ("peak RSS, 16 concurrent 5 MB uploads",
         (fmt_mb(g5.peak_rss_kb) + f" (RSS {fmt_mb(g5.rss_before_kb)} when the run started)") if g5 else "not run",
         "≤ 150 MB",
         None if not g5 or g5.peak_rss_kb is None else h.mb(g5.peak_rss_kb) <= TARGETS["peak_mb"],
         PEERS["peak"]),
    ]
    for name, ours, target, ok, (portkey, litellm) in rows:
        lines.append(f"| {name} | {ours} | {target} | {mark(ok)} | {portkey} | {litellm} |")
    lines += [
        f"| direct floor 100 KB c=16 / 5 MB c=16 req/s | {fmt_rps(d16.load.rps) if d16 else '—'} / "
        f"{fmt_rps(d5.load.rps) if d5 else '—'} | (issue's machine: ~7,900 / ~290–330) | | | |",
        "",
    ]
    if idle_after_kb is not None:
        lines.append(f"Gateway RSS: {fmt_mb(idle_kb)} idle after start, {fmt_mb(idle_after_kb)} idle after all runs.")
        lines.append("")

    notes = [f"{m.target} {h.size_label(m.size)} c={m.concurrency}: {n}" for m in results for n in m.notes]
    noisy = [m for m in results if m.foreign_cpu_pct >= 10]
    if noisy:
        notes.append(
            "other processes used ≥10% of a core during "
            + ", ".join(f"{m.target} {h.size_label(m.size)} c={m.concurrency} ({m.foreign_cpu_pct:.0f}%)"
                        for m in noisy)
            + ": those figures are pessimistic; re-run on a quiet machine"
        )
    if tool.startswith("Python"):
        notes.append("the Python load generator (bench/loadgen.py) ran instead of wrk: it caps req/s well below wrk's")
    for when, summary in gateway_log.items():
        if summary.strip():
            notes.append(f"the gateway logged {when} (count x line):\n\n```\n{summary}\n```")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += [
        "Columns: req/s = completed requests / measured seconds; p50/p99 = wrk latency percentiles "
        "(with wrk's coordinated-omission correction); p50 overhead = gateway p50 − direct p50 at c=1; "
        "gateway CPU/req = gateway process CPU time / requests; peak RSS = VmHWM (reset before each run) "
        "and 20 ms VmRSS samples, children included; other load = CPU used by processes outside the "
        "bench during the run, % of one core; CPU-bound ceiling = 1 s / gateway CPU per request, the "
        "req/s one whole core would give (less sensitive to other load than req/s itself).",
        "",
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="100k,5m x c=1,16, 3 s runs, 1 s warm-up (~40 s in all)")
    parser.add_argument("--sizes", help="comma-separated payload sizes (default 100k,1m,5m)")
    parser.add_argument("--concurrency", help="comma-separated connection counts (default 1,16)")
    parser.add_argument("--duration", type=int, help="seconds per measured run (default 8; quick 3)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 2; quick 1)")
    parser.add_argument("--cores", help="UPSTREAM,GATEWAY,CLIENT CPU numbers, e.g. 0,1,2 or 0,1,2:3")
    parser.add_argument("--route", choices=("unified", "openai"), default="unified",
                        help="unified: /v1/audio/transcriptions + openai/whisper-1; "
                             "openai: /openai/v1/audio/transcriptions + whisper-1")
    parser.add_argument("--gateway-cmd", help="another server to measure instead of bifrost-stt: a "
                        "command line with {config}, {port} and {upstream} placeholders")
    parser.add_argument("--direct-only", action="store_true", help="only measure the fake upstream")
    parser.add_argument("--python-client", action="store_true", help="use bench/loadgen.py even if wrk exists")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (payloads, logs)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"report file (default {RESULTS})")
    args = parser.parse_args(argv)
    args.size_list = [h.parse_size(s) for s in (args.sizes or ("100k,5m" if args.quick else "100k,1m,5m")).split(",")]
    args.concurrency_list = [int(c) for c in (args.concurrency or "1,16").split(",")]
    args.duration = args.duration or (3 if args.quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.duration < 1 or any(c < 1 for c in args.concurrency_list):
        parser.error("durations and concurrencies must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h.install_signal_handlers()
    started = time.monotonic()
    machine = h.machine_facts()
    try:
        layout = h.plan_layout(args.cores)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    wrk = None if args.python_client else ensure_wrk()
    tool = "wrk 4" if wrk else "Python aiohttp fallback (bench/loadgen.py)"
    if wrk:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=5).stdout
            tool = version.split("Copyright")[0].strip() or tool
    elif not args.python_client:
        print("wrk is not available and could not be installed: using the Python load generator "
              "(slower: req/s are a lower bound)", flush=True)
    # the orchestrator itself lives on the load generator's CPU, away from the gateway
    if layout.client:
        os.sched_setaffinity(0, set(layout.client))

    route = ("/v1/audio/transcriptions", "openai/whisper-1") if args.route == "unified" \
        else ("/openai/v1/audio/transcriptions", "whisper-1")
    procs = h.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="bifrost-bench-"))
    results: list[Measurement] = []
    gateway: h.Service | None = None
    gateway_argv: list[str] | None = None
    gateway_error: str | None = None
    sanity: str | None = None
    idle_kb = idle_after_kb = None
    gateway_log: dict[str, str] = {}
    startup_log_end = 0
    exit_code = 0
    try:
        print(f"payloads and logs in {workdir}", flush=True)
        bodies: dict[tuple[str, int], tuple[Path, Path]] = {}
        for size in args.size_list:
            for target, model in (("direct", "whisper-1"), ("gateway", route[1])):
                body = workdir / f"body-{target}-{size}.bin"
                h.write_body_file(body, model, size)
                script = workdir / f"post-{target}-{size}.lua"
                h.write_wrk_script(script, body)
                bodies[(target, size)] = (body, script)

        upstream = h.start_upstream(procs, workdir, layout.upstream)
        print(f"fake upstream on 127.0.0.1:{upstream.port} (pid {upstream.pid})", flush=True)
        if not args.direct_only:
            try:
                gateway, gateway_argv = h.start_gateway(procs, workdir, layout.gateway, upstream.port,
                                                           command=args.gateway_cmd)
                startup_log_end = gateway.log_size()
                idle_kb = h.settled_rss_kb(gateway.pid)
                print(f"gateway on 127.0.0.1:{gateway.port} (pid {gateway.pid}), idle RSS "
                      f"{h.mb(idle_kb):.0f} MB", flush=True)
                sanity, ok = sanity_check(gateway, upstream, bodies[("gateway", args.size_list[0])][0], route)
                print(f"sanity: {sanity}", flush=True)
                if not ok:
                    gateway_error = "the sanity request failed"
            except h.BenchError as exc:
                gateway_error = str(exc)
                print(f"gateway unavailable: {exc}", flush=True)
            if gateway_error:
                exit_code = 2
                if gateway is not None:
                    procs.stop(gateway.proc)
                    gateway = None

        direct_url = f"http://127.0.0.1:{upstream.port}{h.TRANSCRIPTIONS}"
        for size in args.size_list:
            for c in args.concurrency_list:
                runs = [("direct", direct_url, layout.direct_client)]
                if gateway:
                    runs.append(("gateway", f"http://127.0.0.1:{gateway.port}{route[0]}", layout.client))
                for target, url, cpus in runs:
                    body, script = bodies[(target, size)]
                    argv = load_command(wrk, url, body, script, c, args.duration, cpus)
                    warm = load_command(wrk, url, body, script, c, args.warmup, cpus)
                    m = measure(procs, target, size, c, argv, warm, args.duration, args.warmup,
                                upstream, gateway if target == "gateway" else None, workdir)
                    results.append(m)
                    print(progress_line(m), flush=True)
                    if m.load.non_2xx or m.load.socket_errors:
                        exit_code = max(exit_code, 1 if target == "gateway" else 3)

        if gateway:
            idle_after_kb = h.settled_rss_kb(gateway.pid)
            gateway_log = {"at start-up": gateway.log_summary(0, startup_log_end),
                           "under load": gateway.log_summary(startup_log_end)}
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr, flush=True)
        exit_code = 130
    except h.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        exit_code = 3
    finally:
        procs.close()
        if args.keep:
            print(f"kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if results or gateway_error:
        report = render(machine, args, layout, tool, results, idle_kb, idle_after_kb, gateway_argv,
                        gateway_error, sanity, gateway_log, route)
        report += f"Total run time {time.monotonic() - started:.0f} s; exit status {exit_code}.\n"
        print("\n" + report)
        if exit_code == 130:
            print(f"interrupted: {args.output} left as it was")
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(report)
            print(f"written to {args.output}")
    return exit_code


def sanity_check(gateway: h.Service, upstream: h.Service, body_path: Path,
                 route: tuple[str, str]) -> tuple[str, bool]:
    """One request through the gateway: it must answer 200 with text "ok" and reach the upstream."""
    before = upstream_stats(upstream)
    status, headers, body = h.http_post(
        f"http://127.0.0.1:{gateway.port}{route[0]}", body_path.read_bytes(),
        {"Content-Type": h.content_type(), "Authorization": f"Bearer {h.API_KEY}"})
    after = upstream_stats(upstream)
    models = {k: v - before["models"].get(k, 0)  # type: ignore[union-attr]
              for k, v in after["models"].items() if v != before["models"].get(k, 0)}  # type: ignore[union-attr]
    text = body[:300].decode(errors="replace")
    ok = status == 200
    try:
        ok = ok and json.loads(body).get("text") == "ok"
    except ValueError:
        ok = False
    reached = int(after["requests"]) - int(before["requests"])  # type: ignore[call-overload]
    ok = ok and reached == 1
    return (f"HTTP {status} `{text}` ({headers.get('content-type', '?')}); the upstream got {reached} "
            f"request(s), model {models or '?'}, Bearer {'ok' if after['bearer_ok'] != before['bearer_ok'] else 'missing'}",
            ok)


def progress_line(m: Measurement) -> str:
    parts = [f"{m.target:8s} {h.size_label(m.size):>7s} c={m.concurrency:<3d}",
             f"{fmt_rps(m.load.rps):>7s} req/s", f"p50 {fmt_ms(m.load.p50_ms)}", f"p99 {fmt_ms(m.load.p99_ms)}"]
    if m.gateway_cpu_s is not None:
        parts.append(f"cpu/req {fmt_ms(m.gateway_ms_per_request)}")
    if m.peak_rss_kb is not None:
        parts.append(f"peak RSS {fmt_mb(m.peak_rss_kb)}")
    if m.load.non_2xx or m.load.socket_errors:
        parts.append(f"ERRORS {m.load.errors}")
    parts.append(f"other load {m.foreign_cpu_pct:.0f}%")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
