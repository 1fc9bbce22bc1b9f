"""Audio seconds of one request, for every response format (so ``text`` is metered like ``verbose_json``).

In order: the provider's usage (``seconds``), the result's own ``duration`` (verbose_json), the file's
header. The header reader knows WAV (RIFF/WAVE, RF64 aside) exactly and nothing else; other containers
give ``None`` here. ``measure`` is the one call the rest of governance makes, so a fuller meter (the
observe room's decoder-based one) replaces it in one place.
"""

from __future__ import annotations

import os
import struct

from bifrost_stt.kernel.canonical import AudioSource, TranscriptionResult

_HEADER_BYTES = 4096


def measure(result: TranscriptionResult | None, file_seconds: float | None) -> float | None:
    if result is not None:
        usage = result.usage
        if usage is not None and usage.seconds is not None and usage.seconds > 0:
            return float(usage.seconds)
        if result.duration is not None and result.duration > 0:
            return float(result.duration)
    return file_seconds


def file_seconds(audio: AudioSource) -> float | None:
    """The file's duration from its header, or None when the format is not one read here."""
    try:
        return wav_seconds(_header(audio), audio.size)
    except (OSError, struct.error, ValueError):
        return None


def _header(audio: AudioSource) -> bytes:
    data = getattr(audio, "data", None)
    if isinstance(data, bytes | bytearray):
        return bytes(data[:_HEADER_BYTES])
    fd = getattr(audio, "fd", None)
    if isinstance(fd, int):
        return os.pread(fd, _HEADER_BYTES, 0)
    return audio.head


def wav_seconds(header: bytes, size: int) -> float | None:
    """Seconds of PCM in a RIFF/WAVE file: the data chunk's length (or the rest of the file, when the
    header says 0 or more than there is, as streaming writers do) over the fmt chunk's byte rate."""
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(header):
        chunk, length = header[offset:offset + 4], struct.unpack_from("<I", header, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt " and body + 12 <= len(header):
            byte_rate = struct.unpack_from("<I", header, body + 8)[0]
        elif chunk == b"data":
            if byte_rate <= 0:
                return None
            available = size - body
            if length == 0 or length > available:
                length = available
            return float(length) / float(byte_rate)
        offset = body + length + (length & 1)
    return None
