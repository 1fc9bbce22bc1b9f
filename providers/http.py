"""Wire plumbing every provider module shares: the pooled client, multipart bodies, upload names, errors.

Client. One ``httpx.AsyncClient`` per configured provider, created by the app factory during lifespan
startup and closed (``await client.aclose()``) at shutdown; never one per request. Its transport is
``httpx_aiohttp.AiohttpTransport``: httpx's own httpcore pool spends most gateway CPU under concurrency
(BEHAVIOUR.md §8). Measured here (100 KB POSTs, concurrency 16, local upstream): httpx default transport
0.7-1.7k req/s at 0.6-1.0 ms client CPU per request; aiohttp transport 4.5-4.9k req/s at 0.2 ms.
The aiohttp session inside is built lazily on the first request, i.e. inside the running loop, so
``make_client`` may be called from sync or async code; but a client belongs to the loop that first uses it.

Errors. Everything that can go wrong on the wire is mapped here, once, into ``bifrost_stt.kernel.errors``:

    non-2xx with OpenAI-style JSON error  -> UpstreamError (provider's status, type, code, message, param)
    non-2xx with HTML / empty / non-JSON   -> UpstreamUnavailable 502
    2xx with empty / HTML body, JSON due   -> UpstreamUnavailable 502
    connect refused, reset, protocol error -> UpstreamUnavailable 502
    body cut short (truncated, reset)      -> UpstreamUnavailable 502 ("broke off its answer")
    connect / read / total timeout         -> UpstreamTimeout 504

No message built here ever contains a key: callers pass their secrets and any echo of them is masked.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets as _secrets
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from bifrost_stt.kernel.canonical import CHUNK_SIZE, AudioSource
from bifrost_stt.kernel.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable, scrub, scrub_error
from bifrost_stt.kernel.settings import ProviderConfig
from bifrost_stt.providers.limits import ACCEPT_ENCODING

KEEPALIVE_SECONDS = 30.0

# --------------------------------------------------------------------------------------------- client


class _NoCookies(httpx.Cookies):
    """A cookie store that never stores: ``extract_cookies`` does nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that neither keeps nor sends cookies.

    One client serves every gateway client of a provider: a cookie an upstream set (a load balancer's,
    Cloudflare's ``__cf_bm``) for one caller must not ride on the next caller's request. Extracting them
    also cost about 3.5% of the gateway's CPU per request (a urllib request/response pair per response).
    """

    _none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, value: Any) -> None:
        pass  # httpx's constructor assigns one; there is nothing to keep


def make_client(config: ProviderConfig) -> httpx.AsyncClient:
    """The provider's pooled, keep-alive client (see the module docstring for lifetime and loop rules).

    Pool: at most ``concurrency.concurrency`` connections in all and ``network.max_conns_per_host`` per
    host (Azure keys may point at several endpoints). Timeouts: connect from the network config, read =
    ``default_request_timeout_in_seconds``; providers pass a per-attempt timeout on each call anyway.
    """
    network = config.network
    total = max(1, config.concurrency.concurrency)
    per_host = max(1, min(network.max_conns_per_host, total))

    def session() -> aiohttp.ClientSession:
        # Called by the transport on its first request, so inside the running event loop.
        connector = aiohttp.TCPConnector(
            limit=total,
            limit_per_host=per_host,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=httpx.create_ssl_context(),
        )
        # trust_env=False: with it, aiohttp reads .netrc and the proxy variables in a worker thread on
        # every request (a third of the gateway's CPU under load). Proxies are not supported here.
        # No cookie jar either (see _CookielessClient).
        return aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar())

    timeout = httpx.Timeout(
        network.default_request_timeout_in_seconds,
        connect=network.connect_timeout_in_seconds,
    )
    return _CookielessClient(
        transport=AiohttpTransport(client=session),
        timeout=timeout,
        # Only what providers.limits can inflate with a bound (no br/zstd, even when installed).
        headers={"accept-encoding": ACCEPT_ENCODING, **network.extra_headers},
        follow_redirects=False,
        trust_env=False,  # proxies are the aiohttp session's business; httpx would mount httpcore ones
    )


# ------------------------------------------------------------------------------------------ multipart


def _quote(value: str) -> str:
    """Escape a name/filename for a Content-Disposition parameter (WHATWG form-data rules, as httpx)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


_BOUNDARY_PREFIX = _secrets.token_hex(12)
_boundary_counter = itertools.count()


def _boundary() -> str:
    """Unique per body: a random per-process prefix and a counter (no urandom call per request)."""
    return f"{_BOUNDARY_PREFIX}{next(_boundary_counter):x}"


def multipart_body(
    fields: Sequence[tuple[str, str]],
    file_field: str,
    audio: AudioSource,
    filename: str,
    content_type: str,
) -> tuple[str, int, AsyncIterator[bytes]]:
    """``(content-type header, exact content-length, byte stream)`` for a multipart/form-data upload.

    Text fields come first in the given order (``model`` first: some servers reject file-first bodies),
    the file last, streamed from ``audio.chunks()`` so a large upload never sits in memory twice. Arrays
    are the caller's repeated ``name[]`` pairs. Each call builds a fresh iterator, so every attempt
    (retry, fallback) can replay the upload.
    """
    boundary = _boundary()
    dash = f"--{boundary}\r\n".encode()
    head = bytearray()
    for name, value in fields:
        head += dash
        head += f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode()
        head += value.encode()
        head += b"\r\n"
    head += dash
    head += (
        f'Content-Disposition: form-data; name="{_quote(file_field)}"; filename="{_quote(filename)}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    preamble = bytes(head)
    size = audio.size
    length = len(preamble) + size + len(tail)

    async def stream() -> AsyncIterator[bytes]:
        yield preamble
        async for chunk in sized_chunks(audio, size=size):
            yield chunk
        yield tail

    return f"multipart/form-data; boundary={boundary}", length, stream()


async def sized_chunks(
    audio: AudioSource, chunk_size: int = CHUNK_SIZE, *, size: int | None = None
) -> AsyncIterator[bytes]:
    """The upload from its start; fails the attempt if it is not ``size`` bytes (default ``audio.size``).

    Every body we send declares a Content-Length computed from the size when the body was built: a file
    that changed since would make that a lie and corrupt the upstream request, so the attempt fails instead.
    """
    expected = audio.size if size is None else size
    sent = 0
    async for chunk in audio.chunks(chunk_size):
        sent += len(chunk)
        if sent > expected:
            break
        yield chunk
    if sent != expected:
        raise GatewayError(f"upload changed size while being sent ({sent} != {expected} bytes)")


def base64_length(size: int) -> int:
    """Length of the (padded) base64 text for ``size`` bytes."""
    return 4 * ((size + 2) // 3)


async def base64_chunks(audio: AudioSource, chunk_size: int = 3 * CHUNK_SIZE) -> AsyncIterator[bytes]:
    """The base64 of the whole upload, encoded piece by piece in 3-byte multiples (no inner padding), so
    a JSON body carrying the audio inline never holds the file, or its encoding, whole in memory."""
    carry = b""
    async for chunk in sized_chunks(audio, chunk_size):
        data = carry + chunk if carry else chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        if cut:
            yield base64.b64encode(data[:cut])
    if carry:
        yield base64.b64encode(carry)


# ------------------------------------------------------------------------------------ upload filename

# Sniffed format (or file extension) -> (extension to send, MIME type). Our own small table on purpose:
# vendors pick the decoder from the extension, so a WAV must never travel as ".mp3".
AUDIO_TYPES: dict[str, tuple[str, str]] = {
    "wav": ("wav", "audio/wav"),
    "wave": ("wav", "audio/wav"),
    "mp3": ("mp3", "audio/mpeg"),
    "mpeg": ("mpeg", "audio/mpeg"),
    "mpga": ("mpga", "audio/mpeg"),
    "flac": ("flac", "audio/flac"),
    "ogg": ("ogg", "audio/ogg"),
    "oga": ("oga", "audio/ogg"),
    "opus": ("opus", "audio/ogg"),
    "webm": ("webm", "audio/webm"),
    "m4a": ("m4a", "audio/mp4"),
    "mp4": ("mp4", "audio/mp4"),
    "aac": ("aac", "audio/aac"),
    "aiff": ("aiff", "audio/aiff"),
    "aif": ("aif", "audio/aiff"),
    "amr": ("amr", "audio/amr"),
}
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def upload_filename(audio: AudioSource) -> tuple[str, str]:
    """``(filename, content type)`` for the upstream file part.

    The client's name is kept when it carries a known audio extension. Otherwise (no name, the SDK's
    ``upload``, no or an unknown extension) it becomes ``audio.<ext>`` from the sniffed ``audio.format``.
    With neither, the client's name goes through unchanged and the vendor decides.
    """
    name = (audio.filename or "").strip()
    suffix = PurePosixPath(name).suffix.lower().lstrip(".")
    client_type = (audio.content_type or "").split(";")[0].strip().lower()
    if suffix in AUDIO_TYPES:
        mime = client_type if client_type not in _GENERIC_TYPES else AUDIO_TYPES[suffix][1]
        return name, mime
    sniffed = AUDIO_TYPES.get((audio.format or "").lower())
    if sniffed is not None:
        ext, mime = sniffed
        return f"audio.{ext}", mime
    return (name or "audio"), (client_type or "application/octet-stream")


# -------------------------------------------------------------------------------------- error mapping


def _looks_like_html(body: bytes, content_type: str) -> bool:
    return "html" in content_type or body.lstrip()[:1] == b"<"


async def raise_for_upstream(
    provider: str,
    response: httpx.Response,
    *,
    expect_json: bool = True,
    secrets: Iterable[str] = (),
) -> None:
    """Raise the gateway error for a failed upstream answer; return quietly for a usable one.

    Reads the body (also of a streamed response) when it needs it. A 2xx passes unless ``expect_json``
    and its body is empty or HTML. Provider fields (status, type, code, message, param) are kept; a
    ``retry-after`` header travels on the error for the router.
    """
    keys = tuple(secrets)
    content_type = response.headers.get("content-type", "").lower()
    if response.is_success:
        if not expect_json or "event-stream" in content_type:
            return
        body = await response.aread()
        if not body.strip() or _looks_like_html(body, content_type):
            what = "an empty body" if not body.strip() else "an HTML page"
            raise UpstreamUnavailable(
                f"{provider} answered {response.status_code} with {what} where JSON was expected",
                provider=provider,
            )
        return

    body = await response.aread()
    headers = {k: response.headers[k] for k in ("retry-after",) if k in response.headers}
    error = _error_object(body)
    if error is None:
        kind = "an empty body" if not body.strip() else (
            "an HTML page" if _looks_like_html(body, content_type) else "a non-JSON body"
        )
        raise scrub_error(UpstreamUnavailable(
            f"{provider} answered HTTP {response.status_code} with {kind}",
            provider=provider,
            headers=headers,
            extra={"upstream_status": response.status_code},
        ), keys)
    message = error.get("message")
    code = error.get("code")
    param = error.get("param")
    raise scrub_error(UpstreamError(
        str(message) if message else f"{provider} answered HTTP {response.status_code}",
        status=response.status_code,
        error_type=str(error.get("type") or "api_error"),
        code=None if code is None else str(code),
        param=None if param is None else str(param),
        provider=provider,
        headers=headers,
    ), keys)


def _error_object(body: bytes) -> dict[str, Any] | None:
    """The ``error`` object of an OpenAI-style body (also ``{"message": ...}`` or a bare string), else None."""
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict) and ("message" in inner or "code" in inner):
            return inner
        if isinstance(inner, str):
            return {"message": inner}
        if "detail" in data:  # FastAPI-style self-hosted servers
            return {"message": str(data["detail"])}
    return None


def parse_json(provider: str, response: httpx.Response) -> Any:
    """The JSON body of an already checked, already read 2xx answer; non-JSON is a 502."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(
            f"{provider} answered {response.status_code} with a body that is not JSON", provider=provider
        ) from None


def _timeout_cause(exc: BaseException) -> bool | None:
    """True for a timeout, False for an unreachable upstream, None when ``exc`` is neither.

    The aiohttp transport maps refused connections and server disconnects to ``httpx.ConnectTimeout``,
    so the underlying aiohttp exception decides first, httpx's class second.
    """
    cause = exc.__cause__
    if isinstance(cause, asyncio.TimeoutError):  # aiohttp.ServerTimeoutError is one too
        return True
    if isinstance(cause, (aiohttp.ClientError, OSError)):
        return False
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
        return True
    if isinstance(exc, (httpx.TransportError, aiohttp.ClientError, ConnectionError)):
        return False
    return None


@contextmanager
def map_transport_errors(
    provider: str,
    *,
    timeout: float | None = None,
    setting: str = "default_request_timeout_in_seconds",
    secrets: Iterable[str] = (),
) -> Iterator[None]:
    """Translate transport failures inside the block into UpstreamUnavailable (502) / UpstreamTimeout (504).

    Also catches ``TimeoutError`` from an ``asyncio.timeout`` deadline inside the block. ``setting`` names
    the knob to raise in the timeout message (the stream idle timeout for streams).
    """
    keys = tuple(secrets)
    try:
        yield
    except GatewayError:
        raise
    except Exception as exc:
        verdict = _timeout_cause(exc)
        if verdict is None:
            raise
        if verdict:
            after = f" within {timeout:.3g} s" if timeout is not None else " in time"
            raise UpstreamTimeout(
                f"{provider} did not answer{after}; raise network_config.{setting} for this provider "
                "if its transcriptions legitimately take longer",
                provider=provider,
            ) from exc
        reason = scrub(str(exc) or type(exc).__name__, keys)[:200]
        # A body cut short (reset or closed before Content-Length was met) is not "unreachable".
        broke_off = isinstance(exc.__cause__, aiohttp.ClientPayloadError) or isinstance(exc, httpx.RemoteProtocolError)
        what = f"{provider} broke off its answer" if broke_off else f"could not reach {provider}"
        raise UpstreamUnavailable(f"{what} ({type(exc).__name__}: {reason})", provider=provider) from exc
