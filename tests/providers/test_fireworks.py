"""fireworks: hosts per model, native formats and extras on a fake on 127.0.0.1, then the openai SDK end to end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from bifrost_stt.server.app import create_app
from bifrost_stt.kernel.canonical import BytesAudio, TranscriptionRequest
from bifrost_stt.kernel.errors import UpstreamError, envelope
from bifrost_stt.kernel.settings import KeyConfig, NetworkConfig, ProviderConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber
from bifrost_stt.providers.openai_compat import OpenAICompatible
from bifrost_stt.providers.openai_family import FIREWORKS, fireworks_url
from tests.audio import wav_bytes
from tests.fakes.openai import TRANSCRIPT
from tests.fakes.vllm import FIREWORKS_KEY, FakeFireworks
from tests.support import built, config_with, serve

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(2000)


def config(fake: FakeFireworks) -> ProviderConfig:
    return ProviderConfig(
        id="fireworks", kind="fireworks", keys=(KeyConfig(name="fw-main", value=Secret(FIREWORKS_KEY)),),
        network=NetworkConfig(base_url=fake.url, default_request_timeout_in_seconds=5),
    )


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="fireworks", model="whisper-v3", **kw)


def attempt(model: str = "whisper-v3", secret: str = FIREWORKS_KEY) -> Attempt:
    return Attempt(key=KeyConfig(name="fw-main", value=Secret(secret)), model=model, timeout=5)


@pytest.fixture
async def fireworks(fake_fireworks: FakeFireworks) -> AsyncIterator[OpenAICompatible]:
    async with built(config(fake_fireworks), OpenAICompatible) as impl:
        yield impl


def test_public_hosts_per_model_and_configured_base_wins() -> None:
    def url(model: str, base: str | None = None) -> str:
        return fireworks_url(base, Attempt(key=None, model=model, timeout=1))

    assert url("whisper-v3") == "https://audio-prod.api.fireworks.ai/v1/audio/transcriptions"
    assert url("whisper-v3-turbo") == "https://audio-turbo.api.fireworks.ai/v1/audio/transcriptions"
    assert url("whisper-v3-turbo", "https://my-endpoint.fireworks.ai/v1") == "https://my-endpoint.fireworks.ai/v1/audio/transcriptions"


def test_capabilities() -> None:
    caps = registry.capabilities("fireworks")
    assert caps is FIREWORKS.capabilities and caps.max_file_mb == 1024
    assert caps.word_timestamps and caps.segment_timestamps and not caps.native_stream


async def test_wire_fields_bearer_and_native_srt(fireworks: OpenAICompatible, fake_fireworks: FakeFireworks) -> None:
    srt = await fireworks.transcribe(request(response_format="srt", language="en", temperature=0.0), attempt())
    assert srt.native_format == "srt" and srt.text.startswith("1\n00:00:00,000 --> 00:00:04,500\n")
    seen = fake_fireworks.last
    assert seen.path == "/v1/audio/transcriptions" and seen.headers["authorization"] == f"Bearer {FIREWORKS_KEY}"
    assert seen.form == [("model", "whisper-v3"), ("language", "en"), ("response_format", "srt"), ("temperature", "0.0")]
    assert not isinstance(fireworks, StreamingTranscriber) or not fireworks.streams("whisper-v3")


async def test_words_segments_and_extras_pass_through(fireworks: OpenAICompatible, fake_fireworks: FakeFireworks) -> None:
    req = request(
        response_format="verbose_json", timestamp_granularities=("word", "segment"),
        extra=(("vad_model", "silero"), ("alignment_model", "mms_fa"), ("diarize", "true")),
    )
    result = await fireworks.transcribe(req, attempt("whisper-v3-turbo"))
    assert len(result.words) == 9 and result.segments and result.duration == 4.5
    seen = fake_fireworks.last
    assert seen.fields("timestamp_granularities[]") == ["word", "segment"]
    assert (seen.field("vad_model"), seen.field("alignment_model"), seen.field("diarize")) == ("silero", "mms_fa", "true")


async def test_errors_keep_fireworks_fields_and_hide_the_key(fireworks: OpenAICompatible, fake_fireworks: FakeFireworks) -> None:
    secret = "fw_wrong_but_secret_0123456789"
    with pytest.raises(UpstreamError) as info:
        await fireworks.transcribe(request(), attempt(secret=secret))
    err = info.value
    assert (err.status, err.error_type, err.message) == (401, "authentication_error", "The API key you provided is invalid.")
    assert secret not in str(envelope(err))
    with pytest.raises(UpstreamError) as info:
        await fireworks.transcribe(request(), attempt("whisper-v9"))
    assert (info.value.status, info.value.message) == (404, "Model not found: whisper-v9")


# ------------------------------------------------------------------------------ end to end (openai SDK)


@pytest.fixture(scope="module")
def sdk(_fake_fireworks_server: FakeFireworks) -> Iterator[openai.OpenAI]:
    with serve(create_app(config_with(config(_fake_fireworks_server)))) as url:
        yield openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_sdk_every_format_is_native(sdk: openai.OpenAI, fake_fireworks: FakeFireworks, fmt: str) -> None:
    result: Any = sdk.audio.transcriptions.create(
        model="fireworks/whisper-v3", file=("speech.wav", wav_bytes(), "audio/wav"), response_format=fmt  # type: ignore[call-overload]
    )
    if fmt in ("json", "verbose_json"):
        assert result.text == TRANSCRIPT
    else:
        assert isinstance(result, str) and TRANSCRIPT in result
    if fmt == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.500\n")
    assert fake_fireworks.last.field("response_format") == fmt  # Fireworks renders every format itself
    assert fake_fireworks.last.file is not None and fake_fireworks.last.file.data == wav_bytes()


def test_sdk_stream_is_synthesized(sdk: openai.OpenAI, fake_fireworks: FakeFireworks) -> None:
    events = list(sdk.audio.transcriptions.create(
        model="fireworks/whisper-v3-turbo", file=("speech.wav", wav_bytes(), "audio/wav"), stream=True
    ))
    assert events[-1].type == "transcript.text.done" and events[-1].text == TRANSCRIPT
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == TRANSCRIPT
    assert fake_fireworks.last.field("stream") is None


def test_sdk_auth_error_names_the_key_never_its_value(sdk: openai.OpenAI, fake_fireworks: FakeFireworks) -> None:
    fake_fireworks.keys = {"fw_another_account_key"}
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model="fireworks/whisper-v3", file=("speech.wav", wav_bytes(), "audio/wav"))
    assert "fw-main" in info.value.response.text and FIREWORKS_KEY not in info.value.response.text
