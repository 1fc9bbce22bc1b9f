"""Clients that hold connections (bifrost_stt.server.connections), against a real uvicorn on loopback:
half-sent headers and bodies are closed after their timeout, a trickling upload under the minimum rate too,
and past max_connections the oldest half-sent connection makes room (so /health answers), else a new one gets
a 503 in the Bifrost envelope. Each is logged and counted. Every wait here is bounded by a socket timeout.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from bifrost_stt.kernel import counters
from bifrost_stt.server import connections
from bifrost_stt.server.connections import GuardedHttpTools, Limits
from tests.fakes import hostile
from tests.fakes.hostile import Hostile
from tests.support import config_with, provider, strict_app


@contextmanager
def guarded(limits: Limits) -> Iterator[tuple[str, int]]:
    """A gateway on the guarded protocol with ``limits``; yields (host, port)."""
    connections.configure(limits)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with Hostile(hostile.json_answer(b'{"text": "ok"}')) as up:
        app = strict_app(config_with(provider("openai", up.url)))
        config = uvicorn.Config(app, lifespan="on", log_level="warning", http=GuardedHttpTools,
                                timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield "127.0.0.1", port
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            connections.configure(Limits())


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (reading whatever it sent); fails past ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s")
    return time.monotonic() - started


@pytest.fixture
def log_text() -> Iterator[list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger("bifrost_stt.connections")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


HEAD = b"POST /openai/v1/audio/transcriptions HTTP/1.1\r\nHost: g\r\n"


def test_half_sent_headers_are_closed_after_the_header_timeout(log_text: list[str]) -> None:
    before = counters.snapshot().get("connections_timed_out", 0)
    with guarded(Limits(header_timeout=0.5, body_timeout=5)) as addr:
        with socket.create_connection(addr) as silent, socket.create_connection(addr) as partial:
            partial.sendall(HEAD)  # and never the blank line
            assert closed_within(silent, 4) < 3
            assert closed_within(partial, 4) < 3
    assert counters.snapshot().get("connections_timed_out", 0) >= before + 2
    assert any("server.header_timeout_in_seconds" in line for line in log_text)


def test_a_paused_body_is_closed_after_the_body_timeout(log_text: list[str]) -> None:
    with guarded(Limits(header_timeout=5, body_timeout=0.5)) as addr:
        with socket.create_connection(addr) as sock:
            sock.sendall(HEAD + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b")
            assert closed_within(sock, 5) < 4
    assert any("server.body_timeout_in_seconds" in line for line in log_text)


def test_an_upload_trickling_under_the_minimum_rate_is_closed(log_text: list[str]) -> None:
    """Never a pause long enough for the body timeout, yet 10 bytes a second: closed for its rate."""
    with guarded(Limits(header_timeout=5, body_timeout=1.0, min_rate=1024)) as addr:
        with socket.create_connection(addr) as sock:
            sock.sendall(HEAD + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n")
            sock.settimeout(0.2)
            started = time.monotonic()
            while time.monotonic() - started < 6:
                try:
                    sock.sendall(b"x" * 2)
                    if sock.recv(1) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            assert time.monotonic() - started < 5
    assert any("server.min_upload_rate_kb" in line for line in log_text)


def test_health_answers_with_many_idle_connections_open(log_text: list[str]) -> None:
    """40 idle connections against a cap of 20: the oldest idle ones make room; /health answers at once."""
    before = counters.snapshot().get("connections_shed", 0)
    with guarded(Limits(header_timeout=30, body_timeout=30, max_connections=20)) as addr:
        idle = [socket.create_connection(addr) for _ in range(40)]
        try:
            started = time.monotonic()
            r = httpx.get(f"http://{addr[0]}:{addr[1]}/health", timeout=5)
            assert r.status_code == 200
            assert time.monotonic() - started < 2
        finally:
            for sock in idle:
                sock.close()
    assert counters.snapshot().get("connections_shed", 0) >= before + 20
    assert any("server.max_connections" in line for line in log_text)


def test_over_the_cap_with_every_connection_busy_a_new_one_gets_a_503_envelope() -> None:
    with guarded(Limits(header_timeout=30, body_timeout=30, max_connections=5)) as addr:
        busy = []
        for _ in range(5):  # each in the middle of its body: not evicted
            sock = socket.create_connection(addr)
            sock.sendall(HEAD + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b")
            busy.append(sock)
        time.sleep(0.2)
        try:
            with socket.create_connection(addr, timeout=5) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: g\r\n\r\n")
                received = b""
                try:
                    while chunk := extra.recv(65536):
                        received += chunk
                except (TimeoutError, ConnectionResetError):
                    pass
        finally:
            for sock in busy:
                sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), received[:200]
    assert b"retry-after: 1" in head.lower()
    parsed: dict[str, Any] = json.loads(body)
    assert parsed["status_code"] == 503 and parsed["error"]["code"] == "too_many_connections"
