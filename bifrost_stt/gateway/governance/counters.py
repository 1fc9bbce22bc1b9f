"""Budget and rate-limit counters, checked and bumped atomically.

One gateway (any number of worker processes on one host): an SQLite file (``SQLiteCounters``). Several
gateways: Redis (``RedisCounters``), where one Lua script checks every limit of a request and bumps them
only when all pass, so two instances enforcing one limit never admit more than it allows.

A counter's key names its limit and its window's start (``durations.window``): a new window is a new key,
and the old one expires on its own (Redis TTL; SQLite rows are swept now and then).

``admit(limits)`` is all-or-nothing: a limit with ``amount > 0`` (one more request) refuses when
``used + amount > max``; a limit with ``amount == 0`` (a budget, an audio-seconds quota: what a request
will cost is known only afterwards) refuses when ``used >= max``. ``add`` charges afterwards. So a budget
is overspent by at most what the requests already in flight cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bifrost_stt.gateway.governance.resp import RespClient, RespError

log = logging.getLogger("bifrost_stt.governance")


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    max: float
    amount: float  # added at admission (1 for a request limit), 0 for limits charged afterwards
    expires: float  # epoch seconds: the window's end


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # which limit refused
    used: float


class StoreUnavailable(Exception):
    """The counter store cannot be reached (Redis down, SQLite locked past its timeout)."""


class Counters(Protocol):
    async def admit(self, limits: Sequence[Limit]) -> Refusal | None: ...

    async def add(self, charges: Sequence[tuple[str, float, float]]) -> None:
        """``(key, amount, expires)`` each."""
        ...

    async def read(self, keys: Sequence[str]) -> list[float]: ...

    async def aclose(self) -> None: ...


def _refuses(limit: Limit, used: float) -> bool:
    return used + limit.amount > limit.max if limit.amount > 0 else used >= limit.max


# ------------------------------------------------------------------------------------------ SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gov_counters (
    key     TEXT PRIMARY KEY,
    value   REAL NOT NULL,
    expires REAL NOT NULL
)
"""
_UPSERT = (
    "INSERT INTO gov_counters (key, value, expires) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = gov_counters.value + excluded.value, expires = excluded.expires"
)


class SQLiteCounters:
    """Counters in one SQLite file (WAL), shared by the worker processes of one host.

    stdlib ``sqlite3`` on the event loop, not SQLAlchemy in a thread: a request's check-and-bump is one
    short ``BEGIN IMMEDIATE`` transaction (tens of microseconds), cheaper than a thread hop, and the
    request path's CPU budget is 100 µs. ``busy_timeout`` bounds the wait for another process's write.
    """

    SWEEP_EVERY = 1000

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 2000) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(_SCHEMA)
        self._ops = 0

    def _rows(self, keys: Sequence[str], now: float) -> dict[str, float]:
        marks = ",".join("?" * len(keys))
        rows = self._db.execute(
            f"SELECT key, value FROM gov_counters WHERE key IN ({marks}) AND expires > ?", (*keys, now)
        ).fetchall()
        return {str(k): float(v) for k, v in rows}

    async def admit(self, limits: Sequence[Limit]) -> Refusal | None:
        if not limits:
            return None
        now = time.time()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                used = self._rows([limit.key for limit in limits], now)
                for index, limit in enumerate(limits):
                    if _refuses(limit, used.get(limit.key, 0.0)):
                        self._db.execute("ROLLBACK")
                        return Refusal(index, used.get(limit.key, 0.0))
                bumps = [(limit.key, limit.amount, limit.expires) for limit in limits if limit.amount > 0]
                if bumps:
                    self._db.executemany(_UPSERT, bumps)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._sweep(now)
        return None

    async def add(self, charges: Sequence[tuple[str, float, float]]) -> None:
        charges = [c for c in charges if c[1]]
        if not charges:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_UPSERT, charges)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreUnavailable(str(exc)) from exc

    async def read(self, keys: Sequence[str]) -> list[float]:
        if not keys:
            return []
        used = self._rows(keys, time.time())
        return [used.get(k, 0.0) for k in keys]

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % self.SWEEP_EVERY == 0:
            try:
                self._db.execute("DELETE FROM gov_counters WHERE expires <= ?", (now,))
            except sqlite3.Error:
                log.debug("sweeping expired counters failed; the next sweep retries", exc_info=True)

    async def aclose(self) -> None:
        self._db.close()


# ------------------------------------------------------------------------------------------- Redis

# KEYS: the counters. ARGV: per key (max, amount, expires-at in ms). Returns {0} or {index, used}.
_ADMIT = """
local n = #KEYS
local used = {}
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  local max = tonumber(ARGV[i * 3 - 2])
  local amount = tonumber(ARGV[i * 3 - 1])
  used[i] = cur
  if (amount > 0 and cur + amount > max) or (amount <= 0 and cur >= max) then
    return {i, tostring(cur)}
  end
end
for i = 1, n do
  local amount = tonumber(ARGV[i * 3 - 1])
  if amount > 0 then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[i * 3 - 1])
    redis.call('PEXPIREAT', KEYS[i], ARGV[i * 3])
  end
end
return {0, '0'}
"""
# KEYS: the counters. ARGV: per key (amount, expires-at in ms).
_ADD = """
for i = 1, #KEYS do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[i * 2 - 1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[i * 2])
end
return 1
"""


class RedisCounters:
    """Counters in Redis, shared by every gateway instance pointing at it. Every key starts with ``prefix``.

    The scripts run by SHA (EVALSHA); a server that does not know one yet (restarted, flushed) is sent it
    with SCRIPT LOAD first.
    """

    def __init__(self, client: RespClient, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._scripts = {name: (hashlib.sha1(body.encode()).hexdigest(), body)
                         for name, body in (("admit", _ADMIT), ("add", _ADD))}

    @classmethod
    def connect(cls, addr: str, *, username: str | None, password: str | None, db: int, prefix: str,
                timeout: float) -> RedisCounters:
        host, _, port = addr.rpartition(":")
        client = RespClient(host or addr, int(port) if host and port else 6379, username=username,
                            password=password, db=db, timeout=timeout)
        return cls(client, prefix)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        sha, body = self._scripts[name]
        try:
            try:
                return await self._redis.call("EVALSHA", sha, len(keys), *keys, *args)
            except RespError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                await self._redis.call("SCRIPT", "LOAD", body)  # EVAL alone may not cache it (Redis 7.4+)
                return await self._redis.call("EVALSHA", sha, len(keys), *keys, *args)
        except (RespError, OSError, ConnectionError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def admit(self, limits: Sequence[Limit]) -> Refusal | None:
        if not limits:
            return None
        args: list[Any] = []
        for limit in limits:
            args += [repr(float(limit.max)), repr(float(limit.amount)), int(limit.expires * 1000) + 1000]
        index, used = await self._run("admit", [self._prefix + limit.key for limit in limits], args)
        return None if int(index) == 0 else Refusal(int(index) - 1, float(used))

    async def add(self, charges: Sequence[tuple[str, float, float]]) -> None:
        charges = [c for c in charges if c[1]]
        if not charges:
            return
        args: list[Any] = []
        for _, amount, expires in charges:
            args += [repr(float(amount)), int(expires * 1000) + 1000]
        await self._run("add", [self._prefix + key for key, _, _ in charges], args)

    async def read(self, keys: Sequence[str]) -> list[float]:
        if not keys:
            return []
        try:
            values = await self._redis.call("MGET", *[self._prefix + k for k in keys])
        except (RespError, OSError, ConnectionError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [float(v) if v is not None else 0.0 for v in values]

    async def aclose(self) -> None:
        await self._redis.aclose()
