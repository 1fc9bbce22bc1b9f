"""A minimal pipelined Redis client: one connection, commands in, replies out in order. Just what the
counters need (EVALSHA/EVAL, MGET, AUTH, SELECT).

Why not redis-py's asyncio client: measured on this project's machine, one EVALSHA through it costs about
70 µs of CPU (connection-pool checkout, command packing, its response machinery), and a governed request
makes two (admit, charge): more than the 100 µs per request governance may add. This client spends about
12 µs per command (bench/governance.py). redis-py stays the project's Redis library for everything else,
and its tests check this client against the same server.

Replies are matched to commands by order (Redis answers in order on one connection); a command that
times out keeps its place in the queue, so later replies still meet their own commands.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


class RespError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


def _encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespClient:
    def __init__(self, host: str, port: int, *, username: str | None = None, password: str | None = None,
                 db: int = 0, timeout: float = 0.5) -> None:
        self._host, self._port, self._username, self._password, self._db = host, port, username, password, db
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reading: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> None:
        async with self._connecting:
            if self._writer is not None:
                return
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self._host, self._port), self._timeout)
            self._reader, self._writer = reader, writer
            self._reading = asyncio.create_task(self._read_loop(reader), name="bifrost-stt-redis-reader")
            try:
                if self._password:
                    await self._send(("AUTH", self._username, self._password) if self._username
                                     else ("AUTH", self._password))
                if self._db:
                    await self._send(("SELECT", self._db))
            except BaseException:
                self._drop(ConnectionError("redis handshake failed"))
                raise

    async def call(self, *args: Any) -> Any:
        if self._writer is None:
            await self._connect()
        return await self._send(args)

    async def _send(self, args: tuple[Any, ...]) -> Any:
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected to redis")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        writer.write(_encode(args))
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()
        timer = asyncio.get_running_loop().call_later(self._timeout, self._expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[Any]) -> None:
        """A command's time is up: the connection is suspect, every waiting command fails with it."""
        if not future.done():
            self._drop(ConnectionError(f"redis did not answer within {self._timeout} s"))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await self._read(reader)
                future = self._pending.popleft()
                if not future.done():
                    if isinstance(reply, RespError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke: every waiting command fails, the next reconnects
            self._drop(ConnectionError(f"redis connection lost: {exc!r}"))

    async def _read(self, reader: asyncio.StreamReader) -> Any:
        line = await reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RespError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            return (await reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [await self._read(reader) for _ in range(count)]
        raise ConnectionError(f"unexpected reply type {kind!r}")

    def _drop(self, error: Exception) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        reading, self._reading = self._reading, None
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a caller that timed out will not read it
        if reading is not None and reading is not asyncio.current_task():
            reading.cancel()
        if writer is not None:
            writer.close()

    async def aclose(self) -> None:
        reading = self._reading
        self._drop(ConnectionError("client closed"))
        if reading is not None:
            try:
                await reading
            except (asyncio.CancelledError, Exception):
                pass
