"""Hostile upstreams (raw sockets on 127.0.0.1, tests/fakes/hostile.py) against a real gateway.

An upstream is not trusted to be finite, well-formed or discreet: endless bodies, gzip bombs, lines that
never end, streams that never stop, a retry storm against the request timeout, and keys echoed in every
field. Each test is bounded in time, asserts what the client got, and that the key appears nowhere in the
response nor in the log; the memory tests also bound the process's RSS growth around the request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.audio import wav_bytes
from tests.fakes import hostile
from tests.fakes.hostile import Conn, Hostile, PeakRSS
from tests.support import config_with, provider

KEY = "sk-hostile-secret-0123456789abcdef"
CLIENT_KEY = "sk-client-own-key-fedcba9876543210"
UNIFIED = "/v1/audio/transcriptions"
OPENAI = "/openai/v1/audio/transcriptions"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Everything logged while the test runs (ours, uvicorn's), formatted with tracebacks."""
    collect = _Collect()
    collect.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collect)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        yield collect.lines
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(collect)
            logger.setLevel(level)


def gateway(run_gateway: Callable[..., str], up: Hostile, **network: Any) -> str:
    network.setdefault("default_request_timeout_in_seconds", 10.0)
    cfg = provider("openai", up.url, key=KEY, **network)
    return run_gateway(config_with(replace(cfg, allow_direct_keys=True)))


def post(url: str, *, stream: bool = False, path: str = OPENAI, model: str = "whisper-1",
         headers: dict[str, str] | None = None, timeout: float = 30) -> httpx.Response:
    data = {"model": model}
    if stream:
        data["stream"] = "true"
    with httpx.Client(base_url=url, timeout=timeout) as client:
        return client.post(path, data=data, files={"file": ("a.wav", wav_bytes(0.1), "audio/wav")},
                           headers=headers or {})


def no_secret(r: httpx.Response, log: list[str]) -> None:
    everything = r.text + json.dumps(dict(r.headers)) + "\n".join(log)
    for secret in (KEY, CLIENT_KEY, KEY[8:], CLIENT_KEY[8:]):
        assert secret not in everything
    assert "Traceback" not in "\n".join(log)


def limit_error(r: httpx.Response, setting: str) -> dict[str, Any]:
    assert r.status_code == 502, r.text[:300]
    body = r.json()
    assert body["extra_fields"]["provider"] == "openai"
    assert "openai" in body["error"]["message"] and setting in body["error"]["message"]
    assert body["error"]["code"] == "upstream_limit_exceeded"
    return body  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ size caps


def test_an_endless_body_is_a_502_at_the_size_cap(run_gateway: Callable[..., str], log_lines: list[str]) -> None:
    with Hostile(hostile.endless_body) as up:
        url = gateway(run_gateway, up, max_response_size_mb=2)
        with PeakRSS() as rss:
            started = time.monotonic()
            r = post(url)
        assert time.monotonic() - started < 10
    limit_error(r, "max_response_size_mb")
    assert "2 MB" in r.json()["error"]["message"]
    assert rss.growth_mb < 150, rss.growth_mb
    no_secret(r, log_lines)


def test_a_gzip_bomb_is_refused_as_it_inflates(run_gateway: Callable[..., str], log_lines: list[str]) -> None:
    """512 MB of JSON in about 0.5 MB of gzip, against the default 32 MB cap: RSS never sees the 512."""
    with Hostile(hostile.gzip_bomb(512 << 20)) as up:
        url = gateway(run_gateway, up)
        with PeakRSS() as rss:
            started = time.monotonic()
            r = post(url)
        assert time.monotonic() - started < 10
    limit_error(r, "max_response_size_mb")
    assert rss.growth_mb < 200, rss.growth_mb
    no_secret(r, log_lines)


def test_a_small_gzip_answer_still_works(run_gateway: Callable[..., str]) -> None:
    body = hostile.gzipped(b'{"text": "hello there"}')
    with Hostile(hostile.json_answer(body, extra="content-encoding: gzip\r\n")) as up:
        r = post(gateway(run_gateway, up))
    assert r.status_code == 200, r.text[:300]
    assert r.json()["text"] == "hello there"


def test_an_unknown_content_encoding_is_a_502(run_gateway: Callable[..., str]) -> None:
    with Hostile(hostile.json_answer(b"\x00\x01garbage", extra="content-encoding: br\r\n")) as up:
        r = post(gateway(run_gateway, up))
    assert r.status_code == 502 and "Content-Encoding" in r.json()["error"]["message"]


def test_an_oversized_body_is_retried_then_falls_back_like_any_502(run_gateway: Callable[..., str]) -> None:
    good = hostile.json_answer(b'{"text": "from groq"}')
    with Hostile(hostile.endless_body) as bad, Hostile(good) as fine:
        openai = provider("openai", bad.url, key=KEY, max_response_size_mb=1, max_retries=1,
                          retry_backoff_initial=10, retry_backoff_max=20)
        groq = provider("groq", fine.url, key="gsk-other-key")
        url = run_gateway(config_with(openai, groq))
        with httpx.Client(base_url=url, timeout=30) as client:
            r = client.post(UNIFIED, data={"model": "openai/whisper-1", "fallbacks": "groq/whisper-large-v3"},
                            files={"file": ("a.wav", wav_bytes(0.1), "audio/wav")})
        assert r.status_code == 200, r.text[:300]
        assert r.json()["text"] == "from groq"
        assert len(bad.requests) == 2  # one retry on the same provider, then the fallback


# ------------------------------------------------------------------------------ streams


def test_a_stream_line_that_never_ends_is_a_502(run_gateway: Callable[..., str], log_lines: list[str]) -> None:
    with Hostile(hostile.sse(b"data: ", then=hostile.no_newline)) as up:
        url = gateway(run_gateway, up, max_stream_event_size_kb=64)
        with PeakRSS() as rss:
            started = time.monotonic()
            r = post(url, stream=True, model="gpt-4o-transcribe")
        assert time.monotonic() - started < 10
    limit_error(r, "max_stream_event_size_kb")  # before the first event: a plain error, retried/fallen back
    assert rss.growth_mb < 100, rss.growth_mb
    no_secret(r, log_lines)


def test_an_event_of_endless_data_lines_is_a_502(run_gateway: Callable[..., str]) -> None:
    def many_lines(conn: Conn) -> None:
        conn.forever(b"data: " + b"y" * 1000 + b"\n")
    with Hostile(hostile.sse(then=many_lines)) as up:
        r = post(gateway(run_gateway, up, max_stream_event_size_kb=64), stream=True, model="gpt-4o-transcribe")
    limit_error(r, "max_stream_event_size_kb")


def test_an_endless_stream_of_events_ends_at_the_duration_cap(run_gateway: Callable[..., str],
                                                              log_lines: list[str]) -> None:
    """Bytes keep arriving, so the idle timeout never fires: the duration cap ends it with one error event."""
    with Hostile(hostile.sse(then=hostile.endless_events)) as up:
        url = gateway(run_gateway, up, max_stream_duration_in_seconds=1.0, stream_idle_timeout_in_seconds=30)
        started = time.monotonic()
        r = post(url, stream=True, model="gpt-4o-transcribe")
        elapsed = time.monotonic() - started
    assert r.status_code == 200
    assert 0.9 < elapsed < 5, elapsed
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert len(events) > 5
    last = json.loads(events[-1])
    assert last["status_code"] == 502 and "max_stream_duration_in_seconds" in last["error"]["message"]
    no_secret(r, log_lines)


# ------------------------------------------------------------------------------ the request deadline


def test_retries_share_the_request_timeout(run_gateway: Callable[..., str]) -> None:
    """Each attempt fails with a 500 after 0.6 s; five retries would take over 3.6 s: the 1 s timeout holds
    (the second attempt gets what is left of it and times out)."""
    def slow_500(conn: Conn) -> None:
        time.sleep(0.6)
        body = b'{"error": {"message": "try again", "type": "server_error"}}'
        conn.head(500, length=len(body))
        conn.send(body)
    with Hostile(slow_500) as up:
        url = gateway(run_gateway, up, default_request_timeout_in_seconds=1.0, max_retries=5,
                      retry_backoff_initial=10, retry_backoff_max=20)
        started = time.monotonic()
        r = post(url)
        elapsed = time.monotonic() - started
    assert r.status_code in (500, 504), r.text
    assert elapsed < 2.5, elapsed  # generous: a shared machine; without the shared deadline it is > 3.6 s
    assert len(up.requests) <= 2


def test_a_slow_gzip_bomb_with_a_retry_stays_within_the_request_timeout(run_gateway: Callable[..., str]) -> None:
    """Inflating is work with no wait in it: the deadline is checked as the body inflates, not after."""
    with Hostile(hostile.gzip_bomb(512 << 20)) as up:
        url = gateway(run_gateway, up, default_request_timeout_in_seconds=0.5, max_retries=1,
                      max_response_size_mb=1024, retry_backoff_initial=10, retry_backoff_max=20)
        started = time.monotonic()
        r = post(url)
        elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text[:300]
    assert "default_request_timeout_in_seconds" in r.json()["error"]["message"]
    assert elapsed < 3.5, elapsed  # inflating all 512 MB (and parsing it) takes several seconds more


# ------------------------------------------------------------------------------ keys in every field


def _leaky_error(status: int, key: str) -> hostile.Script:
    body = json.dumps({"error": {"message": f"bad key {key}", "type": f"type_{key}", "code": f"code-{key}",
                                 "param": key}}).encode()
    return hostile.json_answer(body, status, extra=f"retry-after: {key}\r\nx-echo: {key}\r\n")


def _auth_key(conn: Conn) -> str:
    for line in conn.request.split(b"\r\n"):
        if line.lower().startswith(b"authorization: bearer "):
            return line[22:].decode()
    return ""


def echo_key_error(status: int) -> hostile.Script:
    """An error that puts the key it was sent in message, type, code, param and Retry-After."""
    def script(conn: Conn) -> None:
        _leaky_error(status, _auth_key(conn))(conn)
    return script


@pytest.mark.parametrize("status", [400, 429, 503])
@pytest.mark.parametrize("direct", [False, True], ids=["configured-key", "client-key"])
def test_an_error_echoing_the_key_everywhere_leaves_scrubbed(run_gateway: Callable[..., str], log_lines: list[str],
                                                             status: int, direct: bool) -> None:
    with Hostile(echo_key_error(status)) as up:
        url = gateway(run_gateway, up)
        r = post(url, headers={"authorization": f"Bearer {CLIENT_KEY}"} if direct else None)
    assert r.status_code == status, r.text
    sent = _auth_key_of(up.requests[0])
    assert sent == (CLIENT_KEY if direct else KEY)
    error = r.json()["error"]
    assert "**********" in error["message"] and "**********" in error["param"]
    no_secret(r, log_lines)


def _auth_key_of(raw: bytes) -> str:
    conn = Conn.__new__(Conn)
    conn.request = raw
    return _auth_key(conn)


@pytest.mark.parametrize("direct", [False, True], ids=["configured-key", "client-key"])
def test_a_stream_error_event_echoing_the_key_leaves_scrubbed(run_gateway: Callable[..., str], log_lines: list[str],
                                                              direct: bool) -> None:
    def script(conn: Conn) -> None:
        key = _auth_key(conn)
        first = b'data: {"type":"transcript.text.delta","delta":"hi "}\n\n'
        error = json.dumps({"error": {"message": f"oops {key}", "type": key, "code": key, "param": key}})
        hostile.sse(first, f"data: {error}\n\n".encode())(conn)
    with Hostile(script) as up:
        url = gateway(run_gateway, up)
        r = post(url, stream=True, model="gpt-4o-transcribe",
                 headers={"authorization": f"Bearer {CLIENT_KEY}"} if direct else None)
    assert r.status_code == 200
    assert "error" in r.text
    no_secret(r, log_lines)


@pytest.mark.parametrize("direct", [False, True], ids=["configured-key", "client-key"])
def test_a_success_echoing_the_key_leaves_scrubbed(run_gateway: Callable[..., str], log_lines: list[str],
                                                   direct: bool) -> None:
    def script(conn: Conn) -> None:
        body = json.dumps({"text": f"your key is {_auth_key(conn)}"}).encode()
        hostile.json_answer(body)(conn)
    with Hostile(script) as up:
        r = post(gateway(run_gateway, up), headers={"authorization": f"Bearer {CLIENT_KEY}"} if direct else None)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["text"] == "your key is **********"
    no_secret(r, log_lines)


def test_stream_events_echoing_the_key_leave_scrubbed(run_gateway: Callable[..., str], log_lines: list[str]) -> None:
    def script(conn: Conn) -> None:
        key = _auth_key(conn)
        delta = json.dumps({"type": "transcript.text.delta", "delta": f"key {key} "})
        done = json.dumps({"type": "transcript.text.done", "text": f"key {key}"})
        hostile.sse(f"data: {delta}\n\n".encode(), f"data: {done}\n\n".encode(), b"data: [DONE]\n\n")(conn)
    with Hostile(script) as up:
        r = post(gateway(run_gateway, up), stream=True, model="gpt-4o-transcribe")
    assert r.status_code == 200
    assert "key **********" in r.text
    no_secret(r, log_lines)
