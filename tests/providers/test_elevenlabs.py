"""bifrost_stt.providers.elevenlabs: pure conversions, the provider against a fake ElevenLabs on 127.0.0.1, and the openai
SDK through a real gateway for every response format and a (synthesized) stream."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.kernel.canonical import BytesAudio, TranscriptionRequest
from bifrost_stt.gateway.config.load import from_environment
from bifrost_stt.kernel.errors import ClientError, UpstreamError, UpstreamTimeout, envelope
from bifrost_stt.kernel.settings import KeyConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber, Transcriber
from bifrost_stt.providers.elevenlabs import (
    ELEVENLABS,
    ElevenLabs,
    create,
    to_error_body,
    to_language,
    to_result,
    to_wire_fields,
)
from tests.audio import wav_bytes
from tests.fakes.elevenlabs import ELEVENLABS_KEY, TRANSCRIPT, FakeElevenLabs
from tests.fakes.server import Reply
from tests.support import built, config_with

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000)
MODEL = "scribe_v1"
WORDS = TRANSCRIPT.split()


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="elevenlabs", model=MODEL, **kw)


def attempt(fake: FakeElevenLabs, *, key: KeyConfig | None = None, model: str = MODEL, timeout: float = 5) -> Attempt:
    return Attempt(key=key or fake.key(), model=model, timeout=timeout)


@pytest.fixture
async def eleven(fake_elevenlabs: FakeElevenLabs) -> AsyncIterator[ElevenLabs]:
    async with built(fake_elevenlabs.provider_config(), ElevenLabs) as impl:
        yield impl


# ------------------------------------------------------------------------------------------ to wire


def test_fields_translate_names_and_pass_vendor_options_through() -> None:
    req = request(language="de", temperature=0.4, response_format="verbose_json", file_format="pcm_s16le_16",
                  extra=(("diarize", "true"), ("num_speakers", "2"), ("tag_audio_events", "false"),
                         ("keyterms[]", "Bifrost"), ("keyterms[]", "Voxtral"), ("enable_logging", "false")))
    fields, query = to_wire_fields(req, MODEL)
    assert fields == [
        ("model_id", MODEL), ("language_code", "deu"), ("temperature", "0.4"), ("timestamps_granularity", "word"),
        ("file_format", "pcm_s16le_16"), ("diarize", "true"), ("num_speakers", "2"), ("tag_audio_events", "false"),
        ("keyterms", "Bifrost"), ("keyterms", "Voxtral"),
    ]
    assert query == {"enable_logging": "false"}


def test_json_asks_for_nothing_extra_and_a_client_granularity_wins() -> None:
    assert to_wire_fields(request(file_format="mp3"), MODEL) == ([("model_id", MODEL)], {})
    fields, _ = to_wire_fields(request(response_format="verbose_json",
                                       extra=(("timestamps_granularity", "character"),)), MODEL)
    assert fields == [("model_id", MODEL), ("timestamps_granularity", "character")]


@pytest.mark.parametrize(("kw", "param"), [
    ({"prompt": "names: Ada"}, "prompt"),
    ({"extra": (("webhook", "true"),)}, "webhook"),
    ({"extra": (("additional_formats", '[{"format": "srt"}]'),)}, "additional_formats"),
    ({"extra": (("include[]", "usage"),)}, "include"),
])
def test_what_elevenlabs_cannot_take_is_a_400_naming_it(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as info:
        to_wire_fields(request(**kw), MODEL)
    assert info.value.status == 400 and info.value.param == param and param in info.value.message


# ------------------------------------------------------------------------------------- to canonical

RECORDED = {
    "language_code": "eng", "language_probability": 0.93, "text": "Hello from the SDK",
    "words": [
        {"text": "Hello", "start": 0.2, "end": 0.42, "type": "word", "speaker_id": "speaker_0", "logprob": -0.01},
        {"text": " ", "start": 0.42, "end": 0.48, "type": "spacing", "speaker_id": "speaker_0", "logprob": -0.02},
        {"text": "from", "start": 0.48, "end": 0.62, "type": "word", "speaker_id": "speaker_0", "logprob": -0.03},
        {"text": " ", "start": 0.62, "end": 0.66, "type": "spacing", "speaker_id": "speaker_1", "logprob": -0.0},
        {"text": "(laughs)", "start": 0.66, "end": 0.9, "type": "audio_event", "speaker_id": "speaker_1"},
        {"text": "the", "start": 0.9, "end": 1.0, "type": "word", "speaker_id": "speaker_1", "logprob": -0.04},
        {"text": " ", "start": 1.0, "end": 1.1, "type": "spacing", "speaker_id": "speaker_1", "logprob": -0.05},
        {"text": "SDK", "start": 1.1, "end": 2.18, "type": "word", "speaker_id": "speaker_1", "logprob": -0.06},
    ],
    "transcription_id": "a55fQPrzI9CCWZSq0Csj", "audio_duration_secs": 2.50775,
}


def test_to_result_from_a_recorded_payload_via_mock_transport() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=RECORDED)))
    result = to_result(client.post("http://upstream/v1/speech-to-text").json(), logprobs=True)
    assert result.text == "Hello from the SDK" and result.language == "en" and result.duration == 2.50775
    assert [(w.word, w.start, w.end, w.speaker) for w in result.words] == [
        ("Hello", 0.2, 0.42, "speaker_0"), ("from", 0.48, 0.62, "speaker_0"),
        ("the", 0.9, 1.0, "speaker_1"), ("SDK", 1.1, 2.18, "speaker_1")]
    assert not result.segments
    assert result.usage is not None and (result.usage.type, result.usage.seconds) == ("duration", 3)
    assert "".join(lp.token for lp in result.logprobs) == "Hello from the SDK"
    assert result.logprobs[0].logprob == -0.01 and result.logprobs[0].bytes == tuple(b"Hello")
    assert result.extra == {"language_probability": 0.93, "transcription_id": "a55fQPrzI9CCWZSq0Csj"}
    assert to_result(RECORDED).logprobs == ()  # only when the client asked include[]=logprobs


def test_multichannel_answers_are_joined_in_time_order() -> None:
    left = {"language_code": "eng", "text": "hi", "channel_index": 0,
            "words": [{"text": "hi", "start": 0.0, "end": 0.2, "type": "word", "channel_index": 0}]}
    right = {"language_code": "eng", "text": "yo", "channel_index": 1,
             "words": [{"text": "yo", "start": 0.1, "end": 0.3, "type": "word", "channel_index": 1}]}
    result = to_result({"transcripts": [left, right], "transcription_id": "t"})
    assert result.text == "hi\nyo" and [(w.word, w.speaker) for w in result.words] == [
        ("hi", "channel_0"), ("yo", "channel_1")]
    assert result.duration == 0.3 and result.usage is None


def test_language_codes() -> None:
    assert [to_language(c) for c in ("eng", "fra", "cmn", "en", "xyz", "", None)] == [
        "en", "fr", "zh", "en", "xyz", None, None]


def test_error_bodies_become_openai_style() -> None:
    auth = json.loads(to_error_body(401, b'{"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}')
                      or b"{}")["error"]
    assert auth == {"message": "Invalid API key", "type": "authentication_error", "code": "invalid_api_key",
                    "param": None}
    missing = json.loads(to_error_body(422, json.dumps({"detail": [
        {"loc": ["body", "model_id"], "msg": "field required", "type": "value_error.missing"}]}).encode()) or b"{}")
    assert missing["error"]["message"] == "model_id: field required" and missing["error"]["param"] == "model_id"
    assert to_error_body(500, b"<html/>") is None and to_error_body(400, b'{"other": 1}') is None


# ---------------------------------------------------------------------------------- against the fake


async def test_wire_call(eleven: ElevenLabs, fake_elevenlabs: FakeElevenLabs) -> None:
    result = await eleven.transcribe(request(language="en", extra=(("enable_logging", "false"),)),
                                     attempt(fake_elevenlabs))
    seen = fake_elevenlabs.last
    assert (seen.method, seen.path, seen.params) == ("POST", "/v1/speech-to-text", {"enable_logging": "false"})
    assert seen.headers["xi-api-key"] == ELEVENLABS_KEY and "authorization" not in seen.headers
    assert seen.form == [("model_id", MODEL), ("language_code", "eng")]
    assert seen.names[-1] == "file" and seen.file is not None and seen.file.data == WAV
    assert result.text == TRANSCRIPT + " (laughter)" and result.language == "en"
    assert [w.word for w in result.words] == WORDS  # spacing and the audio event are not words
    assert result.usage is not None and result.usage.seconds == 6 and result.duration == pytest.approx(5.5)


async def test_diarization_and_audio_events_pass_through(eleven: ElevenLabs, fake_elevenlabs: FakeElevenLabs) -> None:
    req = request(response_format="verbose_json", extra=(("diarize", "true"), ("tag_audio_events", "false")))
    result = await eleven.transcribe(req, attempt(fake_elevenlabs))
    assert fake_elevenlabs.last.field("timestamps_granularity") == "word"
    assert result.text == TRANSCRIPT and {w.speaker for w in result.words} == {"speaker_0", "speaker_1"}
    multi = await eleven.transcribe(replace(req, extra=(("use_multi_channel", "true"),)), attempt(fake_elevenlabs))
    assert multi.text.count(TRANSCRIPT) == 2 and len(multi.words) == 18


async def test_logprobs_when_asked(eleven: ElevenLabs, fake_elevenlabs: FakeElevenLabs) -> None:
    result = await eleven.transcribe(request(extra=(("include[]", "logprobs"),)), attempt(fake_elevenlabs))
    assert "".join(lp.token for lp in result.logprobs) == TRANSCRIPT + " "
    assert "include" not in fake_elevenlabs.last.names and "include[]" not in fake_elevenlabs.last.names


async def test_auth_failures_keep_fields_never_the_key(eleven: ElevenLabs, fake_elevenlabs: FakeElevenLabs) -> None:
    secret = "sk_elevenlabs_wrong_but_secret_42"
    with pytest.raises(UpstreamError) as info:
        await eleven.transcribe(request(), attempt(fake_elevenlabs, key=KeyConfig(name="voice-team", value=Secret(secret))))
    err = info.value
    assert (err.status, err.code, err.error_type) == (401, "invalid_api_key", "authentication_error")
    assert err.message == "Invalid API key"  # the router adds the key's name
    assert secret not in str(envelope(err))
    with pytest.raises(UpstreamError) as missing:
        await eleven.transcribe(request(), Attempt(key=None, model=MODEL, timeout=5))
    assert missing.value.code == "needs_authorization"


async def test_vendor_errors_keep_status_and_code(eleven: ElevenLabs, fake_elevenlabs: FakeElevenLabs) -> None:
    with pytest.raises(UpstreamError) as info:
        await eleven.transcribe(request(), attempt(fake_elevenlabs, model="scribe_v9"))
    assert (info.value.status, info.value.code) == (400, "invalid_model_id") and "scribe_v9" in info.value.message
    fake_elevenlabs.enqueue(Reply(status=429, body={"detail": {"status": "too_many_concurrent_requests",
                                                               "message": "Too many requests"}},
                                  headers={"retry-after": "3"}))
    with pytest.raises(UpstreamError) as limited:
        await eleven.transcribe(request(), attempt(fake_elevenlabs))
    assert limited.value.retryable and limited.value.headers == {"retry-after": "3"}
    assert limited.value.error_type == "rate_limit_error"
    fake_elevenlabs.enqueue(Reply(body={"text": "late"}, delay=2))
    with pytest.raises(UpstreamTimeout):
        await eleven.transcribe(request(), attempt(fake_elevenlabs, timeout=0.3))


def test_capabilities_registry_and_zero_config_env() -> None:
    assert registry.load("elevenlabs") is create and "elevenlabs" in registry.known()
    cfg = from_environment({"ELEVENLABS_API_KEY": "sk_1234567"}, registry.known()).providers["elevenlabs"]
    impl = registry.build(cfg, httpx.AsyncClient())
    assert isinstance(impl, ElevenLabs) and isinstance(impl, Transcriber)
    assert not isinstance(impl, StreamingTranscriber)  # the gateway synthesizes its streams
    assert impl.config.keys[0].name == "ELEVENLABS_API_KEY" and impl.capabilities is ELEVENLABS
    assert ELEVENLABS.word_timestamps and not ELEVENLABS.segment_timestamps and ELEVENLABS.diarization


# --------------------------------------------------------------------------- end to end via the openai SDK

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@pytest.fixture
def sdk(run_gateway: Callable[..., str], fake_elevenlabs: FakeElevenLabs) -> openai.OpenAI:
    url = run_gateway(config_with(fake_elevenlabs.provider_config()))
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


def audio_file() -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(), "audio/wav")


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_every_format(sdk: openai.OpenAI, fake_elevenlabs: FakeElevenLabs, fmt: str) -> None:
    result: Any = sdk.audio.transcriptions.create(
        model=f"elevenlabs/{MODEL}", file=audio_file(), response_format=fmt,  # type: ignore[call-overload]
        extra_body={"tag_audio_events": "false"},
    )
    upstream = fake_elevenlabs.last
    assert upstream.field("model_id") == MODEL and upstream.headers["xi-api-key"] == ELEVENLABS_KEY
    assert upstream.field("tag_audio_events") == "false" and upstream.names[-1] == "file"
    timed = fmt in ("verbose_json", "srt", "vtt")
    assert upstream.field("timestamps_granularity") == ("word" if timed else None)
    if fmt == "json":
        assert result.text == TRANSCRIPT
    elif fmt == "verbose_json":
        assert (result.text, result.language) == (TRANSCRIPT, "en") and result.duration == pytest.approx(4.7)
        assert result.segments and result.segments[0].start == 0.0 and result.segments[-1].end == 4.45
    elif fmt == "text":
        assert result.strip() == TRANSCRIPT
    elif fmt == "srt":
        assert result == "1\n00:00:00,000 --> 00:00:04,450\nThe quick brown fox\njumps over the lazy dog.\n\n"
    else:
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.450\n")


def test_sdk_verbose_json_words(sdk: openai.OpenAI, fake_elevenlabs: FakeElevenLabs) -> None:
    result = sdk.audio.transcriptions.create(model=f"elevenlabs/{MODEL}", file=audio_file(),
                                             response_format="verbose_json", timestamp_granularities=["word"])
    assert [w.word for w in result.words or []] == WORDS and (result.words or [])[1].start == 0.5


def test_sdk_synthesized_stream(sdk: openai.OpenAI, fake_elevenlabs: FakeElevenLabs) -> None:
    got = list(sdk.audio.transcriptions.create(model=f"elevenlabs/{MODEL}", file=audio_file(), stream=True))
    deltas = "".join(e.delta for e in got if e.type == "transcript.text.delta")
    assert deltas == TRANSCRIPT + " (laughter)" and got[-1].type == "transcript.text.done"
    assert "stream" not in fake_elevenlabs.last.names


def test_sdk_prompt_is_refused_before_upstream(sdk: openai.OpenAI, fake_elevenlabs: FakeElevenLabs) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model=f"elevenlabs/{MODEL}", file=audio_file(), prompt="names: Ada")
    assert "prompt" in json.dumps(info.value.body) and fake_elevenlabs.requests == []


def test_sdk_auth_failure_names_the_key(sdk: openai.OpenAI, fake_elevenlabs: FakeElevenLabs) -> None:
    fake_elevenlabs.keys = {"sk_other"}
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model=f"elevenlabs/{MODEL}", file=audio_file())
    body = json.dumps(info.value.body)
    assert "ELEVENLABS_API_KEY" in body and ELEVENLABS_KEY not in body and "Invalid API key" in body
