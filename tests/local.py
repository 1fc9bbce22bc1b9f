"""Helpers for the local engine's tests: sentences with known text, a word-overlap score, a provider config
read the way a config file is, and the audio re-encoded with PyAV into other containers.

The engine needs the ``bifrost-stt[local]`` extra (``./dev`` installs it); without it these tests skip, except
under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import io
import os
import re
import wave
from pathlib import Path
from typing import Any

import pytest

from bifrost_stt.gateway.config.load import from_document
from bifrost_stt.kernel.settings import GatewayConfig, ProviderConfig
from bifrost_stt.providers import registry

if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    import faster_whisper  # noqa: F401  (CI must have the engine: fail, never skip)
else:
    pytest.importorskip("faster_whisper", reason="the local engine is not installed (pip install '.[local]')")

# Synthetic speech costs tiny.en a few words ("quick round fox" for "quick brown fox"), more after a lossy
# codec: these two come through wav, mp3, opus, flac and aac alike; thresholds allow for the rest.
SENTENCES = [
    "Our meeting starts at nine and ends before lunch.",
    "The library will be closed on Monday for repairs.",
]
# Enough speech for several 30 s decoding windows (VAD drops the gaps): segments arrive over time.
LONG = [
    "The weather today is sunny with a light breeze from the west.",
    "Our meeting starts at nine and ends before lunch.",
    "Please remember to bring the quarterly report and your laptop.",
    "The train to the city leaves from platform four every hour.",
    "She planted tomatoes, beans and carrots in the garden last spring.",
    "A good night of sleep helps the brain store new memories.",
    "The museum opens a new exhibition about ancient ships next week.",
    "He fixed the old bicycle and rode it to the market.",
    "Children learn languages quickly when they hear them every day.",
    "The library will be closed on Monday for repairs.",
    "Fresh bread from the bakery smells wonderful in the morning.",
    "The river flows slowly through the valley towards the sea.",
    "Our team finished the project two days ahead of schedule.",
    "Mountains look blue from far away because of the air.",
]
THRESHOLD = 0.7

_WORD = re.compile(r"[a-z0-9']+")


_NUMBERS = dict(enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split()))


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; Whisper writes small numbers as digits ("9"): spelled out."""
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in _WORD.findall(text.lower())]


def overlap(expected: str, got: str) -> float:
    """The share of the expected words that the transcript has (each counted as often as expected)."""
    want, have = words(expected), words(got)
    if not want:
        return 1.0 if not have else 0.0
    pool = list(have)
    hits = 0
    for word in want:
        if word in pool:
            pool.remove(word)
            hits += 1
    return hits / len(want)


def local_document(**options: Any) -> dict[str, Any]:
    return {"providers": {"local": options}}


def local_gateway_config(**options: Any) -> GatewayConfig:
    """A config file with ``providers.local`` (read by the real loader), plus more providers if given."""
    extra = options.pop("_providers", {})
    document = {"providers": {"local": options, **extra}}
    return from_document(document, os.environ, registry.known())


def local_config(**options: Any) -> ProviderConfig:
    return local_gateway_config(**options).providers["local"]


def encode(wav: Path, container: str, codec: str, rate: int = 16000) -> bytes:
    """``wav`` re-encoded with PyAV (FFmpeg) as ``codec`` in ``container`` (mp3, ogg/opus, flac, m4a, webm)."""
    import av

    out = io.BytesIO()
    with av.open(str(wav)) as src, av.open(out, "w", format=container) as dst:
        stream: Any = dst.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for frame in src.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def silence_wav(seconds: float, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of digital silence."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(int(seconds * rate) * 2))
    return out.getvalue()
