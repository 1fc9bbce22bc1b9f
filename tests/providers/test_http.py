"""bifrost_stt.providers.http: the pooled client, multipart bodies, upload names and the one error mapping."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from bifrost_stt.kernel.canonical import CHUNK_SIZE, BytesAudio, FileAudio
from bifrost_stt.kernel.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable, envelope
from bifrost_stt.kernel.settings import ConcurrencyConfig, NetworkConfig, ProviderConfig
from bifrost_stt.providers.http import make_client, map_transport_errors, multipart_body, raise_for_upstream, upload_filename
from tests.fakes.server import FakeServer, Reply, parse_multipart

SECRET = "sk-live-very-secret-0123456789abcdef"


def config(**network: object) -> ProviderConfig:
    return ProviderConfig(id="acme", kind="openai", network=NetworkConfig(**network))  # type: ignore[arg-type]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


# ------------------------------------------------------------------------------------------ multipart


async def test_multipart_fields_in_order_file_last_and_exact_length() -> None:
    audio = BytesAudio(os.urandom(200_000), filename="a.wav")
    fields = [("model", "m"), ("language", "en"), ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]
    content_type, length, stream = multipart_body(fields, "file", audio, "a.wav", "audio/wav")
    body = await collect(stream)
    assert len(body) == length
    parts = parse_multipart(body, content_type)
    assert [(p.name, p.text) for p in parts[:-1]] == fields
    assert parts[-1].name == "file" and parts[-1].filename == "a.wav" and parts[-1].content_type == "audio/wav"
    assert parts[-1].data == audio.data


async def test_multipart_is_replayable_and_streams_the_file_in_chunks(tmp_path: object) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 17)
    fd = os.open(os.path.join(str(tmp_path), "spool"), os.O_RDWR | os.O_CREAT)
    os.write(fd, data)
    audio = FileAudio(fd=fd, size=len(data), filename="x.flac")
    try:
        first = multipart_body([("model", "m")], "file", audio, "x.flac", "audio/flac")
        second = multipart_body([("model", "m")], "file", audio, "x.flac", "audio/flac")
        chunks = [c async for c in first[2]]
        assert len(chunks) == 1 + 4 + 1  # preamble, the file's own chunks (never joined), closing boundary
        for content_type, length, stream in (first[:2] + (None,), second):
            if stream is None:
                body = b"".join(chunks)
            else:
                body = await collect(stream)
            assert len(body) == length
            assert parse_multipart(body, content_type)[-1].data == data
    finally:
        audio.close()


async def test_multipart_escapes_quotes_in_names() -> None:
    audio = BytesAudio(b"abc")
    content_type, _, stream = multipart_body([("a\"b", "v")], "file", audio, 'we"ird.wav', "audio/wav")
    body = await collect(stream)
    assert b'name="a%22b"' in body and b'filename="we%22ird.wav"' in body
    assert parse_multipart(body, content_type)[-1].filename == 'we"ird.wav'


async def test_multipart_refuses_a_file_that_changed_size() -> None:
    audio = BytesAudio(b"0123456789")
    _, _, stream = multipart_body([], "file", audio, "a.wav", "audio/wav")
    audio.data = b"01234"
    with pytest.raises(GatewayError, match="changed size"):
        await collect(stream)


# ------------------------------------------------------------------------------------ upload filename


@pytest.mark.parametrize(
    ("filename", "content_type", "fmt", "expected"),
    [
        ("speech.wav", "audio/wav", "wav", ("speech.wav", "audio/wav")),
        ("speech.WAV", "application/octet-stream", None, ("speech.WAV", "audio/wav")),
        ("song.mp3", "audio/mpeg", "mp3", ("song.mp3", "audio/mpeg")),
        ("upload", "application/octet-stream", "wav", ("audio.wav", "audio/wav")),  # openai-python raw bytes
        ("", "application/octet-stream", "flac", ("audio.flac", "audio/flac")),
        ("recording", "application/octet-stream", "ogg", ("audio.ogg", "audio/ogg")),
        ("clip.bin", "application/octet-stream", "m4a", ("audio.m4a", "audio/mp4")),
        ("take.aiff", "", "aiff", ("take.aiff", "audio/aiff")),
        ("upload", "application/octet-stream", None, ("upload", "application/octet-stream")),  # never .mp3
        ("", "", None, ("audio", "application/octet-stream")),
    ],
)
def test_upload_filename(filename: str, content_type: str, fmt: str | None, expected: tuple[str, str]) -> None:
    assert upload_filename(BytesAudio(b"x", filename=filename, content_type=content_type, format=fmt)) == expected


# -------------------------------------------------------------------------- raise_for_upstream (pure)


def answer(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": content_type, **headers})


async def test_openai_error_json_keeps_the_providers_fields() -> None:
    body = b'{"error": {"message": "Invalid file format.", "type": "invalid_request_error", "param": "file", "code": null}}'
    with pytest.raises(UpstreamError) as info:
        await raise_for_upstream("acme", answer(400, body))
    err = info.value
    assert type(err) is UpstreamError
    assert (err.status, err.error_type, err.message, err.param, err.code) == (
        400, "invalid_request_error", "Invalid file format.", "file", None
    )
    assert err.provider == "acme" and not err.retryable


async def test_rate_limit_keeps_code_and_retry_after() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    with pytest.raises(UpstreamError) as info:
        await raise_for_upstream("acme", answer(429, body, **{"retry-after": "7"}))
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded" and info.value.retryable
    assert info.value.headers == {"retry-after": "7"}


@pytest.mark.parametrize(
    ("status", "body", "content_type", "words"),
    [
        (500, b"<html><body>Internal Server Error</body></html>", "text/html", "HTML"),
        (502, b"<!doctype html><title>Bad gateway</title>", "text/plain", "HTML"),
        (503, b"", "text/plain", "empty"),
        (500, b"upstream connect error", "text/plain", "non-JSON"),
        (404, b'{"unexpected": true}', "application/json", "non-JSON"),
    ],
)
async def test_unusable_error_bodies_become_502(status: int, body: bytes, content_type: str, words: str) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await raise_for_upstream("acme", answer(status, body, content_type))
    assert info.value.status == 502
    assert "acme" in info.value.message and str(status) in info.value.message and words in info.value.message


@pytest.mark.parametrize(("body", "content_type"), [(b"", "application/json"), (b"<html>hi</html>", "text/html")])
async def test_2xx_without_json_where_json_was_due_is_502(body: bytes, content_type: str) -> None:
    with pytest.raises(UpstreamUnavailable, match="acme answered 200"):
        await raise_for_upstream("acme", answer(200, body, content_type))
    await raise_for_upstream("acme", answer(200, body or b"\n", "text/plain"), expect_json=False)


async def test_a_key_echoed_by_the_upstream_never_reaches_the_message() -> None:
    body = ('{"error": {"message": "Incorrect API key provided: ' + SECRET + ' (Bearer ' + SECRET + ')", '
            '"type": "invalid_request_error", "code": "invalid_api_key"}}').encode()
    with pytest.raises(UpstreamError) as info:
        await raise_for_upstream("acme", answer(401, body), secrets=[SECRET])
    err = info.value
    assert err.status == 401
    for rendered in (str(err), repr(err), str(envelope(err))):
        assert SECRET not in rendered


# ----------------------------------------------------------------------- transport errors (real sockets)


async def test_connection_refused_is_502(refused_url: str) -> None:
    client = make_client(config())
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            with map_transport_errors("acme", timeout=5, secrets=[SECRET]):
                await client.post(refused_url + "/x", headers={"authorization": f"Bearer {SECRET}"}, content=b"x")
    finally:
        await client.aclose()
    assert info.value.status == 502 and info.value.message.startswith("could not reach acme")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value) and SECRET not in str(envelope(info.value))


async def test_server_dropping_the_connection_is_502(fake_upstream: FakeServer) -> None:
    fake_upstream.enqueue(Reply(drop=True))
    async with make_client(config()) as client:
        with pytest.raises(UpstreamUnavailable, match="could not reach acme"):
            with map_transport_errors("acme"):
                await client.post(fake_upstream.url + "/x", content=b"x")


async def test_slow_upstream_beyond_read_timeout_is_504(fake_upstream: FakeServer) -> None:
    fake_upstream.enqueue(Reply(body={"text": "late"}, delay=1.0))
    async with make_client(config(default_request_timeout_in_seconds=0.2)) as client:
        with pytest.raises(UpstreamTimeout) as info:
            with map_transport_errors("acme", timeout=0.2):
                await client.post(fake_upstream.url + "/x", content=b"x")
    assert info.value.status == 504
    assert "acme" in info.value.message and "default_request_timeout_in_seconds" in info.value.message


async def test_an_asyncio_deadline_is_504() -> None:
    with pytest.raises(UpstreamTimeout, match="within 0.01 s"):
        with map_transport_errors("acme", timeout=0.01):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError):
        with map_transport_errors("acme"):
            raise KeyError("not a transport problem")
    with pytest.raises(GatewayError, match="ours"):
        with map_transport_errors("acme"):
            raise GatewayError("ours")


# ------------------------------------------------------------------------------------------- client


async def test_client_is_aiohttp_backed_pooled_and_sends_extra_headers(fake_upstream: FakeServer) -> None:
    cfg = ProviderConfig(
        id="acme", kind="openai",
        network=NetworkConfig(extra_headers={"x-team": "stt"}, max_conns_per_host=4),
        concurrency=ConcurrencyConfig(concurrency=8),
    )
    client = make_client(cfg)
    assert isinstance(client._transport, AiohttpTransport)
    try:
        for _ in range(3):
            fake_upstream.enqueue(Reply(body={"ok": True}))
            response = await client.post(fake_upstream.url + "/x", content=b"x")
            assert response.json() == {"ok": True}
        session = client._transport.client
        assert session.connector.limit == 8 and session.connector.limit_per_host == 4  # type: ignore[union-attr]
    finally:
        await client.aclose()
    seen = fake_upstream.requests
    assert all(r.headers["x-team"] == "stt" for r in seen)
    assert len({r.peer for r in seen}) == 1  # one kept-alive connection


async def test_streamed_upload_has_content_length_not_chunked(fake_upstream: FakeServer) -> None:
    audio = BytesAudio(os.urandom(150_000))
    content_type, length, stream = multipart_body([("model", "m")], "file", audio, "a.wav", "audio/wav")
    fake_upstream.enqueue(Reply(body={}))
    async with make_client(config()) as client:
        await client.post(
            fake_upstream.url + "/up", content=stream, headers={"content-type": content_type, "content-length": str(length)}
        )
    seen = fake_upstream.last
    assert seen.headers["content-length"] == str(length) and "transfer-encoding" not in seen.headers
    assert seen.names == ["model", "file"] and seen.file is not None and seen.file.data == audio.data


def test_make_client_outside_a_loop_creates_no_session(fake_upstream: FakeServer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = make_client(config())  # e.g. while building the app, before the loop runs
    assert client._transport.client is not None and not hasattr(client._transport.client, "closed")

    async def use() -> int:
        fake_upstream.enqueue(Reply(body={}))
        try:
            return (await client.get(fake_upstream.url + "/ping")).status_code
        finally:
            await client.aclose()

    assert asyncio.run(use()) == 200
