"""Audio seconds for metering: the provider's usage, else the answer's duration, else the file's own header."""

from __future__ import annotations

import os
import tempfile

import pytest

from bifrost_stt.kernel.duration import audio_seconds, file_duration, wav_duration
from bifrost_stt.gateway.observe.metrics import ERROR_TYPES, error_type
from bifrost_stt.kernel.canonical import BytesAudio, FileAudio, TranscriptionResult, Usage
from tests.audio import wav_bytes


def test_usage_wins_then_duration_then_the_file() -> None:
    audio = BytesAudio(wav_bytes(1.5), filename="a.wav")
    with_usage = TranscriptionResult(text="x", duration=9.0, usage=Usage(type="duration", seconds=7))
    assert audio_seconds(with_usage, audio=audio) == 7.0
    assert audio_seconds(TranscriptionResult(text="x", duration=9.0), audio=audio) == 9.0
    assert audio_seconds(TranscriptionResult(text="x"), audio=audio) == pytest.approx(1.5)
    assert audio_seconds(TranscriptionResult(text="x", usage=Usage(type="tokens", input_tokens=3))) is None
    assert audio_seconds(usage=None, file_seconds=2.5) == 2.5


@pytest.mark.parametrize("seconds", [0.1, 1.0, 12.25])
def test_wav_header(seconds: float) -> None:
    data = wav_bytes(seconds)
    assert wav_duration(data[:64], len(data)) == pytest.approx(seconds, abs=1e-3)


def test_streamed_wav_with_unknown_data_size_uses_the_file_size() -> None:
    data = bytearray(wav_bytes(2.0))
    data[40:44] = b"\xff\xff\xff\xff"  # the data chunk's size as a streaming writer leaves it
    assert wav_duration(bytes(data[:64]), len(data)) == pytest.approx(2.0, abs=1e-3)


def test_spooled_file_and_unknown_formats() -> None:
    data = wav_bytes(3.0)
    fd, path = tempfile.mkstemp()
    os.write(fd, data)
    os.unlink(path)
    audio = FileAudio(fd=fd, size=len(data), head=data[:64])
    try:
        assert file_duration(audio) == pytest.approx(3.0, abs=1e-3)
    finally:
        audio.close()
    assert file_duration(BytesAudio(b"\x00" * 100)) is None  # not audio: unknown, never zero


def test_error_types_come_from_upstreams_closed_vocabulary() -> None:
    def provider(status: int, kind: str = "api_error", code: str | None = None) -> dict[str, object]:
        return {"is_bifrost_error": False, "status_code": status, "error": {"type": kind, "code": code}}

    def ours(status: int, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, object]:
        return {"is_bifrost_error": True, "status_code": status, "error": {"type": kind, "code": code}}

    cases = {
        "provider_auth_failed": (401, provider(401)),
        "provider_rate_limited": (429, provider(429)),
        "provider_server_error": (500, provider(500)),
        "provider_overloaded": (503, provider(503)),
        "provider_timeout": (504, ours(504, "upstream_timeout")),
        "provider_connection_failed": (502, ours(502, "upstream_unavailable")),
        "caller_invalid_request": (400, provider(400)),
        "caller_model_not_available": (400, ours(400, code="model_not_allowed")),
        "caller_model_unknown": (400, ours(400, code="provider_not_configured")),
        "caller_cancelled": (499, None),
        "policy_budget_exceeded": (402, ours(402, code="budget_exceeded")),
        "policy_access_denied": (401, ours(401, "authentication_error")),
        "bifrost_dropped": (503, ours(503, "service_unavailable")),
        "bifrost_internal": (500, ours(500, "server_error")),
    }
    for expected, (status, body) in cases.items():
        assert error_type(status, body) == expected, expected
        assert expected in ERROR_TYPES
