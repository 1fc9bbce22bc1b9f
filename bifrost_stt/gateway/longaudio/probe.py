"""Reading an upload with PyAV: how long it is (``duration``) and its samples as 16 kHz mono PCM (``decode``).

Both read the spooled upload in place (a ``FileAudio`` by ``pread``, a ``BytesAudio`` from memory); nothing
holds the whole file. ``decode`` writes the samples to an unlinked temporary file, one pass over the input,
so memory stays the same for two minutes or two hours; the pieces are cut and encoded from that file.
Every function here blocks: callers run them in a worker thread.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

RATE = 16000  # what speech models decode at (Whisper resamples everything to 16 kHz mono)
SAMPLE_BYTES = 2  # s16


class Undecodable(Exception):
    """The upload could not be decoded (not audio PyAV knows, or corrupt)."""


class TooLong(Exception):
    """The audio decodes to more than the gateway takes (``long_audio.max_audio_seconds``)."""


def _open(source: Any) -> Any:
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise Undecodable(str(exc) or type(exc).__name__) from exc


def duration(source: Any) -> float | None:
    """Seconds of audio as the container declares it (headers only, no decoding); None when unknown."""
    with _open(source) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise Undecodable("no audio stream")
        stream = streams[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return float(container.duration) / 1_000_000  # AV_TIME_BASE
        return None


@dataclass(slots=True)
class Pcm:
    """Decoded audio: ``samples`` s16 mono samples at ``RATE`` in an unlinked file. ``close`` frees it."""

    fd: int
    samples: int
    rate: int = RATE

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    def read(self, start: int, count: int) -> np.ndarray[Any, np.dtype[np.int16]]:
        """Samples ``[start, start + count)`` (fewer at the end)."""
        start = max(0, start)
        count = max(0, min(count, self.samples - start))
        data = os.pread(self.fd, count * SAMPLE_BYTES, start * SAMPLE_BYTES)
        return np.frombuffer(data, dtype=np.int16)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a stream abandoned before its first read still frees the file
        self.close()


def decode(source: Any, spool_dir: str | None, max_seconds: float | None = None) -> Pcm:
    """Decode the first audio stream to 16 kHz mono s16 in an unlinked temporary file, in one pass.

    A disk that fills up raises ``OSError`` and leaves nothing behind (the file was unlinked at birth).
    Audio longer than ``max_seconds`` raises ``TooLong`` as soon as it gets there: a small, very compressed
    upload must not fill the disk with its decoded samples.
    """
    limit = None if max_seconds is None else int(max_seconds * RATE) * SAMPLE_BYTES
    fd, path = tempfile.mkstemp(prefix="bifrost-pcm-", dir=spool_dir)
    os.unlink(path)
    written = 0
    try:
        with _open(source) as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise Undecodable("no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            try:
                for frame in container.decode(streams[0]):
                    for out in resampler.resample(frame):
                        written += _write(fd, out)
                    if limit is not None and written > limit:
                        raise TooLong()
                for out in resampler.resample(None):
                    written += _write(fd, out)
            except av.FFmpegError as exc:
                if written == 0:
                    raise Undecodable(str(exc)) from exc
                # a damaged tail: what decoded is kept, as players do
        if written == 0:
            raise Undecodable("no audio samples")
        return Pcm(fd, written // SAMPLE_BYTES)
    except BaseException:
        os.close(fd)
        raise


def _write(fd: int, frame: Any) -> int:
    data = memoryview(frame.planes[0])[: frame.samples * SAMPLE_BYTES]
    total = len(data)
    while data:
        data = data[os.write(fd, data):]
    return total
