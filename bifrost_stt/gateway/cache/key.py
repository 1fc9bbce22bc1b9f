"""What a request asks of the cache (its headers) and the key its answer is stored under.

The key is a SHA-256 over a small canonical document: the partition (``x-bf-cache-key`` or the configured
default), the provider and model requested (each unless ``cache_by_provider``/``cache_by_model`` is off),
the audio's digest and size, and every parameter that changes the answer (response_format, language,
prompt, temperature, timestamp_granularities, file_format, and the fields passed on to the provider). The
filename and the stream flag are not in it: the same audio under another name is the same answer, and one
entry serves a streamed and a non-streamed request. Fallbacks are not in it either: they only matter when
the requested target fails.

The audio digest is XXH3-128, computed while the upload is spooled (``audio_hasher`` is handed to the
multipart reader), so the file is never read twice: about 0.1 ms for 5 MB where SHA-256 takes about 3 ms
and BLAKE2b about 5.5 ms (bench/cache.py). XXH3 is not a cryptographic hash: an accidental collision is out
of reach (2^-64 at four billion entries), but a client that can craft audio could aim for another's digest;
entries are only shared inside one partition, so give clients that must not trust each other their own keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from bifrost_stt.kernel.canonical import TranscriptionRequest
from bifrost_stt.kernel.durations import parse_duration
from bifrost_stt.kernel.errors import ClientError
from bifrost_stt.kernel.settings import CacheConfig

KEY_HEADER = "x-bf-cache-key"
TTL_HEADER = "x-bf-cache-ttl"
NO_STORE_HEADER = "x-bf-cache-no-store"
TYPE_HEADER = "x-bf-cache-type"

MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_PARTITION_CHARS = 512
_TRUE, _FALSE = ("true", "1", "t", "yes"), ("false", "0", "f", "no")


def audio_hasher() -> Any:
    """A fresh hashlib-like object for one upload (``update`` per chunk, ``digest`` at the end)."""
    return xxhash.xxh3_128()


async def audio_digest(chunks: AsyncIterable[bytes]) -> bytes:
    """The digest of audio that was not hashed while it arrived (a second read; only as a fallback)."""
    hasher = audio_hasher()
    async for chunk in chunks:
        hasher.update(chunk)
    digest: bytes = hasher.digest()
    return digest


@dataclass(frozen=True, slots=True)
class Directive:
    """What one request asks of the cache."""

    partition: str
    ttl: float  # seconds
    store: bool  # False with x-bf-cache-no-store: read, never write


def directive(headers: Mapping[str, str], config: CacheConfig) -> Directive | None:
    """The request's cache directive, or None when it has no cache key. A bad value is a 400 naming its header."""
    raw_key = headers.get(KEY_HEADER)
    if raw_key is not None:
        partition = raw_key.strip()
        if not partition:
            raise _bad(KEY_HEADER, "must not be empty")
        if len(partition) > MAX_PARTITION_CHARS:
            raise _bad(KEY_HEADER, f"must be at most {MAX_PARTITION_CHARS} characters")
    else:
        partition = config.default_cache_key or ""
    kind = headers.get(TYPE_HEADER)
    if kind is not None and kind.strip().lower() != "direct":
        raise _bad(TYPE_HEADER, "transcriptions are cached by exact match only: use direct, or leave the header out")
    ttl = config.ttl_seconds
    raw_ttl = headers.get(TTL_HEADER)
    if raw_ttl is not None:
        try:
            ttl = parse_duration(raw_ttl)
        except ValueError as exc:
            raise _bad(TTL_HEADER, str(exc)) from None
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise _bad(TTL_HEADER, f"must be more than 0 and at most 30 days, got {raw_ttl.strip()!r}")
    store = True
    raw_no_store = headers.get(NO_STORE_HEADER)
    if raw_no_store is not None:
        flag = raw_no_store.strip().lower()
        if flag not in _TRUE + _FALSE:
            raise _bad(NO_STORE_HEADER, f"must be true or false, got {raw_no_store.strip()!r}")
        store = flag in _FALSE
    if not partition:
        return None
    return Directive(partition=partition, ttl=ttl, store=store)


def _bad(header: str, why: str) -> ClientError:
    return ClientError(f"header {header} {why}", param=header, code="invalid_cache_header")


def entry_key(request: TranscriptionRequest, partition: str, digest: bytes, config: CacheConfig) -> str:
    """The entry's key (64 hex digits) for ``request`` in ``partition`` with audio of ``digest``."""
    document = [
        "transcription/v1",
        partition,
        request.provider if config.cache_by_provider else None,
        request.model if config.cache_by_model else None,
        digest.hex(),
        request.audio.size,
        request.response_format,
        request.language,
        request.prompt,
        request.temperature,
        sorted(request.timestamp_granularities),
        request.file_format,
        sorted(request.extra),
    ]
    return hashlib.sha256(orjson.dumps(document)).hexdigest()
