"""Real speech for tests: espeak-ng sentences, resampled and joined with silences by sox (Debian packages).

``./dev test`` installs both when they are missing and it may (root). Without them, tests that need speech
are skipped with the reason, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

CACHE = Path(tempfile.gettempdir()) / "bifrost-stt-test-speech"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (Debian package {tool}; ./dev test installs it when run as root)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs {message}", pytrace=False)
        pytest.skip(message)
    return path


def speech_wav(sentences: Sequence[str], *, gap: float = 1.0, rate: int = 16000, lead: float = 0.3) -> Path:
    """A mono 16-bit WAV at ``rate`` Hz: ``lead`` s of silence, then each sentence followed by ``gap`` s of
    silence. Cached by content, so repeated calls are free. Returns the file's path."""
    espeak, sox = _need("espeak-ng"), _need("sox")
    key = hashlib.sha256(repr((list(sentences), gap, rate, lead)).encode()).hexdigest()[:16]
    out = CACHE / f"speech-{key}.wav"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        parts: list[str] = []
        for i, sentence in enumerate(sentences):
            raw, part = Path(tmp) / f"raw{i}.wav", Path(tmp) / f"part{i}.wav"
            subprocess.run([espeak, "-w", str(raw), sentence], check=True, capture_output=True, timeout=60)
            subprocess.run([sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(part), "pad",
                            "0", str(gap)], check=True, capture_output=True, timeout=60)
            parts.append(str(part))
        joined = Path(tmp) / "joined.wav"
        subprocess.run([sox, *parts, str(joined), "pad", str(lead), "0"] if len(parts) > 1 else
                       [sox, parts[0], str(joined), "pad", str(lead), "0"], check=True, capture_output=True, timeout=60)
        joined.replace(out)
    return out


def sentence_durations(sentences: Sequence[str], *, rate: int = 16000) -> list[float]:
    """How long espeak-ng speaks each sentence (seconds), to know where each one starts in ``speech_wav``."""
    sox = _need("sox")
    durations = []
    for sentence in sentences:
        path = speech_wav([sentence], gap=0.0, rate=rate, lead=0.0)
        done = subprocess.run([sox, "--i", "-D", str(path)], check=True, capture_output=True, text=True, timeout=30)
        durations.append(float(done.stdout.strip()))
    return durations
