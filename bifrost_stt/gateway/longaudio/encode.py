"""Pieces on the wire: a stretch of the decoded PCM encoded as FLAC (lossless) or Ogg Opus, in a spool file.

Each piece is encoded from the PCM file block by block into its own unlinked temporary file, so memory does
not grow with the piece or the recording; the piece is a ``FileAudio`` the providers stream like an upload,
named ``piece-NNN.flac`` / ``.ogg`` so no provider has to guess its format.

Byte budgets (``bytes_per_second``) are worst cases, so a piece planned under a byte limit stays under it:
FLAC never exceeds the PCM it holds by more than its frame headers (a verbatim subframe for noise), and
Opus at a fixed bit rate stays within a small margin of it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import av
import numpy as np

from bifrost_stt.gateway.longaudio.probe import SAMPLE_BYTES, Pcm
from bifrost_stt.kernel.canonical import FileAudio

OPUS_BITRATE = 24_000
BLOCK = 16_384  # samples per frame handed to the encoder (about 1 s)
HEADER_ALLOWANCE = 16 * 1024  # container headers, tags, seek tables

FORMATS = {
    # format: (container, codec, extension, content type)
    "flac": ("flac", "flac", "flac", "audio/flac"),
    "opus": ("ogg", "libopus", "ogg", "audio/ogg"),
}


def bytes_per_second(fmt: str, rate: int) -> float:
    """The most one second of audio can take in ``fmt`` (for planning pieces under a byte limit)."""
    if fmt == "opus":
        return OPUS_BITRATE / 8 * 1.25
    return rate * SAMPLE_BYTES * 1.02


def max_seconds_for(limit_bytes: int, fmt: str, rate: int) -> float:
    return max(0.0, (limit_bytes * 0.97 - HEADER_ALLOWANCE) / bytes_per_second(fmt, rate))


def encode(pcm: Pcm, start: int, end: int, fmt: str, index: int, spool_dir: str | None) -> FileAudio:
    """Samples ``[start, end)`` of ``pcm`` as one file in ``fmt``. Blocking: run it in a worker thread."""
    container_name, codec, ext, content_type = FORMATS[fmt]
    fd, path = tempfile.mkstemp(prefix="bifrost-piece-", suffix=f".{ext}", dir=spool_dir)
    os.unlink(path)
    try:
        with os.fdopen(os.dup(fd), "wb") as sink:
            _encode_into(sink, container_name, codec, pcm, start, end)
        size = os.fstat(fd).st_size
        head = os.pread(fd, 64, 0)
    except BaseException:
        os.close(fd)
        raise
    return FileAudio(fd=fd, size=size, filename=f"piece-{index:03d}.{ext}", content_type=content_type,
                     format=fmt if fmt == "flac" else "ogg", head=head)


def _encode_into(sink: Any, container_name: str, codec: str, pcm: Pcm, start: int, end: int) -> None:
    with av.open(sink, mode="w", format=container_name) as out:
        stream: Any = out.add_stream(codec, rate=pcm.rate)
        stream.layout = "mono"
        if codec == "libopus":
            stream.bit_rate = OPUS_BITRATE
            stream.format = "s16"
        pts = 0
        position = start
        while position < end:
            block = pcm.read(position, min(BLOCK, end - position))
            if not len(block):
                break
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block).reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = pcm.rate
            frame.pts = pts
            pts += len(block)
            position += len(block)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
