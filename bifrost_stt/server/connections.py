"""Client connections that cannot hold the server: header and body timeouts, a minimum upload rate, and a
cap on open connections (uvicorn has none of these for a request still arriving).

``GuardedHttpTools`` is uvicorn's httptools protocol plus one shared ``Guard`` per event loop:

    headers     from a connection's first byte (or its opening) until the request's headers are complete:
                at most ``header_timeout_in_seconds``; then the connection is closed
    body        no pause longer than ``body_timeout_in_seconds`` between body bytes, and once the body has
                been arriving that long, an average of at least ``min_upload_rate_kb`` KB/s
    idle        between requests: uvicorn's keep-alive timeout (5 s)
    cap         ``max_connections`` open at once (0: half the open-file limit, which ``serve`` raises to
                its hard maximum). A new connection over the cap first evicts the oldest one still sending
                its headers (a slow or idle client never blocks /health); when none is, the new one gets a
                503 in the Bifrost envelope with Retry-After, and is closed.

Every shed or timed-out connection is counted (``kernel.counters``: ``connections_shed``,
``connections_timed_out``) and logged, at most one line per reason every 5 s with the count since the last.
Cost: one timer per loop, firing once a second while connections are open, that looks at each connection
still receiving a request; a few attribute writes per parser callback.

Settings travel to worker processes in the ``BIFROST_STT_CONNECTION_LIMITS`` environment variable (uvicorn
imports the protocol class by name in each worker), set by ``configure``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bifrost_stt.kernel import counters
from bifrost_stt.kernel.errors import Overloaded, envelope
from bifrost_stt.kernel.settings import ServerConfig

log = logging.getLogger("bifrost_stt.connections")
ENV = "BIFROST_STT_CONNECTION_LIMITS"
TICK = 1.0  # seconds between sweeps
LOG_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    min_rate: int = 8 * 1024  # bytes per second
    max_connections: int = 0  # 0: auto

    @classmethod
    def of(cls, server: ServerConfig) -> Limits:
        return cls(server.header_timeout_in_seconds, server.body_timeout_in_seconds,
                   server.min_upload_rate_kb * 1024, server.max_connections)

    def cap(self) -> int:
        if self.max_connections > 0:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(64, soft // 2)  # the other half: upstream connections, spool files, the job store


_limits: Limits | None = None


def configure(limits: Limits) -> None:
    """Use ``limits`` in this process and in worker processes started after this call."""
    global _limits
    _limits = limits
    os.environ[ENV] = json.dumps(asdict(limits))


def current() -> Limits:
    global _limits
    if _limits is None:
        raw = os.environ.get(ENV)
        _limits = Limits(**json.loads(raw)) if raw else Limits()
    return _limits


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (each connection is a descriptor); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


_REFUSAL = Overloaded(
    "the gateway has too many open connections (server.max_connections); retry later",
    code="too_many_connections",
)
_BODY = orjson.dumps(envelope(_REFUSAL, request_type=None))
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)

HEADERS, BODY = "headers", "body"


class Guard:
    """The connections of one event loop: their phases, the sweep, the cap, the log lines."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: Limits) -> None:
        self.loop = loop
        self.limits = limits
        self.cap = limits.cap()
        self.open: dict[GuardedHttpTools, None] = {}  # insertion order = age
        self._timer: asyncio.TimerHandle | None = None
        self._pending: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def arrive(self, conn: GuardedHttpTools) -> bool:
        """Register ``conn``; False when it must be refused (over the cap, nothing to evict)."""
        if len(self.open) >= self.cap:
            victim = next((c for c in self.open if c.phase == HEADERS), None)
            if victim is None:
                self.note("connections_shed", "refused a connection: %d open (server.max_connections %d)",
                          len(self.open), self.cap)
                return False
            self.note("connections_shed", "closed the oldest connection still sending its request: %d open "
                      "(server.max_connections %d)", len(self.open), self.cap)
            victim.drop()
        self.open[conn] = None
        if self._timer is None:
            self._timer = self.loop.call_later(TICK, self.sweep)
        return True

    def leave(self, conn: GuardedHttpTools) -> None:
        self.open.pop(conn, None)

    def sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        limits = self.limits
        for conn in list(self.open):
            if conn.phase == HEADERS and now - conn.since > limits.header_timeout:
                self.note("connections_timed_out", "closed a connection whose request headers took over %gs "
                          "(server.header_timeout_in_seconds)", limits.header_timeout)
                conn.drop()
            elif conn.phase == BODY:
                if conn.flow is not None and conn.flow.read_paused:  # we stopped reading, not the client
                    conn.since += TICK
                    conn.last_data = now
                    continue
                took = now - conn.since
                if now - conn.last_data > limits.body_timeout:
                    self.note("connections_timed_out", "closed a connection whose request body paused over "
                              "%gs (server.body_timeout_in_seconds)", limits.body_timeout)
                    conn.drop()
                elif took > limits.body_timeout and conn.body_bytes < limits.min_rate * took:
                    self.note("connections_timed_out", "closed a connection uploading under %d KB/s "
                              "(server.min_upload_rate_kb)", limits.min_rate // 1024)
                    conn.drop()
        if self.open:
            self._timer = self.loop.call_later(TICK, self.sweep)

    def note(self, counter: str, message: str, *args: Any) -> None:
        """Count one event; log it now, or fold it into the next line (one per reason every LOG_EVERY s)."""
        counters.count(counter)
        now = self.loop.time()
        self._pending[message] = self._pending.get(message, 0) + 1
        if now - self._logged.get(message, -LOG_EVERY) >= LOG_EVERY:
            times = self._pending.pop(message)
            self._logged[message] = now
            suffix = f" ({times} times since the last such line)" if times > 1 else ""
            log.warning(message + suffix, *args)


_guards: dict[asyncio.AbstractEventLoop, Guard] = {}


def guard_of(loop: asyncio.AbstractEventLoop) -> Guard:
    guard = _guards.get(loop)
    if guard is None:
        for stale in [other for other in _guards if other.is_closed()]:
            del _guards[stale]
        guard = _guards[loop] = Guard(loop, current())
    return guard


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol under a ``Guard`` (see the module docstring)."""

    phase: str | None = None
    since = 0.0
    last_data = 0.0
    body_bytes = 0
    refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard = guard_of(self.loop)
        self.phase, self.since = HEADERS, self.loop.time()  # silence before the first byte counts too
        if not self.guard.arrive(self):
            self.refused = True
            self.phase = None
            transport.write(REFUSAL)
            # Let the client's request arrive (and be ignored) before closing, so the close does not reset
            # the connection and lose the answer on its way.
            self.loop.call_later(0.5, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.leave(self)
        self.phase = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.last_data = self.loop.time()
        super().data_received(data)

    def drop(self) -> None:
        self.phase = None
        self.guard.leave(self)
        self.transport.close()

    # httptools callbacks: what phase the current request is in
    def on_message_begin(self) -> None:
        self.phase, self.since = HEADERS, self.loop.time()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        now = self.loop.time()
        self.phase, self.since, self.last_data, self.body_bytes = BODY, now, now, 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.phase = None
        super().on_message_complete()
