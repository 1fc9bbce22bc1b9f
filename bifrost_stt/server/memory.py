"""Give memory back to the OS once the gateway goes idle (glibc's ``malloc_trim``).

Measured with ``bench/soak.py`` (60 s at c=256 with 1 MB uploads): RSS stayed at 4-5x its idle figure after
the load. Not glibc arenas (``MALLOC_ARENA_MAX=1`` changed nothing) nor anything the gateway keeps: the
uploads under ``spool_threshold_kb`` are held in memory while in flight, and once freed they leave holes in
the main heap that glibc only returns from its top. ``malloc_trim(0)`` also releases the free pages in the
middle of every arena (``MADV_DONTNEED``).

``TrimWhenIdle`` is an ASGI middleware counting requests in flight; when the count falls to zero it schedules
one trim ``IDLE_DELAY`` seconds later, which runs only if the gateway is still idle (so never during
load). Cost per request: two integer updates and, when it goes idle, a timer; a trim takes a few
milliseconds after heavy load and nothing when there is nothing to return. Not glibc (musl, macOS): a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("bifrost_stt.memory")
IDLE_DELAY = 1.0  # seconds without a request in flight before trimming


def _load_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_trim()


def trim() -> bool:
    """Return free heap memory to the OS now; True when glibc released some."""
    if _malloc_trim is None:
        return False
    started = time.perf_counter()
    released = bool(_malloc_trim(0))
    log.debug("malloc_trim: %s in %.1f ms", "released memory" if released else "nothing to release",
              (time.perf_counter() - started) * 1000)
    return released


class TrimWhenIdle:
    """Count HTTP requests in flight; trim once the gateway has been idle for ``IDLE_DELAY`` seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self._pending: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _malloc_trim is None:
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._pending is None:
                self._pending = asyncio.get_running_loop().call_later(IDLE_DELAY, self._idle)

    def _idle(self) -> None:
        self._pending = None
        if self.in_flight == 0:
            trim()
