"""Canonical transcription types shared by handlers, the router and providers.

No vendor-named fields live here: whatever only one provider understands travels in
``TranscriptionRequest.extra`` and is read by that provider alone.

    handlers  --TranscriptionRequest-->  router  --(request, Attempt)-->  provider
    handlers  <--TranscriptionResult---  router  <--TranscriptionResult--  provider
                 or StreamEvent iterator            or StreamEvent iterator
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bifrost_stt.kernel.settings import Secret

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
TEXT_FORMATS = frozenset({"text", "srt", "vtt"})
DIARIZED_FORMAT = "diarized_json"  # speaker-labelled segments, one shape whoever diarized
# How a provider that diarizes but has no diarized_json of its own is asked to label speakers: every
# diarizing provider module takes this switch as sent (see docs/providers.md).
DIARIZE_SWITCH = ("diarize", "true")

CHUNK_SIZE = 64 * 1024


class AudioSource(Protocol):
    """The uploaded audio, readable as many times as there are attempts (fallbacks, retries)."""

    @property
    def filename(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def format(self) -> str | None:
        """The sniffed container/codec name ("wav", "mp3", ...), or None when unknown."""
        ...

    @property
    def head(self) -> bytes:
        """The first bytes, for sniffing."""
        ...

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Yield the whole file from its start, each call anew."""
        ...

    async def read(self) -> bytes:
        """The whole file in memory (for providers that must base64 it)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class BytesAudio:
    """An in-memory AudioSource (small uploads, tests)."""

    data: bytes
    filename: str = "audio"
    content_type: str = "application/octet-stream"
    format: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def head(self) -> bytes:
        return self.data[:64]

    async def chunks(self, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])

    async def read(self) -> bytes:
        return self.data

    def close(self) -> None:
        pass


@dataclass(slots=True)
class FileAudio:
    """An AudioSource spooled to an (unlinked) temporary file; read by offset so attempts can replay it."""

    fd: int
    size: int
    filename: str = "audio"
    content_type: str = "application/octet-stream"
    format: str | None = None
    head: bytes = b""

    async def chunks(self, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        offset = 0
        while offset < self.size:
            block = os.pread(self.fd, min(chunk_size, self.size - offset), offset)
            if not block:
                break
            offset += len(block)
            yield block

    async def read(self) -> bytes:
        return os.pread(self.fd, self.size, 0)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    """What the client asked for, independent of the route it came in on."""

    provider: str  # configured provider id ("openai", "azure", a custom name ...)
    model: str  # model as the client named it, without the provider prefix
    audio: AudioSource
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float | None = None
    timestamp_granularities: tuple[str, ...] = ()
    stream: bool = False
    file_format: str | None = None
    fallbacks: tuple[str, ...] = ()  # "provider/model" strings, in order
    # Fields the contract does not name (include[], chunking_strategy[type], a provider's own options):
    # passed through as (name, value) pairs, read only by providers that understand them.
    extra: tuple[tuple[str, str], ...] = ()
    direct_key: Secret | None = None  # a provider key the client sent, used only when the provider allows it


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Logprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    type: Literal["tokens", "duration"] = "tokens"
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    text_tokens: int | None = None
    audio_tokens: int | None = None
    seconds: int | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionResult:
    """A provider's answer in canonical form.

    ``native`` holds the provider's own rendering when it produced the requested text/srt/vtt body
    itself; renderers pass it through unchanged instead of re-rendering.
    """

    text: str
    language: str | None = None
    duration: float | None = None
    task: str = "transcribe"
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] = ()
    logprobs: tuple[Logprob, ...] = ()
    usage: Usage | None = None
    native: str | None = None
    native_format: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamDelta:
    delta: str
    logprobs: tuple[Logprob, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamDone:
    text: str
    usage: Usage | None = None
    logprobs: tuple[Logprob, ...] = ()


StreamEvent = StreamDelta | StreamDone
