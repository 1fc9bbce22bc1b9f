"""A bounded Python load generator: the fallback when ``wrk`` is not installed.

``concurrency`` aiohttp workers POST the same body file in a loop for ``duration`` seconds and the
summary is printed as one ``BENCH_JSON {...}`` line with the same keys as the wrk script's ``done()``.

It is much slower than wrk (a Python client saturates its own core well below the gateway's target
at 100 KB c=16), so req/s measured with it are a lower bound; latencies are exact percentiles
(no coordinated-omission correction, unlike wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


async def run(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float,
              timeout: float) -> dict[str, float | int]:
    """Hammer ``url`` until the deadline; every request is bounded by ``timeout`` seconds."""
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    received = 0
    start = time.perf_counter()
    deadline = start + duration
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal received
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    received += len(payload)
                    if resp.status > 399:
                        errors["status"] += 1
            except asyncio.TimeoutError:
                errors["timeout"] += 1
                continue
            except aiohttp.ClientConnectionError:
                errors["connect"] += 1
                continue
            except aiohttp.ClientError:
                errors["read"] += 1
                continue
            latencies.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    us = [v * 1e6 for v in latencies]
    return {
        "requests": len(latencies) + errors["status"],
        "duration_us": int(elapsed * 1e6),
        "bytes": received,
        **errors,
        "p50_us": int(percentile(us, 50)),
        "p90_us": int(percentile(us, 90)),
        "p99_us": int(percentile(us, 99)),
        "mean_us": sum(us) / len(us) if us else 0.0,
        "max_us": int(us[-1]) if us else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--content-type", required=True)
    parser.add_argument("--authorization", default="Bearer sk-bench")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    headers = {"Content-Type": args.content_type, "Authorization": args.authorization}
    body = args.body_file.read_bytes()
    runner = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    summary = runner(run(args.url, body, headers, args.concurrency, args.duration, args.timeout))
    print("BENCH_JSON " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
