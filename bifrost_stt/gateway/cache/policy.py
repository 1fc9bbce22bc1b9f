"""The lookup/store policy: when a request uses the cache, what a hit answers, what a miss stores, and how a
broken store is kept from ever failing a request.

    ticket = await cache.ticket(request, headers, digest)   None: this request does not use the cache
    hit = await ticket.lookup()                             None: a miss (or the store is broken)
    debug = await ticket.store(result, origin)              after a successful answer; cache_debug or None

A store failure (Redis down, a locked or corrupt file) is logged once, counted, and makes every cache call a
miss for ``RETRY_AFTER`` seconds, so a dead store costs a request nothing after the first failure; then the
store is tried again, and its recovery is logged.

Governance: a hit costs nothing (``record.cost = 0``) and must not consume budget; it is still a request
for rate limits, which are checked before the handler gets here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bifrost_stt.gateway.cache import codec, key, stats
from bifrost_stt.gateway.cache.codec import Origin
from bifrost_stt.gateway.cache.store import CacheStore, Entry, SQLiteStore
from bifrost_stt.kernel import record
from bifrost_stt.kernel.canonical import StreamDone, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.errors import Overloaded
from bifrost_stt.kernel.settings import CacheConfig

log = logging.getLogger("bifrost_stt.cache")
T = TypeVar("T")

RETRY_AFTER = 5.0  # seconds a failed store is left alone before it is tried again
STREAMED_FORMATS = frozenset({"json", "text"})  # what a stream's text alone answers in full


class Answered(Protocol):
    """Who answered (the router's ``Served``; the cache room does not import routing)."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def deployment(self) -> str: ...

    @property
    def fallback_index(self) -> int: ...

    @property
    def reported(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Hit:
    result: TranscriptionResult
    origin: Origin  # the target that answered the request that stored the entry
    debug: dict[str, Any]  # extra_fields.cache_debug


def make_store(config: CacheConfig) -> CacheStore:
    if config.redis is not None:
        # imported on use: redis-py costs ~10 MB resident, paid only by gateways that share a cache through it
        from bifrost_stt.gateway.cache.redis_store import RedisStore

        return RedisStore(config.redis, config.namespace)
    return SQLiteStore(config.store_path, config.max_size_mb * 1024 * 1024)


class Cache:
    def __init__(self, config: CacheConfig, store: CacheStore | None = None) -> None:
        self.config = config
        self.store: CacheStore | None = (store or make_store(config)) if config.enabled else None
        self._down_until = 0.0
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def hashes_every_upload(self) -> bool:
        """True when a default cache key engages the cache for every request (else only with the header)."""
        return self.enabled and bool(self.config.default_cache_key)

    async def start(self) -> None:
        if self.store is not None:
            await self._guard("start", self.store.start, None)
            if not self._failing:
                log.info("transcription cache: %s store", self.store.name)

    async def aclose(self) -> None:
        if self.store is not None:
            try:
                await self.store.aclose()
            except Exception:  # shutting down: nothing to tell a client
                log.debug("closing the cache store failed", exc_info=True)

    async def ticket(
        self, request: TranscriptionRequest, headers: Mapping[str, str], digest: bytes | None
    ) -> Ticket | None:
        """This request's ticket, or None when it does not use the cache. Bad cache headers are a 400."""
        if self.store is None:
            return None
        wanted = key.directive(headers, self.config)
        if wanted is None:
            return None
        if digest is None:  # not hashed while spooled (a request built elsewhere): read it once more
            digest = await key.audio_digest(request.audio.chunks())
        entry_key = key.entry_key(request, wanted.partition, digest, self.config)
        return Ticket(self, request, wanted, entry_key)

    # -- guarded store calls ---------------------------------------------------------------------------

    async def _guard(self, operation: str, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``call()``'s value, or ``fallback`` when the store fails (logged once, counted, then left alone)."""
        if time.monotonic() < self._down_until:
            stats.store_failed(operation)  # every request the broken store turned into a miss
            return fallback
        try:
            value = await call()
        except Exception as exc:
            stats.store_failed(operation)
            self._down_until = time.monotonic() + RETRY_AFTER
            if not self._failing:
                self._failing = True
                store = self.store.name if self.store else "cache"
                log.warning("the %s cache store failed (%s: %s); requests are served as cache misses until "
                            "it answers again", store, type(exc).__name__, exc)
            return fallback
        if self._failing:
            self._failing = False
            log.info("the cache store answers again")
        return value

    async def _get(self, entry_key: str) -> Entry | None:
        assert self.store is not None
        store = self.store
        return await self._guard("get", lambda: store.get(entry_key), None)

    async def _put(self, entry: Entry) -> bool:
        assert self.store is not None
        store = self.store
        return await self._guard("put", lambda: _done(store.put(entry)), False)

    # -- the clear operations (admin) ------------------------------------------------------------------

    async def clear_id(self, cache_id: str) -> int:
        return await self._clear(lambda store: store.delete_id(cache_id))

    async def clear_partition(self, partition: str) -> int:
        return await self._clear(lambda store: store.delete_partition(partition))

    async def _clear(self, call: Callable[[CacheStore], Awaitable[int]]) -> int:
        if self.store is None:
            return 0
        try:
            return await call(self.store)
        except Exception as exc:
            stats.store_failed("delete")
            log.warning("clearing the cache failed (%s: %s)", type(exc).__name__, exc)
            raise Overloaded("the cache store is unavailable; retry later", code="cache_unavailable") from None


async def _done(call: Awaitable[None]) -> bool:
    await call
    return True


class Ticket:
    """One request's use of the cache."""

    def __init__(self, cache: Cache, request: TranscriptionRequest, wanted: key.Directive, entry_key: str) -> None:
        self._cache = cache
        self.request = request
        self.directive = wanted
        self.key = entry_key

    async def lookup(self) -> Hit | None:
        entry = await self._cache._get(self.key)
        if entry is None:
            return None
        try:
            result, origin = codec.decode(entry.payload)
        except ValueError as exc:
            log.warning("ignoring an unreadable cache entry (%s)", exc)
            return None
        stats.hit("direct")
        request = self.request
        debug = {
            "cache_hit": True,
            "cache_id": entry.cache_id,
            "hit_type": "direct",
            "requested_provider": request.provider,
            "requested_model": request.model,
            "provider_used": origin.provider,
            "model_used": origin.model,
        }
        current = record.current()
        if current is not None:
            current.cache_debug = debug
            current.cost = 0.0  # served from the cache: no provider was paid
        return Hit(result, origin, debug)

    async def store(self, result: TranscriptionResult, served: Answered) -> dict[str, Any] | None:
        """Store a successful answer (unless x-bf-cache-no-store); the miss's cache_debug once stored."""
        if not self.directive.store:
            return None
        # The id of the request that stores it (read now: an async job's record takes the job's id once
        # the job exists), which DELETE /api/cache/clear/{requestId} names.
        current = record.current()
        cache_id = current.id if current is not None else str(uuid.uuid4())
        entry = Entry(
            key=self.key,
            cache_id=cache_id,
            partition=self.directive.partition,
            payload=codec.encode(result, Origin(served.provider, served.model, served.deployment,
                                                served.fallback_index, served.reported)),
            expires_at=time.time() + self.directive.ttl,
        )
        if not await self._cache._put(entry):
            return None
        debug: dict[str, Any] = {"cache_hit": False, "cache_id": cache_id}
        if current is not None:
            current.cache_debug = debug
        return debug

    async def store_done(self, done: StreamDone, served: Answered) -> dict[str, Any] | None:
        """A finished stream's answer: stored only where its text alone is the whole answer (json, text)."""
        if self.request.response_format not in STREAMED_FORMATS:
            return None
        return await self.store(TranscriptionResult(text=done.text, usage=done.usage, logprobs=done.logprobs), served)
