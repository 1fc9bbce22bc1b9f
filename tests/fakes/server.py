"""A real HTTP server on 127.0.0.1 for tests: records every request, answers from a programmable queue.

    with FakeServer() as server:                     # or the pytest fixtures in tests.fakes.fixtures
        server.enqueue(Reply(status=500, body="<html>oops</html>"), path="/v1/audio/transcriptions")
        ... point a client at server.url ...
        server.last.field("model"), server.last.file.filename, server.requests

The server runs aiohttp in its own thread and event loop, so sync clients (the OpenAI SDK) and async
tests on any loop can both talk to it; start-up takes a few milliseconds. Everything shared between the
server thread and the test is guarded by one lock. Replies come from, in order: the queue for the exact
path, the queue for any path (``path=None``), then ``handle(recorded)``, which subclasses override to
speak a vendor's protocol (the base answers 404).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

ANY_PATH = "*"


@dataclass(slots=True)
class Part:
    """One multipart part, in the order it arrived."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    @property
    def is_file(self) -> bool:
        return self.filename is not None


@dataclass(slots=True)
class Recorded:
    """A request as the fake upstream saw it (raw body included)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: CIMultiDictProxy[str]
    body: bytes
    parts: list[Part]
    received_at: float
    peer: tuple[str, int] | None = None  # the client's address: same port = same kept-alive connection
    disconnected: bool = False  # set when the client went away while we were still answering

    @property
    def params(self) -> dict[str, str]:
        """Query parameters, first value wins."""
        out: dict[str, str] = {}
        for k, v in self.query:
            out.setdefault(k, v)
        return out

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def form(self) -> list[tuple[str, str]]:
        """The text (non-file) parts as ``(name, value)`` pairs, in order."""
        return [(p.name, p.text) for p in self.parts if not p.is_file]

    @property
    def names(self) -> list[str]:
        """Every part's name in order, file parts included (to check model-first / file-last)."""
        return [p.name for p in self.parts]

    def field(self, name: str) -> str | None:
        return next((p.text for p in self.parts if p.name == name and not p.is_file), None)

    def fields(self, name: str) -> list[str]:
        return [p.text for p in self.parts if p.name == name and not p.is_file]

    @property
    def file(self) -> Part | None:
        return next((p for p in self.parts if p.is_file), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Reply:
    """A programmed answer.

    ``body``: bytes/str sent as is, dict/list sent as JSON. ``events``: send an SSE stream instead, one
    ``data: <event>`` per item (dicts JSON-encoded, strings verbatim, e.g. ``"[DONE]"``), ``event_delay``
    seconds apart. ``delay``: seconds before anything is sent. ``drop``: close the connection without
    answering. ``stall``: after the SSE events, keep the stream open this long without sending anything.
    """

    status: int = 200
    body: bytes | str | Mapping[str, Any] | Sequence[Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delay: float = 0.0
    events: Sequence[Mapping[str, Any] | str] | None = None
    event_delay: float = 0.0
    drop: bool = False
    stall: float = 0.0


def error_reply(status: int, message: str, type_: str = "invalid_request_error", *, code: Any = None, param: Any = None) -> Reply:
    """An OpenAI-style JSON error answer."""
    return Reply(status=status, body={"error": {"message": message, "type": type_, "param": param, "code": code}})


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Parts of a multipart/form-data body, in order; [] when it is not one."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if "multipart/form-data" not in content_type or match is None:
        return []
    delimiter = b"\r\n--" + match.group(1).encode()
    parts: list[Part] = []
    for section in (b"\r\n" + body).split(delimiter)[1:]:
        if section.startswith(b"--"):
            break
        head, _, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params = dict(re.findall(r';\s*([\w*-]+)="((?:[^"\\]|\\.)*)"', headers.get("content-disposition", "")))
        filename = params.get("filename")
        parts.append(
            Part(
                name=unquote(params.get("name", "")),
                data=data,
                filename=None if filename is None else filename.replace("%22", '"'),
                content_type=headers.get("content-type"),
                headers=headers,
            )
        )
    return parts


class FakeServer:
    """A recording, programmable HTTP server in a background thread (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._requests: list[Recorded] = []
        self._queues: dict[str, deque[Reply]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # pragma: no cover - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            pending = asyncio.all_tasks(loop)  # replies still sleeping (delays, stalls)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        ready.wait(5)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop = self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------------------ test API

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every request received since the last reset, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> Recorded:
        with self._lock:
            if not self._requests:
                raise AssertionError(f"{type(self).__name__} received no request")
            return self._requests[-1]

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Recorded]:
        """Block until ``count`` requests have arrived (for tests racing a background client)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    def enqueue(self, *replies: Reply, path: str | None = None) -> None:
        """Answer the next requests to ``path`` (any path when None) with ``replies``, in order."""
        with self._lock:
            self._queues.setdefault(path or ANY_PATH, deque()).extend(replies)

    def reset(self) -> None:
        """Forget requests and queued replies (fixtures call this between tests)."""
        with self._lock:
            self._requests.clear()
            self._queues.clear()

    def handle(self, request: Recorded) -> Reply:
        """The answer when nothing is queued. Runs in the server thread; override to speak a protocol."""
        return error_reply(404, f"no route for {request.method} {request.path}", code="not_found")

    # ------------------------------------------------------------------------------ serving

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            parts=parse_multipart(body, request.headers.get("content-type", "")),
            received_at=time.monotonic(),
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        with self._arrived:
            self._requests.append(recorded)
            self._arrived.notify_all()
            queue = self._queues.get(request.path) or self._queues.get(ANY_PATH)
            reply = queue.popleft() if queue else None
        if reply is None:
            reply = self.handle(recorded)
        try:
            return await self._send(request, recorded, reply)
        except (ConnectionResetError, asyncio.CancelledError):
            recorded.disconnected = True
            raise

    @staticmethod
    async def _pause(request: web.Request, recorded: Recorded, seconds: float) -> bool:
        """Sleep ``seconds``; False (and ``recorded.disconnected``) as soon as the client hangs up meanwhile.

        aiohttp does not cancel a handler whose client went away, so the transport is watched instead.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if request.transport is None or request.transport.is_closing():
                recorded.disconnected = True
                return False
            await asyncio.sleep(min(left, 0.01))
        return True

    async def _send(self, request: web.Request, recorded: Recorded, reply: Reply) -> web.StreamResponse:
        if reply.delay and not await self._pause(request, recorded, reply.delay):
            return web.Response(status=499)  # nobody is listening any more
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped on purpose")
        headers = CIMultiDict(reply.headers)
        if reply.events is not None:
            response = web.StreamResponse(status=reply.status, headers=headers)
            response.content_type = reply.content_type or "text/event-stream"
            await response.prepare(request)
            for i, event in enumerate(reply.events):
                if i and reply.event_delay:
                    await asyncio.sleep(reply.event_delay)
                data = event if isinstance(event, str) else json.dumps(event)
                await response.write(f"data: {data}\n\n".encode())
            if reply.stall and not await self._pause(request, recorded, reply.stall):
                return response
            await response.write_eof()
            return response
        body = reply.body
        if isinstance(body, (Mapping, list, tuple)):
            payload, content_type = json.dumps(body).encode(), reply.content_type or "application/json"
        elif isinstance(body, str):
            payload, content_type = body.encode(), reply.content_type or "text/plain; charset=utf-8"
        else:
            payload, content_type = body or b"", reply.content_type or "application/octet-stream"
        headers.setdefault("content-type", content_type)
        return web.Response(status=reply.status, body=payload, headers=headers)
