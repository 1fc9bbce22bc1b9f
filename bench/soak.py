"""Memory after load: a soak at high concurrency, then idle. Does the gateway give its memory back?

    .venv/bin/python bench/soak.py                  # 60 s at c=256 with 1 MB uploads, then 15 s idle
    .venv/bin/python bench/soak.py --quick          # 15 s at c=64, 5 s idle (a smoke run)
    .venv/bin/python bench/soak.py --duration 60 --concurrency 256 --size 1m --idle 15 [--env MALLOC_ARENA_MAX=2]

Starts the fake upstream and ``bifrost-stt serve`` (1 worker, own core when there is one), records the
gateway's idle RSS, runs ``--concurrency`` closed-loop streaming clients (each posts one upload after the
other; the body is generated in 64 KiB pieces, so the client never holds a file) for ``--duration`` seconds
while sampling the gateway's RSS every 20 ms, then leaves the gateway idle for ``--idle`` seconds and reads its
RSS again. Prints idle / peak / after-idle RSS, the peak per in-flight request, requests and errors.

Exit status: 0, or 1 when an upload failed (non-200 or a client error), 2 when the gateway did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

import _harness as h


async def soak(url: str, model: str, size: int, concurrency: int, duration: float) -> tuple[int, dict[str, int]]:
    """Closed loop: ``concurrency`` workers posting until ``duration`` has passed; (200s, other outcomes)."""
    ok = 0
    other: dict[str, int] = {}
    stop = time.monotonic() + duration
    headers = {"Content-Type": h.content_type(), "Authorization": f"Bearer {h.API_KEY}",
               "Content-Length": str(h.body_length(model, size))}

    async def body() -> object:
        for piece in h.iter_body(model, size):
            yield piece

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        while time.monotonic() < stop:
            try:
                async with session.post(url, data=body(), headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                    else:
                        other[str(resp.status)] = other.get(str(resp.status), 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                other[type(exc).__name__] = other.get(type(exc).__name__, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok, other


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--concurrency", type=int, default=256, help="clients in flight (default 256)")
    parser.add_argument("--size", type=h.parse_size, default=h.parse_size("1m"), help="upload size (default 1m)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds idle after the load (default 15)")
    parser.add_argument("--quick", action="store_true", help="15 s at c=64, 5 s idle")
    parser.add_argument("--cores", help="UPSTREAM,GATEWAY,CLIENT CPU numbers, e.g. 0,1,2")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway's environment")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.concurrency, args.idle = 15.0, 64, 5.0
    layout = h.plan_layout(args.cores)
    h.install_signal_handlers()
    if layout.client:
        os.sched_setaffinity(0, set(layout.client))
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value  # inherited by the gateway process
    procs = h.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="bifrost-soak-"))
    code = 0
    try:
        upstream = h.start_upstream(procs, workdir, layout.upstream)
        try:
            gateway, _ = h.start_gateway(procs, workdir, layout.gateway, upstream.port)
        except h.BenchError as exc:
            print(f"gateway unavailable: {exc}", file=sys.stderr)
            return 2
        idle = h.settled_rss_kb(gateway.pid)
        print(f"gateway pid {gateway.pid}: idle RSS {h.mb(idle):.0f} MB; soak {args.duration:g} s at "
              f"c={args.concurrency} with {h.size_label(args.size)} uploads", flush=True)
        url = f"http://127.0.0.1:{gateway.port}{h.TRANSCRIPTIONS}"
        h.reset_hwm(gateway.pid)
        started = time.monotonic()
        with h.RssSampler(gateway.pid, interval=0.02) as sampler:
            ok, other = asyncio.run(soak(url, "openai/whisper-1", args.size, args.concurrency, args.duration))
        wall = time.monotonic() - started
        peak = max(sampler.peak_kb, h.hwm_kb(gateway.pid))
        end_of_load = h.rss_kb(gateway.pid)
        time.sleep(args.idle)
        after = h.settled_rss_kb(gateway.pid)
        per_request = (peak - idle) / args.concurrency
        lines = [
            f"requests: {ok} OK in {wall:.1f} s ({ok / wall:.0f} req/s)" + (f", other: {other}" if other else ""),
            f"idle RSS:       {h.mb(idle):6.0f} MB",
            f"peak RSS:       {h.mb(peak):6.0f} MB  (+{h.mb(peak - idle):.0f} MB, "
            f"{per_request / 1024:.2f} MB per in-flight request at c={args.concurrency})",
            f"end of load:    {h.mb(end_of_load):6.0f} MB",
            f"after {args.idle:g} s idle: {h.mb(after):5.0f} MB  ({after / idle:.2f} x idle)",
        ]
        print("\n".join(lines), flush=True)
        if other:
            code = 1
    except KeyboardInterrupt:
        code = 130
    except h.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 3
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
