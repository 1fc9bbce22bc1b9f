"""The local engine's machinery: audio decoded with PyAV, Whisper models loaded once per process, and
decodes run on a bounded pool of threads so CPU work never blocks the event loop.

    bytes --decode (PyAV)--> 16 kHz mono float32 --model.transcribe (faster-whisper, on a pool thread)-->
          DecodeInfo, then one faster-whisper Segment at a time --asyncio queue--> ``Pool.run`` (async iterator)

Imported only when a local provider is built (``providers.local``): it needs the ``bifrost-stt[local]``
extra (faster-whisper, which brings ctranslate2, PyAV, onnxruntime for the VAD, numpy).

Why threads and not processes: CTranslate2 releases the GIL while it computes, and one loaded model serves
``num_workers`` concurrent ``transcribe`` calls (its own inter-op workers), so N threads share one copy of
the weights; processes would each hold their own. Decoding audio with PyAV also runs without the GIL.

Cancellation: ``Pool.run`` sets its job's ``threading.Event`` when the consumer stops (client gone,
stream closed); the pool thread checks it before each segment, so the decode stops at the next segment
boundary (a segment in progress, at most one 30 s window, finishes first).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

log = logging.getLogger("bifrost_stt.providers.local")

SAMPLE_RATE = 16000  # what Whisper's feature extractor expects


class AudioError(Exception):
    """The upload cannot be decoded as audio (or holds none)."""


class AudioTooLong(AudioError):
    """The audio is longer than the engine's ``max_audio_seconds``."""


class ModelUnavailable(Exception):
    """A model could not be loaded (missing folder, no network for a by-name model, bad files)."""


# ------------------------------------------------------------------------------------------- audio


def decode(data: bytes, max_seconds: float) -> np.ndarray:
    """Any container/codec FFmpeg reads (wav, mp3, m4a/mp4, ogg/opus, webm, flac ...) as 16 kHz mono float32.

    Refuses (``AudioError``) what is not audio, a file without an audio stream, and one that decodes to
    nothing; ``AudioTooLong`` as soon as the decoded audio passes ``max_seconds`` (memory stays bounded:
    4 bytes per sample, 230 MB per hour). A file that breaks off mid-way keeps what decoded before the break.
    """
    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def take(frames: list[Any]) -> None:
        nonlocal total
        for out in frames:
            samples = out.to_ndarray().reshape(-1)
            total += samples.shape[0]
            if total > limit:
                raise AudioTooLong(f"the audio is longer than {max_seconds:g} s")
            chunks.append(samples)

    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError("the file holds no audio stream")
            frames = container.decode(audio=0)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.InvalidDataError:
                    if not chunks:
                        raise
                    log.info("the audio breaks off after %.1f s; transcribing what decoded", total / SAMPLE_RATE)
                    break
                frame.pts = None  # out-of-order timestamps must not stop the resampler
                take(resampler.resample(frame))
            take(resampler.resample(None))  # flush
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError, OSError) as exc:
        raise AudioError(f"the file could not be decoded as audio ({_reason(exc)})") from None
    if total == 0:
        raise AudioError("the file decodes to no audio samples")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words without the errno and the '<none>' file name PyAV appends for in-memory input."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).split(": '<none>'")[0]


# ------------------------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One loaded model: the same spec is loaded once per process and shared by every provider using it."""

    source: str  # a model folder, a faster-whisper size name ("small"), or a model id on the hub
    compute_type: str
    cpu_threads: int
    num_workers: int  # concurrent transcribe() calls the model runs in parallel


_models: dict[ModelSpec, Future[Any]] = {}
_models_lock = threading.Lock()
# One loader thread: loads are rare, and one at a time keeps the memory peak of a cold start down.
_loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bifrost-local-load")


def load(spec: ModelSpec) -> Future[Any]:
    """The model for ``spec``, loading in the background on first call; a failed load is tried again
    by the next call (a download may work later), a loaded model is kept for the life of the process."""
    with _models_lock:
        future = _models.get(spec)
        if future is None or (future.done() and future.exception() is not None):
            future = _loader.submit(_load, spec)
            _models[spec] = future
        return future


def _load(spec: ModelSpec) -> Any:
    from faster_whisper import WhisperModel

    try:
        model = WhisperModel(
            spec.source, device="cpu", compute_type=spec.compute_type,
            cpu_threads=spec.cpu_threads, num_workers=spec.num_workers,
        )
    except Exception as exc:  # the hub, the file system and CTranslate2 each raise their own kinds
        log.warning("local model %s could not be loaded: %s", spec.source, exc)
        raise ModelUnavailable(f"{type(exc).__name__}: {exc}") from exc
    log.info("local model %s loaded (%s, %d threads, %d workers)", spec.source, spec.compute_type,
             spec.cpu_threads, spec.num_workers)
    return model


def loaded_models() -> int:
    """How many models this process holds (for tests and the benchmark)."""
    with _models_lock:
        return sum(1 for f in _models.values() if f.done() and f.exception() is None)


# ------------------------------------------------------------------------------------------- decode


@dataclass(frozen=True, slots=True)
class DecodeInfo:
    language: str
    language_probability: float
    duration: float  # seconds of decoded audio


Event = DecodeInfo | Any  # DecodeInfo once, then faster-whisper Segments
_END = object()


class Pool:
    """A bounded set of decode threads. The router's admission keeps at most ``workers`` jobs running."""

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bifrost-local")
        self._running: set[threading.Event] = set()
        self._closed = False

    async def run(
        self, model: Any, data: bytes, options: Mapping[str, Any], max_seconds: float
    ) -> AsyncGenerator[Event, None]:
        """Decode ``data`` and transcribe it on a pool thread: a DecodeInfo, then each segment as soon as
        it is decoded. Errors from the thread (AudioError, the engine's own) are raised here. Closing the
        iterator early stops the thread at its next segment."""
        if self._closed:
            raise RuntimeError("the local engine is shut down")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(kind: str, value: Any) -> bool:
            if cancelled.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                cancelled.set()
                return False
            return True

        self._running.add(cancelled)
        job = self._executor.submit(_job, model, data, dict(options), max_seconds, emit, cancelled)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                if value is _END:
                    return
                yield value
        finally:
            cancelled.set()
            job.cancel()  # still queued: never starts
            self._running.discard(cancelled)

    def close(self) -> None:
        """Stop every running decode at its next segment and let the threads go."""
        self._closed = True
        for cancelled in list(self._running):
            cancelled.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _job(
    model: Any,
    data: bytes,
    options: dict[str, Any],
    max_seconds: float,
    emit: Callable[[str, Any], bool],
    cancelled: threading.Event,
) -> None:
    """One transcription, on a pool thread. Every outcome reaches the consumer as an event."""
    try:
        audio = decode(data, max_seconds)
        if cancelled.is_set():
            return
        # VAD, features and (for multilingual models) language detection happen here, before any segment.
        segments, info = model.transcribe(audio, **options)
        emit("info", DecodeInfo(str(info.language), float(info.language_probability), audio.shape[0] / SAMPLE_RATE))
        for segment in segments:
            if cancelled.is_set() or not emit("segment", segment):
                log.info("local decode stopped early: the client went away")
                return
        emit("end", _END)
    except BaseException as exc:  # handed to the consumer, which maps it to the error tree
        emit("error", exc)
