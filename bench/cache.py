"""What the exact cache costs: a hit's latency per store, and the audio digest's CPU on a miss.

    .venv/bin/python bench/cache.py            # about 40 s; the report goes to bench/results/cache.md
    .venv/bin/python bench/cache.py --hits 300 --cores 0,1

1. Hit latency. For each store (``memory``: a dict in the gateway process, the in-memory baseline;
   ``embedded``: the SQLite file; ``redis``: when Redis answers on 127.0.0.1:6379, under a key prefix of
   this run's own, removed afterwards) and each size (100 KB, 5 MB), one gateway process is started
   (``bench/cache.py --serve``: the real app, uvicorn with the CLI's settings, the store swapped in),
   one request stores the answer, then ``--hits`` identical requests (another filename each) are sent one
   at a time on a kept-alive connection. The fake upstream's request counter (``GET /stats``) is read
   before and after: a hit that reached it would show there, and the bench fails.
2. The digest's CPU. XXH3-128 (what the cache uses), SHA-256 and BLAKE2b over a 5 MB upload in 64 KiB
   pieces (as the multipart reader sees it), best of 30, against the gateway's own CPU per 5 MB miss
   (its process CPU time over ``--misses`` requests, each under a new cache key, stored in the embedded
   store).

Nothing here asserts a timing; the figures are printed and written as Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import _harness as h  # noqa: E402

SIZES = {"100 KB": 100_000, "5 MB": 5_000_000}
REDIS = ("127.0.0.1", 6379)


# ------------------------------------------------------------------------------------------ the server


def serve(config_path: str, port: int, store: str, workdir: str, namespace: str) -> None:
    """The gateway as `bifrost-stt serve` runs it, with the cache store chosen by the bench."""
    import importlib.util

    import uvicorn

    from bifrost_stt.gateway.cache.store import MemoryStore
    from bifrost_stt.gateway.config.load import load_config
    from bifrost_stt.kernel.settings import RedisStoreConfig
    from bifrost_stt.server.app import create_app

    config = load_config(config_path, os.environ)
    cache = replace(config.cache, store_path=str(Path(workdir) / "cache.sqlite3"), namespace=namespace,
                    redis=RedisStoreConfig(addr=f"{REDIS[0]}:{REDIS[1]}") if store == "redis" else None)
    app = create_app(replace(config, cache=cache))
    if store == "memory":
        app.gateway.cache.store = MemoryStore()
    uvicorn.run(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", proxy_headers=False,
                loop="uvloop" if importlib.util.find_spec("uvloop") else "auto",
                http="httptools" if importlib.util.find_spec("httptools") else "auto")


# ------------------------------------------------------------------------------------------ the client


def body(size: int, filename: str) -> bytes:
    head, tail = h.multipart_parts("openai/whisper-1", size)
    head = head.replace(b'filename="bench.wav"', f'filename="{filename}"'.encode())
    noise = (bytes(range(256)) * (size // 256 + 1))[: max(0, size - 44)]
    return head + noise + tail


def post(conn: http.client.HTTPConnection, payload: bytes, key: str) -> tuple[float, int, bytes]:
    headers = {"content-type": h.content_type(), "x-bf-cache-key": key, "content-length": str(len(payload))}
    started = time.perf_counter()
    conn.request("POST", h.TRANSCRIPTIONS, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return (time.perf_counter() - started) * 1000, response.status, data


def upstream_requests(upstream: h.Service) -> int:
    import json

    status, raw = h.http_get(f"http://127.0.0.1:{upstream.port}/stats")
    assert status == 200, raw
    return int(json.loads(raw)["requests"])


def redis_up() -> bool:
    try:
        import redis

        redis.Redis(host=REDIS[0], port=REDIS[1], socket_timeout=1).ping()
        return True
    except Exception:
        return False


def drop_redis_keys(namespace: str) -> None:
    import redis

    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    for key in client.scan_iter(match=namespace + "*", count=500):
        client.delete(key)
    client.close()


def start(procs: h.Processes, workdir: Path, cpu: int | None, upstream: h.Service, store: str,
          namespace: str) -> h.Service:
    command = (f"{sys.executable} {BENCH_DIR / 'cache.py'} --serve {{config}} {{port}} {store} {workdir} "
               f"{namespace}")
    service, _ = h.start_gateway(procs, workdir, cpu, upstream.port, command=command)
    return service


def hit_latencies(gateways: dict[str, h.Service], upstream: h.Service, size: int,
                  hits: int) -> tuple[dict[str, list[float]], dict[str, float], int]:
    """Store one answer in each gateway, then time ``hits`` hits on each, interleaved (one request per
    gateway in turn, so load from elsewhere on the machine falls on all of them alike).

    Returns the latencies (ms) and the gateway CPU per hit (ms) per store, and how many requests reached
    the upstream during the hits (must be 0)."""
    key = f"bench-{secrets.token_hex(4)}"
    conns = {name: http.client.HTTPConnection("127.0.0.1", g.port, timeout=60) for name, g in gateways.items()}
    try:
        for conn in conns.values():
            _, status, data = post(conn, body(size, "first.wav"), key)
            if status != 200 or b'"cache_hit":false' not in data:
                raise h.BenchError(f"the priming request was not stored: {status} {data[:300]!r}")
        payloads = [body(size, f"copy-{i}.wav") for i in range(min(hits, 8))]
        for conn in conns.values():  # warm-up
            for i in range(5):
                post(conn, payloads[i % len(payloads)], key)
        before = upstream_requests(upstream)
        cpu_before = {name: h.cpu_seconds(g.pid) for name, g in gateways.items()}
        latencies: dict[str, list[float]] = {name: [] for name in gateways}
        for i in range(hits):
            for name, conn in conns.items():
                ms, status, data = post(conn, payloads[i % len(payloads)], key)
                if status != 200 or b'"cache_hit":true' not in data:
                    raise h.BenchError(f"expected a hit from {name}: {status} {data[:300]!r}")
                latencies[name].append(ms)
        cpu = {name: (h.cpu_seconds(g.pid) - cpu_before[name]) * 1000 / hits for name, g in gateways.items()}
        return latencies, cpu, upstream_requests(upstream) - before
    finally:
        for conn in conns.values():
            conn.close()


def miss_cpu(gateway: h.Service, size: int, misses: int) -> float:
    """The gateway's CPU milliseconds per miss (each request under a new cache key, then stored)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    payload = body(size, "miss.wav")
    try:
        for i in range(3):
            post(conn, payload, f"warm-{secrets.token_hex(4)}")
        before = h.cpu_seconds(gateway.pid)
        for i in range(misses):
            _, status, data = post(conn, payload, f"miss-{secrets.token_hex(6)}")
            if status != 200 or b'"cache_hit":false' not in data:
                raise h.BenchError(f"expected a stored miss: {status} {data[:300]!r}")
        return (h.cpu_seconds(gateway.pid) - before) * 1000 / misses
    finally:
        conn.close()


def hash_cpu_ms(size: int) -> dict[str, float]:
    import xxhash

    data = bytes(range(256)) * (size // 256)
    pieces = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    out = {}
    for name, make in (("xxh3_128 (used)", xxhash.xxh3_128), ("sha256", hashlib.sha256),
                       ("blake2b", hashlib.blake2b)):
        best = float("inf")
        for _ in range(30):
            started = time.process_time()
            hasher = make()
            for piece in pieces:
                hasher.update(piece)
            hasher.digest()
            best = min(best, time.process_time() - started)
        out[name] = best * 1000
    return out


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=200, help="hits timed per store and size (5 MB: a fifth)")
    parser.add_argument("--misses", type=int, default=30, help="5 MB misses for the CPU per miss")
    parser.add_argument("--cores", default=None, help="UPSTREAM,GATEWAY cpus (default: no pinning)")
    parser.add_argument("--output", default=str(BENCH_DIR / "results" / "cache.md"))
    parser.add_argument("--serve", nargs=5, metavar=("CONFIG", "PORT", "STORE", "WORKDIR", "NAMESPACE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        config, port, store, workdir, namespace = args.serve
        serve(config, int(port), store, workdir, namespace)
        return 0

    cpus = [int(c) for c in args.cores.split(",")] if args.cores else [None, None]
    stores = ["memory", "embedded"] + (["redis"] if redis_up() else [])
    namespace = f"bifrost-bench:{secrets.token_hex(4)}:"
    lines = ["# Exact cache: what a hit and a miss cost", "", *h.machine_facts().lines(), ""]
    procs = h.Processes()
    h.install_signal_handlers()
    try:
        with tempfile.TemporaryDirectory(prefix="bifrost-cache-bench-") as tmp:
            workdir = Path(tmp)
            upstream = h.start_upstream(procs, workdir, cpus[0])
            lines += ["## Hit latency (one request at a time, kept-alive connection, the stores interleaved)", "",
                      "| store | size | hits | p50 | mean | p90 | p50 over in-memory | gateway CPU per hit "
                      "| CPU over in-memory | upstream requests during the hits |",
                      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            gateways = {store: start(procs, workdir, cpus[1], upstream, store, namespace) for store in stores}
            for label, size in SIZES.items():
                n = args.hits if size < 1_000_000 else max(20, args.hits // 5)
                latencies, cpu, reached = hit_latencies(gateways, upstream, size, n)
                if reached:
                    raise h.BenchError(f"{reached} hits reached the upstream ({label})")
                base = statistics.median(latencies["memory"])
                for store in stores:
                    p50 = statistics.median(latencies[store])
                    over = "—" if store == "memory" else f"{(p50 - base) * 1000:+.0f} µs"
                    cpu_over = "—" if store == "memory" else f"{(cpu[store] - cpu['memory']) * 1000:+.0f} µs"
                    p90 = statistics.quantiles(latencies[store], n=10)[-1]
                    lines.append(f"| {store} | {label} | {n} | {p50:.3f} ms | {statistics.fmean(latencies[store]):.3f} ms "
                                 f"| {p90:.3f} ms | {over} | {cpu[store]:.3f} ms | {cpu_over} | {reached} |")
                    print(lines[-1], flush=True)
            miss_ms = miss_cpu(gateways["embedded"], SIZES["5 MB"], args.misses)
            for gateway in gateways.values():
                procs.stop(gateway.proc)
            hashes = hash_cpu_ms(SIZES["5 MB"])
            lines += ["", f"## The audio digest on a 5 MB miss (gateway CPU per miss: {miss_ms:.2f} ms, "
                          f"{args.misses} misses, embedded store)", "",
                      "| hash | CPU for 5 MB | share of the miss's CPU |", "| --- | ---: | ---: |"]
            for name, ms in hashes.items():
                lines.append(f"| {name} | {ms:.3f} ms | {ms / miss_ms * 100:.1f}% |")
    except h.BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.close()
        if "redis" in stores:
            drop_redis_keys(namespace)
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
