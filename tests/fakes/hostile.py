"""A hostile upstream on 127.0.0.1: raw sockets, so it can send what no well-behaved server would.

    with Hostile(script) as up:          # script(conn: Conn) writes whatever it likes
        provider("openai", up.url, ...)

Each connection runs in its own thread: the request (headers, and the body when it has a Content-Length)
is read first, then ``script`` answers. Writers that go on forever stop when the gateway closes the
connection (a send fails) or after ``bound`` seconds, so a test never hangs on them.
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any


class Conn:
    def __init__(self, sock: socket.socket, bound: float) -> None:
        self.sock = sock
        self.until = time.monotonic() + bound
        self.request = b""

    def send(self, data: bytes) -> bool:
        """False once the peer has gone (or the time bound passed)."""
        if time.monotonic() > self.until:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def head(self, status: int = 200, *, content_type: str = "application/json", extra: str = "",
             length: int | None = None) -> bool:
        framing = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
        return self.send(
            f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{framing}{extra}\r\n".encode("latin-1")
        )

    def chunk(self, data: bytes) -> bool:
        return self.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def forever(self, data: bytes, *, chunked: bool = True) -> None:
        """Send ``data`` over and over until the peer leaves."""
        while self.chunk(data) if chunked else self.send(data):
            pass


Script = Callable[[Conn], None]


def _read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            return data
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        got = sock.recv(65536)
        if not got:
            break
        body += got
    return head + b"\r\n\r\n" + body


class Hostile:
    def __init__(self, *scripts: Script, bound: float = 20.0) -> None:
        """``scripts`` answer the requests in turn; the last one answers every request after them."""
        self.scripts = list(scripts)
        self.requests: list[bytes] = []
        self.bound = bound
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(outer.bound)
                while True:  # keep-alive: one connection may carry several requests
                    try:
                        raw = _read_request(sock)
                    except OSError:
                        return
                    if not raw:
                        return
                    with outer._lock:
                        outer.requests.append(raw)
                        n = len(outer.requests)
                    conn = Conn(sock, outer.bound)
                    conn.request = raw
                    outer.scripts[min(n, len(outer.scripts)) - 1](conn)
                    try:
                        sock.close()
                    except OSError:
                        pass
                    return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hostile:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------ scripts


def json_answer(body: bytes, status: int = 200, *, extra: str = "") -> Script:
    def script(conn: Conn) -> None:
        conn.head(status, length=len(body), extra=extra)
        conn.send(body)
    return script


def endless_body(conn: Conn) -> None:
    """A chunked JSON answer that never ends."""
    conn.head(200)
    conn.chunk(b'{"text": "')
    conn.forever(b"a" * 65536)


def gzip_bomb(size: int) -> Script:
    """A small gzip body that inflates to ``size`` bytes of JSON-ish text."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(b'{"text": "')]
    block = b"a" * (1 << 20)
    for _ in range(size >> 20):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(b'"}') + compressor.flush())
    payload = b"".join(parts)

    def script(conn: Conn) -> None:
        conn.head(200, length=len(payload), extra="content-encoding: gzip\r\n")
        conn.send(payload)
    return script


def sse(*events: bytes, then: Script | None = None) -> Script:
    """An event stream: ``events`` (raw bytes, sent as they are), then ``then`` (or the end)."""
    def script(conn: Conn) -> None:
        conn.head(200, content_type="text/event-stream")
        for event in events:
            if not conn.chunk(event):
                return
        if then is not None:
            then(conn)
        else:
            conn.send(b"0\r\n\r\n")
    return script


def no_newline(conn: Conn) -> None:
    conn.forever(b"x" * 65536)


def endless_events(conn: Conn) -> None:
    while conn.chunk(b'data: {"type":"transcript.text.delta","delta":"la "}\n\n'):
        time.sleep(0.01)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRSS:
    """The process's peak RSS growth (kB) while the block runs, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_kb())

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = rss_kb()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1024


