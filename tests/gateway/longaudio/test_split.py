"""Split without HTTP: the request's record and progress, failure of one piece, the other pieces cancelled."""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
import pytest

from bifrost_stt.gateway.longaudio import LongAudio
from bifrost_stt.kernel import progress, record
from bifrost_stt.kernel.canonical import BytesAudio, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.capabilities import Capabilities
from bifrost_stt.kernel.errors import UpstreamError
from bifrost_stt.kernel.settings import LongAudioConfig

RATE = 16000
CAPS = Capabilities(native_formats=frozenset({"json"}), native_stream=False, word_timestamps=False,
                    segment_timestamps=False, max_duration_s=10.0)


def bursts(seconds: int) -> bytes:
    one = np.concatenate([np.full(RATE * 2, 3000, np.int16) * np.sign(np.sin(np.arange(RATE * 2))).astype(np.int16),
                          np.zeros(RATE, np.int16)])
    samples = np.tile(one, seconds // 3)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def request(audio: bytes) -> TranscriptionRequest:
    return TranscriptionRequest(provider="p", model="m", audio=BytesAudio(audio, "a.wav", format="wav"))


async def test_progress_and_the_record_say_how_many_pieces() -> None:
    long_audio = LongAudio(LongAudioConfig(min_piece_seconds=3.0, max_parallel_chunks=2))
    split = await long_audio.prepare(request(bursts(45)), [("p", "m", CAPS)])
    assert split is not None
    seen: list[tuple[int, int]] = []

    async def call(piece: TranscriptionRequest) -> tuple[TranscriptionResult, str]:
        await asyncio.sleep(0.01)
        return TranscriptionResult(text=piece.audio.filename), "served"

    rec = record.RequestRecord(operation="createTranscription")
    with record.bind(rec), progress.reporting(lambda done, total: seen.append((done, total))):
        async with split:
            result, served = await split.transcribe(call)
    n = len(split.pieces)
    assert n >= 5 and rec.pieces == n and served == ["served"] * n
    assert seen[0] == (0, n) and seen[-1] == (n, n) and [d for d, _ in seen] == list(range(n + 1))
    assert result.text == " ".join(f"piece-{i:03d}.flac" for i in range(n))
    long_audio.close()


async def test_a_failing_piece_cancels_the_others_and_names_its_range() -> None:
    long_audio = LongAudio(LongAudioConfig(min_piece_seconds=3.0, max_parallel_chunks=8))
    split = await long_audio.prepare(request(bursts(45)), [("p", "m", CAPS)])
    assert split is not None
    cancelled = 0
    others_running = asyncio.Event()

    async def call(piece: TranscriptionRequest) -> tuple[TranscriptionResult, str]:
        nonlocal cancelled
        if piece.audio.filename == "piece-001.flac":
            await others_running.wait()  # fail while other pieces are in flight
            raise UpstreamError("boom", status=503)
        others_running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        raise AssertionError("not cancelled")

    with pytest.raises(UpstreamError) as caught:
        async with split:
            await asyncio.wait_for(split.transcribe(call), 10)
    assert caught.value.status == 503
    assert caught.value.message.startswith(f"piece 2 of {len(split.pieces)} (0:")
    assert caught.value.message.endswith(") failed: boom")
    assert cancelled >= 1
    assert split.pcm.fd == -1  # the decoded audio is gone
    long_audio.close()


async def test_audio_within_the_cap_is_not_split() -> None:
    long_audio = LongAudio(LongAudioConfig())
    assert await long_audio.prepare(request(bursts(9)), [("p", "m", CAPS)]) is None
    assert await long_audio.prepare(request(bursts(45)), [("p", "m", None)]) is None  # primary not configured
    disabled = LongAudio(LongAudioConfig(enabled=False))
    assert await disabled.prepare(request(bursts(45)), [("p", "m", CAPS)]) is None
    long_audio.close(), disabled.close()
