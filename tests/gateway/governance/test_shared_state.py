"""State several gateway instances share: Redis counters (exact under concurrency) and a PostgreSQL
config store (a change made through one instance is seen by the other within a second)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bifrost_stt.gateway.governance.counters import Limit, RedisCounters, SQLiteCounters
from bifrost_stt.gateway.governance.service import Governance
from bifrost_stt.kernel.governance import ConfigStoreConfig, GovernanceConfig, VirtualKeyConfig
from bifrost_stt.kernel.settings import Secret
from tests.audio import wav_bytes
from tests.fakes.openai import OPENAI_KEY

ROOT = Path(__file__).resolve().parents[3]
VK = "sk-bf-shared-limit-key-01"


def _config_file(tmp: Path, fake: Any, redis_url: str, prefix: str, limit: int) -> Path:
    addr = redis_url.removeprefix("redis://").split("/", 1)[0]
    doc = {
        "client": {"enforce_auth_on_inference": True},
        "providers": {"openai": {"keys": [{"name": "o", "value": OPENAI_KEY, "weight": 1}],
                                 "network_config": {"base_url": fake.base_url}}},
        "config_store": {"enabled": True, "type": "sqlite", "config": {"path": str(tmp / "gov.sqlite3")}},
        "governance": {
            "rate_limits": [{"id": "rl", "request_max_limit": limit, "request_reset_duration": "1h"}],
            "virtual_keys": [{"id": "vk", "name": "shared", "value": VK, "rate_limit_id": "rl"}],
            "store": {"type": "redis", "config": {"addr": addr, "key_prefix": prefix}},
        },
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def two_gateways(tmp_path: Path, fake_openai: Any, redis_url: str, redis_prefix: str) -> Iterator[list[str]]:
    config = _config_file(tmp_path, fake_openai, redis_url, redis_prefix, limit=7)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.gateway.governance.gateway_process", str(config)],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        urls = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
        assert all(u.startswith("http://127.0.0.1:") for u in urls), urls
        yield urls
    finally:
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_two_gateways_on_one_redis_admit_exactly_the_limit(two_gateways: list[str], fake_openai: Any) -> None:
    audio = wav_bytes(0.1)

    def fire(i: int) -> int:
        with httpx.Client(base_url=two_gateways[i % 2], timeout=20) as client:
            r = client.post("/v1/audio/transcriptions", headers={"x-bf-vk": VK},
                            data={"model": "openai/whisper-1"}, files={"file": ("a.wav", audio, "audio/wav")})
            return r.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(fire, range(30)))
    assert sorted(statuses) == [200] * 7 + [429] * 23
    assert len(fake_openai.requests) == 7


async def test_redis_admission_is_atomic_under_concurrency(redis_url: str, redis_prefix: str) -> None:
    import redis

    addr = redis_url.removeprefix("redis://").split("/", 1)[0]
    counters = RedisCounters.connect(addr, username=None, password=None, db=0, prefix=redis_prefix, timeout=2)
    try:
        end = time.time() + 60
        limits = [Limit("r:x:0", 10, 1.0, end), Limit("b:x:0", 1.0, 0.0, end)]
        results = await asyncio.gather(*(counters.admit(limits) for _ in range(50)))
        assert sum(r is None for r in results) == 10
        await counters.add([("b:x:0", 0.6, end), ("b:x:0", 0.6, end)])
        refusal = await counters.admit([Limit("b:x:0", 1.0, 0.0, end)])
        assert refusal is not None and refusal.used == pytest.approx(1.2)
        assert await counters.read(["r:x:0", "b:x:0", "missing"]) == [10.0, pytest.approx(1.2), 0.0]
        ttl = redis.Redis.from_url(redis_url).pttl(redis_prefix + "r:x:0")  # redis-py checks our client
        assert 0 < ttl <= 62_000
    finally:
        await counters.aclose()


async def test_sqlite_counters_refuse_what_the_limit_does_not_allow(tmp_path: Path) -> None:
    a, b = SQLiteCounters(tmp_path / "c.sqlite3"), SQLiteCounters(tmp_path / "c.sqlite3")  # two processes' view
    end = time.time() + 60
    limit = [Limit("r:y:0", 3, 1.0, end)]
    outcomes = [await (a if i % 2 else b).admit(limit) for i in range(5)]
    assert [o is None for o in outcomes] == [True, True, True, False, False]
    expired = [Limit("r:z:0", 1, 1.0, time.time() - 1)]
    assert await a.admit(expired) is None and await a.admit(expired) is None  # an old window counts nothing
    await a.aclose()
    await b.aclose()


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """The session database, with a schema of this test's own (the session's public schema stays empty)."""
    import secrets as token

    import psycopg

    schema = f"gov_{token.token_hex(4)}"
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_postgres_config_store_changes_reach_another_instance_within_a_second(pg_schema_url: str) -> None:
    store = ConfigStoreConfig(type="postgres", url=Secret(pg_schema_url))
    first = Governance(GovernanceConfig(
        virtual_keys=(VirtualKeyConfig(id="vk-pg", name="pg", value=Secret("sk-bf-pg-1")),),
        config_store=store, sync_interval_seconds=0.2,
    ))
    second = Governance(GovernanceConfig(config_store=store, sync_interval_seconds=0.2))
    await first.start()
    await second.start()
    try:
        assert "sk-bf-pg-1" in second.snapshot.by_value
        assert first.store is not None
        vk = first.snapshot.keys["vk-pg"]
        from dataclasses import replace

        first.store.save_key(replace(vk, is_active=False), [None], [None], create=False)
        deadline = time.monotonic() + 1.0
        while second.snapshot.keys["vk-pg"].is_active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not second.snapshot.keys["vk-pg"].is_active
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_scripts_unknown_to_the_server_are_loaded(redis_url: str, redis_prefix: str) -> None:
    import hashlib

    from bifrost_stt.gateway.governance import counters as module

    addr = redis_url.removeprefix("redis://").split("/", 1)[0]
    counters = RedisCounters.connect(addr, username=None, password=None, db=0, prefix=redis_prefix, timeout=2)
    body = module._ADMIT + f"\n-- {redis_prefix}\n"  # a script this server has never seen
    counters._scripts["admit"] = (hashlib.sha1(body.encode()).hexdigest(), body)
    try:
        end = time.time() + 60
        assert await counters.admit([Limit("r:n:0", 1, 1.0, end)]) is None
        assert await counters.admit([Limit("r:n:0", 1, 1.0, end)]) is not None
    finally:
        await counters.aclose()


async def test_a_silent_redis_is_unavailable_within_the_timeout() -> None:
    from bifrost_stt.gateway.governance.counters import StoreUnavailable

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    counters = RedisCounters.connect(f"127.0.0.1:{port}", username=None, password=None, db=0, prefix="p:",
                                     timeout=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            await counters.admit([Limit("r:s:0", 1, 1.0, time.time() + 60)])
        assert time.monotonic() - started < 1.0
    finally:
        await counters.aclose()
        server.close()
