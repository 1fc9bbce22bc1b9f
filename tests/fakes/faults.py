"""Scriptable wire faults for the fake upstreams: everything that can go wrong between us and a vendor.

Queue one reply per upstream request (``server.enqueue(*replies, path=...)``); when the queue is empty the
fake answers normally (FakeOpenAI & co. speak the vendor's protocol). ``Reply`` already covers statuses,
headers, delays, HTML and drops before answering; ``Fault`` adds what needs the raw connection:

    status(429, retry_after="1")    an OpenAI-style JSON error with that status (and Retry-After)
    html(502)                       a load balancer's HTML error page
    garbage_json()                  200 with Content-Type application/json and a body that is not JSON
    empty()                         200 with an empty body
    slow(seconds)                   a normal JSON answer after ``seconds``
    truncated(keep=12)              full Content-Length promised, ``keep`` bytes sent, connection closed
    reset(after=None)               TCP reset (RST), before the answer or after ``after`` body bytes

``FaultyOpenAI`` / ``FaultyGroq`` / ``FaultyAzure`` are the vendor fakes that also understand ``Fault``.
``keys_seen(server)`` lists the key each recorded request carried, to assert rotation and direct keys.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.openai import TRANSCRIPT, FakeAzure, FakeGroq, FakeOpenAI
from tests.fakes.server import FakeServer, Recorded, Reply, error_reply


@dataclass(slots=True)
class Fault(Reply):
    """A Reply that breaks the connection. ``keep``: body bytes sent before breaking (None: none, not even
    the status line). ``rst``: reset the connection (SO_LINGER 0) instead of closing it cleanly."""

    keep: int | None = None
    rst: bool = False


def status(http: int, message: str | None = None, *, retry_after: str | None = None, **kw: Any) -> Reply:
    """``kw``: the error object's ``code`` / ``param``."""
    kind = "server_error" if http >= 500 else "rate_limit_error" if http == 429 else "invalid_request_error"
    reply = error_reply(http, message or f"upstream says {http}", kind, **kw)
    if retry_after is not None:
        reply.headers = {"retry-after": retry_after}
    return reply


def html(code: int = 502) -> Reply:
    return Reply(status=code, body="<html><body><h1>502 Bad Gateway</h1>nginx</body></html>", content_type="text/html")


def garbage_json(code: int = 200) -> Reply:
    return Reply(status=code, body='{"text": "The quick brown', content_type="application/json")


def empty(code: int = 200) -> Reply:
    return Reply(status=code, body=b"", content_type="application/json")


def slow(seconds: float, text: str = TRANSCRIPT) -> Reply:
    return Reply(body={"text": text}, delay=seconds)


def truncated(keep: int = 12, text: str = TRANSCRIPT) -> Fault:
    return Fault(body={"text": text}, keep=keep)


def reset(after: int | None = None) -> Fault:
    return Fault(body={"text": TRANSCRIPT}, keep=after, rst=True)


def keys_seen(server: FakeServer) -> list[str]:
    """The key each recorded request carried (``api-key`` header, else the Bearer token)."""
    seen = []
    for request in server.requests:
        key = request.headers.get("api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        seen.append(key)
    return seen


def _encode(reply: Reply) -> tuple[bytes, str]:
    body = reply.body
    if isinstance(body, (Mapping, list, tuple)):
        return json.dumps(body).encode(), reply.content_type or "application/json"
    if isinstance(body, str):
        return body.encode(), reply.content_type or "text/plain; charset=utf-8"
    return body or b"", reply.content_type or "application/octet-stream"


class FaultMixin:
    """Adds ``Fault`` replies to a FakeServer subclass (the raw-connection faults Reply cannot express)."""

    async def _send(self, request: web.Request, recorded: Recorded, reply: Reply) -> web.StreamResponse:
        if not isinstance(reply, Fault):
            return await super()._send(request, recorded, reply)  # type: ignore[misc, no-any-return]
        if reply.delay and not await FakeServer._pause(request, recorded, reply.delay):
            return web.Response(status=499)
        transport = request.transport
        assert transport is not None
        payload, content_type = _encode(reply)
        response = web.StreamResponse(status=reply.status, headers={"content-type": content_type, **reply.headers})
        if reply.keep is not None:
            response.content_length = len(payload)  # the promise the truncated body breaks
            await response.prepare(request)
            await response.write(payload[: reply.keep])
        if reply.rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.close()
        return response


class FaultyOpenAI(FaultMixin, FakeOpenAI):
    pass


class FaultyGroq(FaultMixin, FakeGroq):
    pass


class FaultyAzure(FaultMixin, FakeAzure):
    pass
