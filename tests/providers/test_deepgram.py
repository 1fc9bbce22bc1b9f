"""bifrost_stt.providers.deepgram: conversions on recorded payloads, the provider against a fake Deepgram on 127.0.0.1,
and end to end through a real gateway with the openai SDK."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.kernel.canonical import BytesAudio, FileAudio, TranscriptionRequest
from bifrost_stt.kernel.errors import ClientError, UpstreamError, UpstreamTimeout, UpstreamUnavailable, envelope
from bifrost_stt.kernel.settings import KeyConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber, Transcriber
from bifrost_stt.providers.deepgram import Deepgram, create, to_content_type, to_key_terms, to_result, to_upstream_error, to_wire_query
from tests.audio import wav_bytes
from tests.fakes.deepgram import DEEPGRAM_KEY, TRANSCRIPT, FakeDeepgram, dg_error
from tests.fakes.server import Reply
from tests.support import built, config_with

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000)
MODEL = "nova-3"


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="deepgram", model=MODEL, **kw)


def attempt(*, key: KeyConfig | None = None, timeout: float = 5, model: str = MODEL) -> Attempt:
    return Attempt(key=key or KeyConfig(name="DEEPGRAM_API_KEY", value=Secret(DEEPGRAM_KEY)), model=model, timeout=timeout)


@pytest.fixture
async def deepgram(fake_deepgram: FakeDeepgram) -> AsyncIterator[Deepgram]:
    async with built(fake_deepgram.provider_config(), Deepgram) as impl:
        yield impl


# ------------------------------------------------------------------------------------------- to wire


def test_query_defaults_language_and_key_terms() -> None:
    req = request(language="de", prompt="Bifrost, Kubernetes;\n Ada Lovelace ,,")
    assert to_wire_query(req, "nova-3") == [
        ("model", "nova-3"), ("smart_format", "true"), ("language", "de"),
        ("keyterm", "Bifrost"), ("keyterm", "Kubernetes"), ("keyterm", "Ada Lovelace"),
    ]
    assert [v for k, v in to_wire_query(req, "nova-2") if k == "keywords"] == ["Bifrost", "Kubernetes", "Ada Lovelace"]
    assert to_key_terms(None) == [] and to_key_terms(" , ") == []


def test_segments_turn_on_utterances_and_passthrough_wins() -> None:
    assert ("utterances", "true") in to_wire_query(request(response_format="verbose_json"), MODEL)
    assert ("utterances", "true") in to_wire_query(
        request(response_format="verbose_json", timestamp_granularities=("segment",)), MODEL)
    assert ("utterances", "true") not in to_wire_query(
        request(response_format="verbose_json", timestamp_granularities=("word",)), MODEL)
    assert ("utterances", "true") not in to_wire_query(request(response_format="json"), MODEL)
    query = to_wire_query(request(response_format="verbose_json", extra=(
        ("smart_format", "false"), ("paragraphs", "true"), ("diarize", "true"))), MODEL)
    assert query == [("model", MODEL), ("smart_format", "false"), ("paragraphs", "true"), ("diarize", "true")]


def test_what_deepgram_cannot_take_is_refused_by_name() -> None:
    with pytest.raises(ClientError) as info:
        to_wire_query(request(temperature=0.3), MODEL)
    assert (info.value.status, info.value.param) == (400, "temperature")
    with pytest.raises(ClientError) as info:
        to_wire_query(request(extra=(("include[]", "logprobs"), ("summarize", "v2"), ("diarize", "true"))), MODEL)
    assert info.value.param == "include[]" and "summarize" in info.value.message and "diarize" not in info.value.message.split(";")[0]


def test_content_type_is_always_audio() -> None:
    assert to_content_type(request()) == "audio/wav"
    sdk_upload = BytesAudio(WAV, filename="upload", content_type="application/octet-stream", format="mp3")
    assert to_content_type(request(audio=sdk_upload)) == "audio/mpeg"
    unknown = BytesAudio(b"????", filename="upload", content_type="application/json", format=None)
    assert to_content_type(request(audio=unknown)) == "audio/*"
    assert to_content_type(request(audio=unknown, file_format="flac")) == "audio/flac"


# ------------------------------------------------------------------------------------- to canonical

RECORDED = {
    "metadata": {"request_id": "req-1", "duration": 3.2, "channels": 1},
    "results": {
        "channels": [{
            "detected_language": "es", "language_confidence": 0.9,
            "alternatives": [{
                "transcript": "Hola. ¿Qué tal?", "confidence": 0.9,
                "words": [
                    {"word": "hola", "start": 0.1, "end": 0.5, "punctuated_word": "Hola.", "speaker": 0},
                    {"word": "qué", "start": 1.0, "end": 1.3, "punctuated_word": "¿Qué", "speaker": 1},
                    {"word": "tal", "start": 1.3, "end": 1.6, "speaker": 1},
                ],
                "paragraphs": {"paragraphs": [
                    {"speaker": 0, "sentences": [{"text": "Hola.", "start": 0.1, "end": 0.5}]},
                    {"speaker": 1, "sentences": [{"text": "¿Qué tal?", "start": 1.0, "end": 1.6}]},
                ]},
            }],
        }],
    },
}


def test_to_result_from_a_recorded_payload_via_mock_transport() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=RECORDED)))
    result = to_result("deepgram", client.post("http://upstream/v1/listen").json(), None)
    assert (result.text, result.language, result.duration) == ("Hola. ¿Qué tal?", "es", 3.2)
    assert [(w.word, w.start, w.speaker) for w in result.words] == [("Hola.", 0.1, "0"), ("¿Qué", 1.0, "1"), ("tal", 1.3, "1")]
    assert [(s.id, s.text, s.start, s.end, s.speaker) for s in result.segments] == [
        (0, "Hola.", 0.1, 0.5, "0"), (1, "¿Qué tal?", 1.0, 1.6, "1")]
    assert result.usage is not None and (result.usage.type, result.usage.seconds) == ("duration", 4)
    assert result.extra == {"request_id": "req-1"}


def test_utterances_win_and_language_falls_back() -> None:
    body = json.loads(json.dumps(RECORDED))
    del body["results"]["channels"][0]["detected_language"]
    body["results"]["utterances"] = [{"start": 0.0, "end": 1.6, "transcript": "Hola. ¿Qué tal?", "speaker": 0}]
    result = to_result("deepgram", body, "es-419")
    assert [s.text for s in result.segments] == ["Hola. ¿Qué tal?"] and result.language == "es-419"
    assert to_result("deepgram", body).language == "en"  # Deepgram's own default


def test_multichannel_joins_channels_and_orders_words() -> None:
    body = {"metadata": {"duration": 2.0}, "results": {"channels": [
        {"alternatives": [{"transcript": "left", "words": [{"word": "left", "start": 1.0, "end": 1.5}]}]},
        {"alternatives": [{"transcript": "right", "words": [{"word": "right", "start": 0.2, "end": 0.6}]}]},
    ]}}
    result = to_result("deepgram", body)
    assert result.text == "left\nright" and [w.word for w in result.words] == ["right", "left"]


def test_shapes_without_a_transcript_are_502() -> None:
    for body in ({}, {"results": {"channels": []}}, {"results": {"channels": [{"alternatives": []}]}}, []):
        with pytest.raises(UpstreamUnavailable):
            to_result("deepgram", body)


def test_both_error_shapes() -> None:
    key = KeyConfig(name="prod", value=Secret("dg-secret-123456"))
    err = to_upstream_error("deepgram", 401, dg_error(401, "INVALID_AUTH", "Invalid credentials.").body, key=key)
    assert err is not None and (err.status, err.error_type, err.code) == (401, "authentication_error", "INVALID_AUTH")
    assert err.message == "Invalid credentials. (key 'prod')" and "upstream_request_id" in err.extra
    newer = {"category": "INVALID_JSON", "message": "Invalid JSON submitted.", "details": "missing field `url`", "request_id": "r"}
    err = to_upstream_error("deepgram", 400, newer, key=key)
    assert err is not None and err.code == "INVALID_JSON" and err.message == "Invalid JSON submitted.: missing field `url`"
    assert to_upstream_error("deepgram", 500, {"error": "x"}) is None


# ------------------------------------------------------------------------------ against the fake


async def test_raw_body_on_the_wire(deepgram: Deepgram, fake_deepgram: FakeDeepgram) -> None:
    result = await deepgram.transcribe(request(language="en", prompt="fox, dog"), attempt())
    seen = fake_deepgram.last
    assert seen.path == "/v1/listen" and seen.body == WAV and seen.parts == []
    assert seen.headers["authorization"] == f"Token {DEEPGRAM_KEY}" and seen.headers["content-type"] == "audio/wav"
    assert seen.query == [("model", "nova-3"), ("smart_format", "true"), ("language", "en"),
                          ("keyterm", "fox"), ("keyterm", "dog")]
    assert result.text == TRANSCRIPT and result.words[0].word == "Hello" and result.words[1].word == "there."
    assert result.duration is not None and result.usage is not None and result.usage.seconds == 7
    assert result.segments == () and result.language == "en"


async def test_verbose_json_gets_utterances_as_segments(deepgram: Deepgram, fake_deepgram: FakeDeepgram) -> None:
    req = request(response_format="verbose_json", extra=(("diarize", "true"), ("detect_language", "true")))
    fake_deepgram.detected = "en-US"
    result = await deepgram.transcribe(req, attempt())
    assert fake_deepgram.last.params["utterances"] == "true" and fake_deepgram.last.params["diarize"] == "true"
    assert [s.text for s in result.segments] == ["Hello there.", "The quick brown fox jumps over the lazy dog."]
    assert [s.speaker for s in result.segments] == ["0", "1"] and result.words[-1].speaker == "1"
    assert result.language == "en-US"


async def test_paragraphs_instead_of_utterances(deepgram: Deepgram, fake_deepgram: FakeDeepgram) -> None:
    result = await deepgram.transcribe(request(response_format="verbose_json", extra=(("paragraphs", "true"),)), attempt())
    assert "utterances" not in fake_deepgram.last.params
    assert [s.text for s in result.segments] == ["Hello there.", "The quick brown fox jumps over the lazy dog."]


async def test_the_upload_replays_for_each_attempt(deepgram: Deepgram, fake_deepgram: FakeDeepgram, tmp_path: Any) -> None:
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT)
    os.write(fd, WAV * 50)
    audio = FileAudio(fd=fd, size=len(WAV) * 50, filename="big.wav", format="wav")
    fake_deepgram.enqueue(Reply(status=503, body={"err_code": "SERVICE_UNAVAILABLE", "err_msg": "busy"},
                                headers={"retry-after": "2"}))
    try:
        with pytest.raises(UpstreamError) as info:
            await deepgram.transcribe(request(audio=audio), attempt())
        assert info.value.retryable and info.value.headers == {"retry-after": "2"}
        assert (await deepgram.transcribe(request(audio=audio), attempt())).text == TRANSCRIPT
    finally:
        audio.close()
    assert [r.body == WAV * 50 for r in fake_deepgram.requests] == [True, True]


async def test_wrong_key_is_named_never_shown(deepgram: Deepgram, fake_deepgram: FakeDeepgram) -> None:
    secret = "dg-wrong-but-secret-777777"
    with pytest.raises(UpstreamError) as info:
        await deepgram.transcribe(request(), attempt(key=KeyConfig(name="DEEPGRAM_API_KEY", value=Secret(secret))))
    err = info.value
    assert (err.status, err.code, err.provider) == (401, "INVALID_AUTH", "deepgram")
    assert "'DEEPGRAM_API_KEY'" in err.message
    assert all(secret not in text for text in (str(err), repr(err), json.dumps(envelope(err))))


async def test_upstream_400s_keep_their_message(deepgram: Deepgram, fake_deepgram: FakeDeepgram) -> None:
    with pytest.raises(UpstreamError) as info:
        await deepgram.transcribe(request(), attempt(model="nova-9"))
    assert (info.value.status, info.value.error_type) == (400, "invalid_request_error")
    assert "No such model" in info.value.message
    fake_deepgram.enqueue(Reply(status=500, body="<html>oops</html>", content_type="text/html"))
    with pytest.raises(UpstreamUnavailable, match="HTML"):
        await deepgram.transcribe(request(), attempt())


async def test_slow_upstream_is_504(deepgram: Deepgram, fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.enqueue(Reply(body={}, delay=2))
    with pytest.raises(UpstreamTimeout):
        await deepgram.transcribe(request(), attempt(timeout=0.3))


def test_capabilities_and_protocols(deepgram: Deepgram) -> None:
    caps = deepgram.capabilities
    assert caps.native_formats == frozenset({"json", "verbose_json"}) and not caps.native_stream
    assert caps.word_timestamps and caps.segment_timestamps and caps.diarization and caps.max_file_mb == 2048
    assert isinstance(deepgram, Transcriber) and not isinstance(deepgram, StreamingTranscriber)
    assert registry.load("deepgram") is create


# ------------------------------------------------------------------------------------------ end to end

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@pytest.fixture
def sdk(run_gateway: Callable[..., str], fake_deepgram: FakeDeepgram) -> openai.OpenAI:
    url = run_gateway(config_with(fake_deepgram.provider_config()))
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_every_format(sdk: openai.OpenAI, fake_deepgram: FakeDeepgram, fmt: str) -> None:
    result: Any = sdk.audio.transcriptions.create(
        model=f"deepgram/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), response_format=fmt  # type: ignore[arg-type]
    )
    if fmt == "json":
        assert result.text == TRANSCRIPT
    elif fmt == "verbose_json":
        assert result.text == TRANSCRIPT and result.language == "en" and result.duration > 0
        assert [s.text for s in result.segments] == ["Hello there.", "The quick brown fox jumps over the lazy dog."]
    elif fmt == "text":
        assert result.strip() == TRANSCRIPT
    elif fmt == "srt":
        assert result.startswith("1\n00:00:00,250 --> 00:00:01,200\nHello there.\n\n2\n")
    else:
        assert result.startswith("WEBVTT\n\n00:00:00.250 --> 00:00:01.200\nHello there.")
    seen = fake_deepgram.last
    assert seen.body == wav_bytes() and seen.headers["content-type"] == "audio/wav"
    assert seen.headers["authorization"] == f"Token {DEEPGRAM_KEY}"


def test_sdk_verbose_json_words(sdk: openai.OpenAI, fake_deepgram: FakeDeepgram) -> None:
    result = sdk.audio.transcriptions.create(
        model=f"deepgram/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"),
        response_format="verbose_json", timestamp_granularities=["word"],
    )
    assert result.words is not None and [w.word for w in result.words][:2] == ["Hello", "there."]
    assert result.words[0].start == 0.25


def test_sdk_stream_is_synthesised(sdk: openai.OpenAI, fake_deepgram: FakeDeepgram) -> None:
    stream = sdk.audio.transcriptions.create(
        model=f"deepgram/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), stream=True
    )
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == TRANSCRIPT == "".join(deltas)
    assert "stream" not in fake_deepgram.last.params


def test_sdk_extra_fields_pass_through_or_are_refused(run_gateway: Callable[..., str], fake_deepgram: FakeDeepgram) -> None:
    url = run_gateway(config_with(fake_deepgram.provider_config()))
    with httpx.Client(base_url=url) as c:
        ok = c.post("/v1/audio/transcriptions", files={"file": ("speech.wav", wav_bytes(), "audio/wav")},
                    data={"model": f"deepgram/{MODEL}", "diarize": "true", "punctuate": "true"})
        assert ok.status_code == 200, ok.text
        assert fake_deepgram.last.params["diarize"] == "true" and fake_deepgram.last.params["punctuate"] == "true"
        bad = c.post("/v1/audio/transcriptions", files={"file": ("speech.wav", wav_bytes(), "audio/wav")},
                     data={"model": f"deepgram/{MODEL}", "temperature": "0.2"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"
    assert len(fake_deepgram.requests) == 1


def test_sdk_bad_key_error_envelope(run_gateway: Callable[..., str], fake_deepgram: FakeDeepgram) -> None:
    secret = "dg-operator-typo-31337"
    cfg = replace(fake_deepgram.provider_config(), keys=(KeyConfig(name="DEEPGRAM_API_KEY", value=Secret(secret)),))
    url = run_gateway(config_with(cfg))
    sdk = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model=f"deepgram/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"))
    body = json.dumps(info.value.body)
    assert "Invalid credentials" in body and "DEEPGRAM_API_KEY" in body and secret not in body


def test_zero_config_from_the_environment() -> None:
    from bifrost_stt.gateway.config.load import load_config
    from bifrost_stt.gateway.contract.loading import load_contract, provider_ids

    cfg = load_config(None, {"DEEPGRAM_API_KEY": "dg-env-key"}).providers["deepgram"]
    assert (cfg.kind, cfg.keys[0].name, cfg.keys[0].value.reveal()) == ("deepgram", "DEEPGRAM_API_KEY", "dg-env-key")
    assert "deepgram" in provider_ids(load_contract())  # from openapi/overlay.yaml: not an upstream id
