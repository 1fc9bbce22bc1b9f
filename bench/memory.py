"""How much memory does the gateway use for large concurrent uploads?

    .venv/bin/python bench/memory.py [--scenario 16x5m --scenario 16x1m --scenario 1x25m] [--rounds 5]
                                     [--chunked] [--file-first] [--route unified|openai] [--cores U,G,C]

Starts the fake upstream and ``bifrost-stt serve`` (1 worker, own core), then for each scenario
``N x SIZE`` sends N concurrent uploads through the gateway with a streaming client: the multipart
body is generated chunk by chunk (64 KiB of noise reused), so the client never holds a file. While
they run, the gateway's RSS (children included) is sampled every 10 ms and its VmHWM is read; each
scenario is repeated ``--rounds`` times so that memory which is never given back shows as a rising
"after" figure.

Printed per round: baseline RSS, peak RSS, growth (peak - baseline), growth per upload, RSS once
settled afterwards, and whether the upstream received every byte. Exit status 1 if any upload
failed, 2 if the gateway could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

import _harness as h

RESULTS = h.BENCH_DIR / "results" / "memory.md"


@dataclass
class Round:
    """One round of one scenario."""

    count: int
    size: int
    round_no: int
    ok: int
    statuses: dict[int | str, int]
    wall_s: float
    baseline_kb: int
    peak_kb: int
    after_kb: int
    upstream_requests: int
    upstream_bytes: int

    @property
    def growth_kb(self) -> int:
        return max(0, self.peak_kb - self.baseline_kb)


def parse_scenario(text: str) -> tuple[int, int]:
    """``"16x5m"`` -> (16, 5_000_000)."""
    count, _, size = text.lower().partition("x")
    if not count.isdigit() or not size:
        raise argparse.ArgumentTypeError(f"bad scenario {text!r} (use e.g. 16x5m)")
    return int(count), h.parse_size(size)


async def upload(session: aiohttp.ClientSession, url: str, model: str, size: int, chunked: bool,
                 file_first: bool) -> int | str:
    """One streaming upload; its HTTP status, or the exception's name."""

    async def body() -> AsyncIterator[bytes]:
        for piece in h.iter_body(model, size, file_first=file_first):
            yield piece

    headers = {"Content-Type": h.content_type(), "Authorization": f"Bearer {h.API_KEY}"}
    if not chunked:
        headers["Content-Length"] = str(h.body_length(model, size, file_first))
    try:
        async with session.post(url, data=body(), headers=headers) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return type(exc).__name__


async def run_round(url: str, model: str, count: int, size: int, chunked: bool, file_first: bool,
                    timeout: float) -> tuple[dict[int | str, int], float]:
    """``count`` concurrent uploads; (status -> how many, wall seconds)."""
    started = time.monotonic()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        results = await asyncio.gather(
            *(upload(session, url, model, size, chunked, file_first) for _ in range(count)))
    statuses: dict[int | str, int] = {}
    for status in results:
        statuses[status] = statuses.get(status, 0) + 1
    return statuses, time.monotonic() - started


def measure_round(gateway: h.Service, upstream: h.Service, url: str, model: str, count: int, size: int,
                  round_no: int, args: argparse.Namespace) -> Round:
    baseline = h.settled_rss_kb(gateway.pid)
    before = _upstream_stats(upstream)
    hwm_ok = h.reset_hwm(gateway.pid)
    with h.RssSampler(gateway.pid, interval=0.01) as sampler:
        statuses, wall = asyncio.run(run_round(url, model, count, size, args.chunked, args.file_first,
                                               args.timeout))
    peak = max(sampler.peak_kb, h.hwm_kb(gateway.pid) if hwm_ok else 0)
    after_stats = _upstream_stats(upstream)
    return Round(
        count=count, size=size, round_no=round_no, ok=statuses.get(200, 0), statuses=statuses,
        wall_s=wall, baseline_kb=baseline, peak_kb=peak, after_kb=h.settled_rss_kb(gateway.pid),
        upstream_requests=int(after_stats["requests"]) - int(before["requests"]),
        upstream_bytes=int(after_stats["body_bytes"]) - int(before["body_bytes"]),
    )


def _upstream_stats(upstream: h.Service) -> dict[str, int]:
    status, body = h.http_get(f"http://127.0.0.1:{upstream.port}/stats")
    if status != 200:
        raise h.BenchError(f"fake upstream /stats answered {status}")
    return json.loads(body)


def render(machine: h.Machine, args: argparse.Namespace, layout: h.Layout, idle_kb: int, final_kb: int,
           rounds: list[Round], gateway_log: str) -> str:
    mode = ("chunked" if args.chunked else "Content-Length") + (", file before model" if args.file_first
                                                              else ", model before file")
    lines = [f"# bifrost-stt memory under large uploads ({machine.date})", ""] + machine.lines() + [
        f"- layout: {layout.describe()}",
        f"- uploads: streaming aiohttp client, {mode}; route {args.route}",
        f"- gateway idle RSS at start: {h.mb(idle_kb):.0f} MB; at the end: {h.mb(final_kb):.0f} MB",
        "",
        "| uploads | round | OK | wall | RSS before | peak RSS | growth | growth / upload | RSS after "
        "| upstream got |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rounds:
        expected = r.count * r.size
        got = (f"{r.upstream_requests} req, {r.upstream_bytes / 1e6:.1f} MB"
               + (" ✅" if r.upstream_requests == r.count and r.upstream_bytes >= expected else " ❌"))
        status = f"{r.ok}/{r.count}" + ("" if r.ok == r.count else f" {r.statuses}")
        lines.append(
            f"| {r.count} × {h.size_label(r.size)} | {r.round_no} | {status} | {r.wall_s:.2f} s "
            f"| {h.mb(r.baseline_kb):.0f} MB | {h.mb(r.peak_kb):.0f} MB | +{h.mb(r.growth_kb):.0f} MB "
            f"| +{h.mb(r.growth_kb) / r.count:.1f} MB | {h.mb(r.after_kb):.0f} MB | {got} |")
    lines.append("")
    target = [r for r in rounds if r.count == 16 and r.size == 5_000_000]
    if target:
        worst = max(r.peak_kb for r in target)
        lines += [f"Peak RSS with 16 concurrent 5 MB uploads: {h.mb(worst):.0f} MB "
                  f"(target ≤ 150 MB: {'met' if h.mb(worst) <= 150 else 'NOT met'}).", ""]
    if gateway_log.strip():
        lines += ["The gateway logged during the uploads (count x line):", "", "```", gateway_log, "```", ""]
    lines += ["RSS = VmRSS of the gateway and its children; peak = max of VmHWM (reset before each "
              "round) and 10 ms samples; 'upstream got' = requests and body bytes the fake upstream "
              "received during the round (✅ when every upload arrived in full).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=parse_scenario, action="append",
                        help="N x SIZE, repeatable (default: 16x5m, 16x1m and 1x25m; 1 MB sits just "
                             "under the gateway's default 1 MiB spool threshold, so it is kept in memory)")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of each scenario (default 5)")
    parser.add_argument("--chunked", action="store_true", help="send Transfer-Encoding: chunked")
    parser.add_argument("--file-first", action="store_true", help="put the file part before model")
    parser.add_argument("--route", choices=("unified", "openai"), default="unified")
    parser.add_argument("--cores", help="UPSTREAM,GATEWAY,CLIENT CPU numbers, e.g. 0,1,2")
    parser.add_argument("--timeout", type=float, default=120.0, help="per upload, seconds")
    parser.add_argument("--gateway-cmd", help="another server to measure instead of bifrost-stt: a "
                        "command line with {config} and {port} placeholders")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scenarios = args.scenario or [(16, 5_000_000), (16, 1_000_000), (1, 25_000_000)]
    if args.rounds < 1:
        parser.error("--rounds must be ≥ 1")
    try:
        layout = h.plan_layout(args.cores)
    except ValueError as exc:
        parser.error(str(exc))
    h.install_signal_handlers()
    machine = h.machine_facts()
    if layout.client:
        os.sched_setaffinity(0, set(layout.client))
    path, model = (("/v1/audio/transcriptions", "openai/whisper-1") if args.route == "unified"
                   else ("/openai/v1/audio/transcriptions", "whisper-1"))
    procs = h.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="bifrost-memory-"))
    rounds: list[Round] = []
    exit_code = 0
    try:
        upstream = h.start_upstream(procs, workdir, layout.upstream)
        try:
            gateway, _argv = h.start_gateway(procs, workdir, layout.gateway, upstream.port,
                                             command=args.gateway_cmd)
        except h.BenchError as exc:
            print(f"gateway unavailable: {exc}", file=sys.stderr)
            return 2
        startup_log_end = gateway.log_size()
        idle = h.settled_rss_kb(gateway.pid)
        print(f"gateway pid {gateway.pid}: idle RSS {h.mb(idle):.0f} MB", flush=True)
        url = f"http://127.0.0.1:{gateway.port}{path}"
        for count, size in scenarios:
            for round_no in range(1, args.rounds + 1):
                r = measure_round(gateway, upstream, url, model, count, size, round_no, args)
                rounds.append(r)
                print(f"{count:3d} x {h.size_label(r.size):>6s} round {round_no}: {r.ok}/{count} OK "
                      f"in {r.wall_s:.2f} s, RSS {h.mb(r.baseline_kb):.0f} -> peak {h.mb(r.peak_kb):.0f} "
                      f"(+{h.mb(r.growth_kb):.0f} MB) -> {h.mb(r.after_kb):.0f} MB", flush=True)
                if r.ok != count:
                    print(f"    failures: {r.statuses}", flush=True)
                    exit_code = 1
        final = h.settled_rss_kb(gateway.pid)
        report = render(machine, args, layout, idle, final, rounds,
                        gateway.log_summary(startup_log_end))
        print("\n" + report)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
        print(f"written to {args.output}")
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr)
        exit_code = 130
    except h.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        exit_code = 3
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
