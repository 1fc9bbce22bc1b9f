"""The shared store: entries in Redis (or Valkey), so every gateway instance serves what any one stored.

Keys, all under the namespace (``vector_store_namespace``; tests give each run its own):

    <ns>:e:<entry key>        the entry: a JSON header [cache_id, partition, expires_at] + newline + payload
    <ns>:id:<cache_id>        -> the entry key, for DELETE /api/cache/clear/{requestId}
    <ns>:p:<sha256(partition)> a set of the partition's entry keys, for DELETE /api/cache/clear-by-key/{key}

Every key carries the entry's TTL (the partition set the longest one), so Redis expires them itself;
size is bounded by the server's own ``maxmemory`` policy (``allkeys-lru`` is the natural choice). A member
left in a partition set after its entry expired is harmless (deleting it is a no-op).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry

from bifrost_stt.gateway.cache.store import Entry
from bifrost_stt.kernel.settings import RedisStoreConfig

# A broken store must cost a request little: a connect or a command slower than this counts as a failure.
CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 0.5


def _prefix(namespace: str) -> str:
    return namespace if namespace.endswith(":") else namespace + ":"


class RedisStore:
    name = "redis"

    def __init__(self, config: RedisStoreConfig, namespace: str) -> None:
        host, _, port = config.addr.rpartition(":")
        self._client: Any = aioredis.Redis(
            host=host,
            port=int(port),
            db=config.db,
            username=config.username,
            password=config.password.reveal() or None,
            ssl=config.use_tls,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # the policy decides what a failure means; no hidden retries
        )
        self._ns = _prefix(namespace)

    def _entry(self, key: str) -> str:
        return f"{self._ns}e:{key}"

    def _id(self, cache_id: str) -> str:
        return f"{self._ns}id:{cache_id}"

    def _partition(self, partition: str) -> str:
        return f"{self._ns}p:{hashlib.sha256(partition.encode('utf-8')).hexdigest()}"

    async def start(self) -> None:
        pass  # connects on first use: a Redis that is down at start-up is a miss, not a failed start

    async def get(self, key: str) -> Entry | None:
        raw = await self._client.get(self._entry(key))
        if raw is None:
            return None
        header, _, payload = bytes(raw).partition(b"\n")
        cache_id, partition, expires_at = orjson.loads(header)
        if expires_at <= time.time():
            return None
        return Entry(key, cache_id, partition, payload, expires_at)

    async def put(self, entry: Entry) -> None:
        ttl_ms = max(1, int((entry.expires_at - time.time()) * 1000))
        value = orjson.dumps([entry.cache_id, entry.partition, entry.expires_at]) + b"\n" + entry.payload
        partition = self._partition(entry.partition)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._entry(entry.key), value, px=ttl_ms)
            pipe.set(self._id(entry.cache_id), entry.key, px=ttl_ms)
            pipe.sadd(partition, entry.key)
            pipe.pexpire(partition, ttl_ms, gt=True)  # only ever lengthened (Redis >= 7)
            pipe.pexpire(partition, ttl_ms, nx=True)  # ... or set when it had none (a new set)
            await pipe.execute()

    async def delete_id(self, cache_id: str) -> int:
        key = await self._client.get(self._id(cache_id))
        if key is None:
            return 0
        entry_key = bytes(key).decode("ascii")
        removed = await self._client.delete(self._entry(entry_key), self._id(cache_id))
        return 1 if removed >= 2 else 0

    async def delete_partition(self, partition: str) -> int:
        set_key = self._partition(partition)
        members = [bytes(m).decode("ascii") for m in await self._client.smembers(set_key)]
        if not members:
            return 0
        raws = await self._client.mget([self._entry(k) for k in members])
        doomed = [set_key]
        live = 0
        for key, raw in zip(members, raws):
            if raw is None:
                continue
            cache_id, _, _ = orjson.loads(bytes(raw).partition(b"\n")[0])
            doomed += [self._entry(key), self._id(cache_id)]
            live += 1
        await self._client.delete(*doomed)
        return live

    async def aclose(self) -> None:
        await self._client.aclose()
