"""How far along a long piece of work is, for whoever is waiting on it (an async job's poll).

Work that knows its progress (long audio: pieces done of pieces total) calls ``report``; whoever runs the
work and wants to know binds a callback with ``reporting`` around it. Outside such a block ``report`` does
nothing, so the work never has to know who, if anyone, is watching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Reporter = Callable[[int, int], None]

_CURRENT: ContextVar[Reporter | None] = ContextVar("bifrost_stt_progress", default=None)


def report(done: int, total: int) -> None:
    """``done`` of ``total`` units are finished."""
    callback = _CURRENT.get()
    if callback is not None:
        callback(done, total)


@contextmanager
def reporting(callback: Reporter) -> Iterator[None]:
    token = _CURRENT.set(callback)
    try:
        yield
    finally:
        _CURRENT.reset(token)
