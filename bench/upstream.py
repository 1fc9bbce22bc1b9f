"""A fast fake OpenAI-compatible transcription upstream, for benchmarking the gateway.

It is a raw ``asyncio.Protocol`` HTTP/1.1 server (uvloop when installed) that:

* keeps connections alive (HTTP/1.1 default, ``Connection: close`` honoured, pipelining works);
* accepts ``Content-Length`` and ``Transfer-Encoding: chunked`` request bodies and answers
  ``Expect: 100-continue``;
* discards the body as it arrives (it never buffers an upload: only the first 512 bytes are kept,
  to see which ``model`` the multipart form names);
* answers ``{"text":"ok"}`` (``application/json``) to ``POST /v1/audio/transcriptions``,
  ``ok`` to ``GET /health`` and its counters as JSON to ``GET /stats``; 404/405 otherwise.

It must never be the bottleneck: on one core it serves about 8-10k 100 KB uploads per second
(measured with wrk; see bench/README.md).

Run: ``python bench/upstream.py --port 18001 --cpu 0``. It prints ``LISTENING <host> <port>``
once the socket is bound and exits cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024  # a request head larger than this is refused with 431
SNIFF_BYTES = 512  # how much of each body is kept, to read the multipart "model" field

_HEAD, _BODY_LEN, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _CLOSED = range(6)
_MODEL_RE = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)')

TRANSCRIPTION_PATH = b"/v1/audio/transcriptions"


def _response(status: str, content_type: bytes, body: bytes, keep_alive: bool = True) -> bytes:
    """Pre-render one complete HTTP/1.1 response."""
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: " + conn + b"\r\n\r\n" + body
    )


_OK = {ka: _response("200 OK", b"application/json", b'{"text":"ok"}', ka) for ka in (True, False)}
_HEALTH = {ka: _response("200 OK", b"text/plain", b"ok", ka) for ka in (True, False)}
_NOT_FOUND = {
    ka: _response("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}', ka)
    for ka in (True, False)
}
_NOT_ALLOWED = {
    ka: _response("405 Method Not Allowed", b"application/json", b'{"error":{"message":"method"}}', ka)
    for ka in (True, False)
}
_BAD_REQUEST = _response("400 Bad Request", b"text/plain", b"bad request", False)
_HEAD_TOO_LARGE = _response("431 Request Header Fields Too Large", b"text/plain", b"too large", False)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class Stats:
    """Counters over the server's lifetime (read with GET /stats)."""

    requests: int = 0  # completed POST /v1/audio/transcriptions
    body_bytes: int = 0  # body bytes received on that route (chunk framing excluded)
    chunked: int = 0  # of which sent with Transfer-Encoding: chunked
    bearer_ok: int = 0  # of which carried "Authorization: Bearer sk-bench"
    connections: int = 0
    other: int = 0  # requests to other routes
    models: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "body_bytes": self.body_bytes,
                "chunked": self.chunked,
                "bearer_ok": self.bearer_ok,
                "connections": self.connections,
                "other": self.other,
                "models": dict(self.models),
            }
        ).encode()


STATS = Stats()


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: a small state machine that counts body bytes and throws them away."""

    __slots__ = (
        "_transport", "_state", "_buf", "_remaining", "_keep_alive", "_method", "_path",
        "_is_chunked", "_body_bytes", "_sniff", "_bearer_ok",
    )

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._state = _HEAD
        self._buf = bytearray()  # only ever holds a partial head or a partial chunk-size line
        self._remaining = 0
        self._keep_alive = True
        self._method = b""
        self._path = b""
        self._is_chunked = False
        self._body_bytes = 0
        self._sniff = bytearray()
        self._bearer_ok = False

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        STATS.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._transport = None

    def data_received(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and self._state != _CLOSED:
            state = self._state
            if state == _BODY_LEN:
                take = min(self._remaining, end - pos)
                self._count(data, pos, take)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._finish()
            elif state == _CHUNK_DATA:
                take = min(self._remaining, end - pos)
                payload = max(0, min(take, self._remaining - 2))  # the last 2 bytes are the CRLF
                if payload:
                    self._count(data, pos, payload)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _CHUNK_SIZE
            elif state == _HEAD:
                pos = self._read_until(data, pos, b"\r\n\r\n", self._on_head)
            elif state == _CHUNK_SIZE:
                pos = self._read_until(data, pos, b"\r\n", self._on_chunk_size)
            elif state == _TRAILER:
                pos = self._read_until(data, pos, b"\r\n", self._on_trailer_line)

    # -- parsing helpers ---------------------------------------------------------------------

    def _read_until(self, data: bytes, pos: int, sep: bytes, on_line) -> int:  # type: ignore[no-untyped-def]
        """Find ``sep`` from ``pos`` (joining with a buffered partial line), call ``on_line``; new pos."""
        if not self._buf:
            idx = data.find(sep, pos)
            if idx >= 0:
                on_line(data[pos:idx])
                return idx + len(sep)
            self._buf += data[pos:]
        else:
            old = len(self._buf)
            self._buf += data[pos:]
            idx = self._buf.find(sep, max(0, old - len(sep) + 1))
            if idx >= 0:
                line = bytes(self._buf[:idx])
                self._buf.clear()
                on_line(line)
                return pos + idx + len(sep) - old
        if len(self._buf) > MAX_HEAD:
            self._fail(_HEAD_TOO_LARGE)
        return len(data)

    def _count(self, data: bytes, pos: int, n: int) -> None:
        self._body_bytes += n
        if len(self._sniff) < SNIFF_BYTES:
            self._sniff += data[pos : pos + min(n, SNIFF_BYTES - len(self._sniff))]

    def _on_head(self, head: bytes) -> None:
        if not head:  # tolerate stray CRLFs between requests (RFC 9112 §2.2)
            return
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._fail(_BAD_REQUEST)
            return
        self._method, target, version = parts
        self._path = target.split(b"?", 1)[0]
        self._keep_alive = version == b"HTTP/1.1"
        content_length = 0
        self._is_chunked = False
        self._bearer_ok = False
        expect_continue = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    self._fail(_BAD_REQUEST)
                    return
            elif name == b"transfer-encoding":
                self._is_chunked = value.lower().endswith(b"chunked")
            elif name == b"connection":
                token = value.lower()
                if b"close" in token:
                    self._keep_alive = False
                elif b"keep-alive" in token:
                    self._keep_alive = True
            elif name == b"authorization":
                self._bearer_ok = value == b"Bearer sk-bench"
            elif name == b"expect":
                expect_continue = value.lower() == b"100-continue"
        self._body_bytes = 0
        self._sniff.clear()
        if expect_continue and self._transport is not None:
            self._transport.write(_CONTINUE)
        if self._is_chunked:
            self._state = _CHUNK_SIZE
        elif content_length > 0:
            self._state = _BODY_LEN
            self._remaining = content_length
        else:
            self._finish()

    def _on_chunk_size(self, line: bytes) -> None:
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            self._fail(_BAD_REQUEST)
            return
        if size == 0:
            self._state = _TRAILER
        else:
            self._state = _CHUNK_DATA
            self._remaining = size + 2

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            self._finish()

    # -- answering -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """The whole request has been read: answer it and get ready for the next one."""
        self._state = _HEAD
        keep_alive = self._keep_alive
        if self._path == TRANSCRIPTION_PATH:
            if self._method == b"POST":
                STATS.requests += 1
                STATS.body_bytes += self._body_bytes
                STATS.chunked += self._is_chunked
                STATS.bearer_ok += self._bearer_ok
                match = _MODEL_RE.search(self._sniff)
                STATS.models[match.group(1).decode("latin-1") if match else "?"] += 1
                response = _OK[keep_alive]
            else:
                STATS.other += 1
                response = _NOT_ALLOWED[keep_alive]
        elif self._path == b"/health":
            STATS.other += 1
            response = _HEALTH[keep_alive]
        elif self._path == b"/stats":
            STATS.other += 1
            response = _response("200 OK", b"application/json", STATS.as_json(), keep_alive)
        else:
            STATS.other += 1
            response = _NOT_FOUND[keep_alive]
        if self._transport is None:
            return
        self._transport.write(response)
        if not keep_alive:
            self._transport.close()
            self._state = _CLOSED

    def _fail(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
            self._transport.close()
        self._state = _CLOSED


async def serve(host: str, port: int) -> None:
    """Listen until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()
    print(f"LISTENING {bound[0]} {bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001, help="0 picks a free port (printed)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    runner = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    loop_name = "uvloop" if runner is not asyncio.run else "asyncio"
    print(f"fake upstream: {loop_name}, cpu={args.cpu}", file=sys.stderr, flush=True)
    runner(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
