"""Small real audio files made on the fly (no fixtures on disk)."""

from __future__ import annotations

import io
import math
import struct
import wave


def wav_bytes(seconds: float = 0.2, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV with a 440 Hz tone."""
    frames = int(seconds * rate)
    samples = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return out.getvalue()


def wav_of_size(size: int) -> bytes:
    """A valid WAV header followed by ``size`` bytes of silence-ish PCM."""
    header = wav_bytes(0.0)
    body = bytes(size - len(header)) if size > len(header) else b""
    riff = header[:4] + struct.pack("<I", 36 + len(body)) + header[8:40] + struct.pack("<I", len(body))
    return riff + body
