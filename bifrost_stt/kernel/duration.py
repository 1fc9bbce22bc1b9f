"""How many seconds of audio a request carried: the one meter behind metrics, request logs and billing.

In order of trust: the provider's own usage (``Usage.seconds``), the duration a rich answer reports
(verbose_json), then the file itself: a WAV header is read directly; other containers through PyAV when it
is installed (``av``, imported on use). ``None`` means unknown, never zero. ``PreadFile`` / ``readable``
give decoders a file object over a spooled upload without moving its shared offset.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from typing import Any

from bifrost_stt.kernel.canonical import AudioSource, BytesAudio, FileAudio, TranscriptionResult, Usage

log = logging.getLogger("bifrost_stt.duration")

HEADER_BYTES = 4096  # enough for a WAV's fmt and data chunk headers, LIST chunks included


def audio_seconds(
    result: TranscriptionResult | None = None,
    usage: Usage | None = None,
    audio: AudioSource | None = None,
    *,
    file_seconds: float | None = None,
) -> float | None:
    """The best-known duration: usage seconds, else the result's duration, else the file's own length.

    ``file_seconds`` is a length already read from the file (a stream reads it before the upload is
    released); otherwise ``audio`` is read when the provider said nothing.
    """
    usage = usage or (result.usage if result is not None else None)
    if usage is not None and usage.seconds is not None and usage.seconds > 0:
        return float(usage.seconds)
    if result is not None and result.duration is not None and result.duration > 0:
        return float(result.duration)
    if file_seconds is not None:
        return file_seconds
    return file_duration(audio) if audio is not None else None


def file_duration(audio: AudioSource) -> float | None:
    """The file's length from its own header (WAV) or decoder (PyAV); ``None`` when neither can tell."""
    try:
        seconds = wav_duration(_header(audio), audio.size)
        if seconds is not None:
            return seconds
        return _av_duration(audio)
    except Exception:  # a broken file must never break the request it came with
        log.debug("could not read the audio length", exc_info=True)
        return None


def wav_duration(head: bytes, size: int) -> float | None:
    """RIFF/WAVE: bytes of sample data / byte rate. The data chunk's size is trusted up to the file's size
    (streamed WAVs write 0 or 0xFFFFFFFF there)."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(head):
        chunk, length = head[offset:offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt " and body + 12 <= len(head):
            byte_rate = struct.unpack_from("<I", head, body + 8)[0]
        elif chunk == b"data":
            available = max(0, size - body)
            data = length if 0 < length <= available else available
            return data / byte_rate if byte_rate else None
        offset = body + length + (length & 1)
    if byte_rate:  # the data chunk starts beyond the head read: assume the canonical 44-byte header
        return max(0, size - 44) / byte_rate
    return None


class PreadFile(io.RawIOBase):
    """A read-only, seekable file object over a spooled upload's descriptor; never moves the shared offset."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, min(len(view), max(0, self._size - self._pos)), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def readable(audio: AudioSource) -> io.RawIOBase | io.BytesIO | None:
    """A blocking file object over ``audio`` when it is held in a way that allows one (both of ours)."""
    if isinstance(audio, FileAudio):
        return PreadFile(audio.fd, audio.size)
    if isinstance(audio, BytesAudio):
        return io.BytesIO(audio.data)
    return None


def _header(audio: AudioSource) -> bytes:
    if isinstance(audio, BytesAudio):
        return bytes(audio.data[:HEADER_BYTES])
    if isinstance(audio, FileAudio):
        return os.pread(audio.fd, HEADER_BYTES, 0)
    return audio.head


def _av_duration(audio: AudioSource) -> float | None:
    try:
        import av  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    source = readable(audio)
    if source is None:
        return None
    with av.open(io.BufferedReader(source) if isinstance(source, PreadFile) else source, mode="r") as container:
        if container.duration:
            return float(container.duration) / 1_000_000  # av.time_base
        stream = next(iter(container.streams.audio), None)
        if stream is not None and stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
    return None
