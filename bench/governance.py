"""CPU that governance adds to one request, at 100 KB: ``admit`` + ``settle`` measured in process.

    .venv/bin/python bench/governance.py [--requests 5000] [--redis redis://127.0.0.1:6379/0]

Runs the exact calls a transcription handler makes (``Governance.admit`` before the upstream call,
``Ticket.settle`` after it) on a 100 KB WAV upload and a canned result, and prints CPU microseconds per
request, user and kernel time apart (``getrusage``: other processes on the machine do not inflate it;
the kernel part is mostly the loopback socket to Redis or the SQLite file), for:

    off            governance not configured (what every request pays: the price lookup and WAV header)
    key, no limits a virtual key without budget or rate limit
    key + limits   a budget, a request limit and an audio-seconds limit, counters in SQLite (one host)
    redis          the same limits, counters in Redis (several instances); needs --redis

The figure excludes what governance does not add (multipart parsing, the upstream call). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bifrost_stt.gateway.governance.service import Governance  # noqa: E402
from bifrost_stt.kernel.canonical import BytesAudio, TranscriptionRequest, TranscriptionResult, Usage  # noqa: E402
from bifrost_stt.kernel.governance import (  # noqa: E402
    BudgetConfig,
    ConfigStoreConfig,
    CounterStoreConfig,
    GovernanceConfig,
    RateLimitConfig,
    VirtualKeyConfig,
)
from bifrost_stt.kernel.settings import Secret  # noqa: E402
from tests.audio import wav_of_size  # noqa: E402

KEY = "sk-bf-bench-0123456789"


def config(tmp: Path, *, limits: bool, redis: str | None = None, enabled: bool = True) -> GovernanceConfig:
    if not enabled:
        return GovernanceConfig()
    store = None
    if redis:
        addr = redis.removeprefix("redis://").split("/", 1)[0]
        store = CounterStoreConfig(addr=addr, key_prefix=f"bifrost-bench:{time.time_ns()}:")
    return GovernanceConfig(
        budgets=(BudgetConfig("b", 1e9, "1d"),) if limits else (),
        rate_limits=(RateLimitConfig("r", request_max_limit=10**9, request_reset_duration="1h",
                                     audio_seconds_max_limit=1e12, audio_seconds_reset_duration="1d"),)
        if limits else (),
        virtual_keys=(VirtualKeyConfig("k", "bench", Secret(KEY), budget_id="b" if limits else None,
                                       rate_limit_id="r" if limits else None),),
        config_store=ConfigStoreConfig(path=str(tmp / f"gov-{limits}-{bool(redis)}.sqlite3")),
        store=store,
    )


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def measure(cfg: GovernanceConfig, requests: int, with_key: bool) -> tuple[float, float]:
    gov = Governance(cfg)
    await gov.start()
    audio = BytesAudio(wav_of_size(100 * 1024), filename="a.wav", format="wav")
    request = TranscriptionRequest(provider="openai", model="whisper-1", audio=audio, response_format="text")
    result = TranscriptionResult(text="hello", usage=Usage(type="duration", seconds=3))
    headers = {"x-bf-vk": KEY} if with_key else {}
    try:
        for _ in range(200):  # warm-up: caches, the SQLite page cache, the Redis connection
            _, ticket = await gov.admit(headers, request)
            await ticket.settle(result, "openai", ("whisper-1",))
        user, system = _cpu()
        for _ in range(requests):
            _, ticket = await gov.admit(headers, request)
            await ticket.settle(result, "openai", ("whisper-1",))
        user2, system2 = _cpu()
        return (user2 - user) / requests * 1e6, (system2 - system) / requests * 1e6
    finally:
        await gov.aclose()
        if cfg.store is not None:  # leave nothing behind in a shared Redis
            import redis

            client = redis.Redis.from_url(f"redis://{cfg.store.addr}/{cfg.store.db}")
            for key in client.scan_iter(match=cfg.store.key_prefix + "*", count=500):
                client.delete(key)
            client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--redis", default=None, help="redis://host:port/db for the shared-counter row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        rows = [
            ("off", config(tmp, limits=False, enabled=False), False),
            ("key, no limits", config(tmp, limits=False), True),
            ("key + limits (SQLite)", config(tmp, limits=True), True),
        ]
        if args.redis:
            rows.append(("key + limits (Redis)", config(tmp, limits=True, redis=args.redis), True))
        print(f"| governance ({args.requests} requests, 100 KB WAV) | user CPU µs/req | kernel CPU µs/req |")
        print("| --- | --- | --- |")
        for name, cfg, with_key in rows:
            user, system = await measure(cfg, args.requests, with_key)
            print(f"| {name} | {user:.1f} | {system:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
