"""A fake OpenAI-protocol upstream that "hears" what is in each piece of audio it is sent, deterministically.

It decodes every upload (PyAV), checks it against the limits it was given (``max_bytes``, ``max_seconds``:
any violation is recorded in ``violations``, so a test asserts none happened) and answers from the audio:

    sentences  each stretch of sound (pauses under 0.4 s merged) is the known sentence whose length is
               closest (``voices``: sentence -> seconds of voice); a stretch matching none is "<fragment>",
               so a cut through a sentence shows in the transcript
    chirp      a tone whose pitch rises ``CHIRP_SLOPE`` Hz per second from ``CHIRP_BASE`` tells the absolute
               time: each whole second n inside the piece is a word "tN" starting at n (0.4 s long)

``fail_when(text)``: answer 500 for a piece whose transcript contains ``text`` (to fail one piece).
``latency_per_second``: answer after this many seconds per second of audio (benchmarks).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from typing import Any

import av
import numpy as np

from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import Recorded, Reply, error_reply

RATE = 16000
CHIRP_BASE = 300.0
CHIRP_SLOPE = 20.0
GAP_MERGE = 0.4


def decode(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def voiced(samples: np.ndarray[Any, Any]) -> list[tuple[float, float]]:
    """Stretches of sound (start, end) in seconds; pauses shorter than ``GAP_MERGE`` do not split one."""
    hop = RATE // 50
    frames = len(samples) // hop
    if not frames:
        return []
    rms = np.sqrt(np.mean(samples[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    loud = rms > 0.01
    spans: list[list[float]] = []
    for i, on in enumerate(loud):
        if not on:
            continue
        t = i * hop / RATE
        if spans and t - spans[-1][1] < GAP_MERGE:
            spans[-1][1] = t + hop / RATE
        else:
            spans.append([t, t + hop / RATE])
    return [(a, b) for a, b in spans]


def chirp(seconds: float) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * (CHIRP_BASE * t + CHIRP_SLOPE * t * t / 2)
    return (np.sin(phase) * 12000).astype(np.int16)


def chirp_start(samples: np.ndarray[Any, Any]) -> float:
    """The absolute time of a chirp piece's first sample, from its zero crossings over the first 2 s."""
    head = samples[: 2 * RATE].astype(np.float64)
    sign = np.signbit(head)
    idx = np.nonzero(sign[1:] != sign[:-1])[0]
    times = (idx + head[idx] / (head[idx] - head[idx + 1])) / RATE  # interpolated crossings
    freq = (len(times) - 1) / (2 * (times[-1] - times[0]))  # the mean frequency between first and last
    middle = (times[-1] + times[0]) / 2
    return (freq - CHIRP_BASE) / CHIRP_SLOPE - middle


class FakeListener(FakeOpenAI):
    vendor = "openai"

    def _defaults(self) -> None:
        super()._defaults()
        self.mode = "sentences"
        self.voices: Mapping[str, float] = {}
        self.max_bytes: int | None = None
        self.max_seconds: float | None = None
        self.fail_when: str | None = None
        self.latency_per_second = 0.0
        self.violations: list[str] = []
        self.pieces: list[tuple[int, float]] = []  # (bytes, seconds) of every upload heard
        self._count = threading.Lock()

    def hear(self, samples: np.ndarray[Any, Any]) -> list[tuple[float, float, str]]:
        if self.mode == "chirp":
            start = chirp_start(samples)
            length = len(samples) / RATE
            first = int(np.ceil(start - 1e-3))
            return [(n - start, n - start + 0.4, f"t{n}") for n in range(first, int(start + length - 0.4) + 1)]
        out = []
        for a, b in voiced(samples):
            name, best = "<fragment>", 0.35
            for sentence, length in self.voices.items():
                if abs(length - (b - a)) < best:
                    name, best = sentence, abs(length - (b - a))
            out.append((a, b, name))
        return out

    def handle(self, request: Recorded) -> Reply:
        model, failure = self.route(request)
        failure = failure or self.authorize(request)
        if failure is not None:
            return failure
        file = request.file
        if file is None:
            return error_reply(400, "file is required", param="file")
        samples = decode(file.data)
        seconds = len(samples) / RATE
        with self._count:
            self.pieces.append((len(file.data), seconds))
            if self.max_bytes is not None and len(file.data) > self.max_bytes:
                self.violations.append(f"{file.filename}: {len(file.data)} bytes > {self.max_bytes}")
            if self.max_seconds is not None and seconds > self.max_seconds:
                self.violations.append(f"{file.filename}: {seconds:.2f} s > {self.max_seconds}")
        heard = self.hear(samples)
        text = " ".join(t for _, _, t in heard)
        if self.fail_when is not None and self.fail_when in text:
            return error_reply(500, "the model failed on this audio", type_="server_error")
        fmt = request.field("response_format") or "json"
        body: dict[str, Any] = {"text": text}
        if fmt == "verbose_json":
            body.update(task="transcribe", language="english", duration=round(seconds, 3),
                        segments=[{"id": i, "seek": 0, "start": round(a, 3), "end": round(b, 3), "text": " " + t}
                                  for i, (a, b, t) in enumerate(heard)],
                        words=[{"word": t, "start": round(a, 3), "end": round(b, 3)} for a, b, t in heard])
        body["usage"] = {"type": "duration", "seconds": int(np.ceil(seconds))}
        if fmt == "text":
            return Reply(body=text + "\n", content_type="text/plain; charset=utf-8",
                         delay=self.latency_per_second * seconds)
        return Reply(body=body, delay=self.latency_per_second * seconds)
