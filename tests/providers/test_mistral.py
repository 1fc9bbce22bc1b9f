"""bifrost_stt.providers.mistral: pure conversions, the provider against a fake Mistral on 127.0.0.1, and the openai SDK
through a real gateway for every response format and streaming."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.kernel.canonical import BytesAudio, StreamDelta, StreamDone, StreamEvent, TranscriptionRequest
from bifrost_stt.gateway.config.load import from_environment
from bifrost_stt.kernel.errors import ClientError, UpstreamError, UpstreamUnavailable, envelope
from bifrost_stt.kernel.settings import KeyConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber, Transcriber
from bifrost_stt.providers.http import make_client
from bifrost_stt.providers.mistral import (
    MISTRAL,
    Mistral,
    create,
    to_error_body,
    to_event,
    to_result,
    to_usage,
    to_wire_fields,
)
from tests.audio import wav_bytes
from tests.fakes.mistral import MISTRAL_KEY, TRANSCRIPT, FakeMistral, sse_body
from tests.fakes.server import Reply
from tests.support import config_with

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000)
MODEL = "voxtral-mini-latest"


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="mistral", model=MODEL, **kw)


def attempt(fake: FakeMistral, *, key: KeyConfig | None = None, model: str = MODEL) -> Attempt:
    return Attempt(key=key or fake.key(), model=model, timeout=5)


@pytest.fixture
async def mistral(fake_mistral: FakeMistral) -> AsyncIterator[Mistral]:
    cfg = fake_mistral.provider_config()
    impl = registry.build(cfg, make_client(cfg))
    assert isinstance(impl, Mistral)
    yield impl
    await impl.client.aclose()


async def events(impl: Mistral, req: TranscriptionRequest, att: Attempt) -> list[StreamEvent]:
    async with aclosing(impl.stream(req, att)) as stream:
        return [e async for e in stream]


# ------------------------------------------------------------------------------------------ to wire


def test_json_sends_only_what_mistral_defines() -> None:
    req = request(language="fr", temperature=0.2, extra=(("diarize", "true"), ("context_bias[]", "Voxtral")))
    assert to_wire_fields(req, MODEL, stream=False) == [
        ("model", MODEL), ("language", "fr"), ("temperature", "0.2"), ("diarize", "true"), ("context_bias", "Voxtral"),
    ]


@pytest.mark.parametrize(("granularities", "wire"), [((), "segment"), (("segment",), "segment"),
                                                     (("word",), "word"), (("segment", "word"), "word")])
def test_verbose_json_asks_for_timestamps(granularities: tuple[str, ...], wire: str) -> None:
    fields = to_wire_fields(request(response_format="verbose_json", timestamp_granularities=granularities), MODEL,
                            stream=False)
    assert ("timestamp_granularities", wire) in fields and len(fields) == 2


def test_stream_sends_stream_true_and_no_timestamps() -> None:
    fields = to_wire_fields(request(response_format="verbose_json", language="en", stream=True), MODEL, stream=True)
    assert fields == [("model", MODEL), ("language", "en"), ("stream", "true")]


@pytest.mark.parametrize(("kw", "param"), [
    ({"prompt": "names: Ada"}, "prompt"),
    ({"extra": (("include[]", "logprobs"),)}, "include[]"),
    ({"response_format": "verbose_json", "language": "en"}, "language"),
])
def test_what_mistral_cannot_take_is_a_400_naming_it(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as info:
        to_wire_fields(request(**kw), MODEL, stream=False)
    assert info.value.status == 400 and info.value.param == param and param.rstrip("[]") in info.value.message


# ------------------------------------------------------------------------------------- to canonical

RECORDED = {
    "model": "voxtral-mini-latest",
    "text": "Galileo was an American robotic space program. Named after the Italian astronomer.",
    "language": None,
    "segments": [
        {"type": "transcription_segment", "text": "Galileo was an American robotic space program.", "start": 0.1,
         "end": 8.2, "speaker_id": "speaker_1"},
        {"type": "transcription_segment", "text": " Named after the Italian astronomer.", "start": 9.1, "end": 17.3,
         "speaker_id": "speaker_2"},
    ],
    "usage": {"prompt_audio_seconds": 18, "prompt_tokens": 13, "completion_tokens": 151, "total_tokens": 164,
              "request_count": 1},
}


def test_to_result_from_a_recorded_payload_via_mock_transport() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=RECORDED)))
    body = client.post("http://upstream/v1/audio/transcriptions").json()
    result = to_result(body, request(response_format="verbose_json", language="it"))
    assert result.text == RECORDED["text"] and result.language == "it"  # null language: the one asked for
    assert [(s.id, s.start, s.end, s.speaker) for s in result.segments] == [
        (0, 0.1, 8.2, "speaker_1"), (1, 9.1, 17.3, "speaker_2")]
    assert result.duration == 18.0 and not result.words
    usage = result.usage
    assert usage is not None and usage.type == "tokens"
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens, usage.seconds) == (13, 151, 164, 18)
    assert result.extra == {"model": "voxtral-mini-latest"}


def test_word_chunks_become_words() -> None:
    body = {**RECORDED, "language": "en", "segments": [
        {"text": "Hi", "start": 0.0, "end": 0.3}, {"text": " there", "start": 0.3, "end": 0.7}]}
    result = to_result(body, request(response_format="verbose_json", timestamp_granularities=("word",)))
    assert [(w.word, w.start, w.end) for w in result.words] == [("Hi", 0.0, 0.3), ("there", 0.3, 0.7)]
    assert not result.segments and result.language == "en"


def test_usage_tolerates_odd_audio_seconds() -> None:
    usage = to_usage({"prompt_tokens": 3, "prompt_audio_seconds": {}})
    assert usage is not None and usage.seconds is None and usage.input_tokens == 3
    assert to_usage(None) is None
    body = {"text": "x", "usage": {"prompt_audio_seconds": {}}, "segments": [{"text": "x", "start": 0, "end": 2.5}]}
    assert to_result(body, request(response_format="verbose_json")).duration == 2.5


def test_to_result_without_text_is_502() -> None:
    with pytest.raises(UpstreamUnavailable):
        to_result({"model": MODEL}, request())


def test_events_map_to_delta_and_done() -> None:
    assert to_event("transcription.text.delta", {"text": "Hel"}) == StreamDelta("Hel")
    assert to_event(None, {"type": "transcription.text.delta", "text": "lo"}) == StreamDelta("lo")
    assert to_event("transcription.segment", {"text": "Hello", "start": 0, "end": 1}) is None
    assert to_event("transcription.language", {"audio_language": "en"}) is None
    done = to_event(None, {"type": "transcription.done", "text": "Hello", "usage": {"prompt_tokens": 2}})
    assert isinstance(done, StreamDone) and done.text == "Hello" and done.usage is not None
    with pytest.raises(UpstreamError, match="decoder crashed"):
        to_event("error", {"message": "decoder crashed", "type": "server_error"})


def test_error_bodies_become_openai_style() -> None:
    nested = {"object": "error", "message": {"detail": [{"type": "missing", "loc": ["body", "model"],
                                                         "msg": "Field required"}]},
              "type": "invalid_request_message_error", "param": None, "code": None}
    fixed = json.loads(to_error_body(422, json.dumps(nested).encode()) or b"{}")["error"]
    assert fixed == {"message": "model: Field required", "type": "invalid_request_message_error", "code": None,
                     "param": "model"}
    unauthorized = json.loads(to_error_body(401, b'{"message": "Unauthorized", "request_id": "x"}') or b"{}")
    assert unauthorized["error"]["type"] == "authentication_error"
    assert to_error_body(500, b"<html>oops</html>") is None
    assert to_error_body(400, b'{"error": {"message": "already fine"}}') is None


# ---------------------------------------------------------------------------------- against the fake


async def test_wire_call_model_first_file_last_bearer(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    result = await mistral.transcribe(request(language="en"), attempt(fake_mistral))
    seen = fake_mistral.last
    assert (seen.method, seen.path) == ("POST", "/v1/audio/transcriptions")
    assert seen.headers["authorization"] == f"Bearer {MISTRAL_KEY}"
    assert seen.form == [("model", MODEL), ("language", "en")]
    assert seen.names[-1] == "file" and seen.file is not None and seen.file.data == WAV
    assert (seen.file.filename, seen.file.content_type) == ("speech.wav", "audio/wav")
    assert result.text == TRANSCRIPT and result.language == "en" and not result.segments
    assert result.usage is not None and result.usage.seconds == 5 and result.usage.output_tokens == 11


async def test_verbose_json_segments_words_and_diarization(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    req = request(response_format="verbose_json", extra=(("diarize", "true"),))
    result = await mistral.transcribe(req, attempt(fake_mistral))
    assert fake_mistral.last.fields("timestamp_granularities") == ["segment"]
    assert [s.speaker for s in result.segments] == ["speaker_1", "speaker_2"]
    assert "".join(s.text for s in result.segments) == TRANSCRIPT and result.duration == 5.0
    words = await mistral.transcribe(replace(req, timestamp_granularities=("word",)), attempt(fake_mistral))
    assert [w.word for w in words.words] == TRANSCRIPT.split() and words.words[1].start == 0.5


async def test_stream_deltas_then_done(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    assert mistral.streams(MODEL) and not mistral.streams("voxtral-mini-transcribe-realtime-2602")
    assert isinstance(mistral, Transcriber) and isinstance(mistral, StreamingTranscriber)
    got = await events(mistral, request(stream=True, extra=(("diarize", "true"),)), attempt(fake_mistral))
    deltas = [e for e in got if isinstance(e, StreamDelta)]
    assert "".join(d.delta for d in deltas) == TRANSCRIPT and len(deltas) == 9  # segment events not repeated
    done = got[-1]
    assert isinstance(done, StreamDone) and done.text == TRANSCRIPT and done.usage is not None
    seen = fake_mistral.last
    assert seen.field("stream") == "true" and seen.headers["accept"] == "text/event-stream"


async def test_stream_of_data_only_frames_and_done_marker(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    fake_mistral.enqueue(Reply(events=[{"type": "transcription.text.delta", "text": "Hi"},
                                       {"type": "transcription.done", "text": "Hi", "usage": {}}, "[DONE]"]))
    assert await events(mistral, request(), attempt(fake_mistral)) == [StreamDelta("Hi"), StreamDone("Hi", usage=to_usage({}))]


async def test_stream_without_deltas_still_delivers_the_text(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    fake_mistral.enqueue(sse_body([{"type": "transcription.done", "text": "Only done.", "usage": {}}]))
    got = await events(mistral, request(), attempt(fake_mistral))
    assert got[0] == StreamDelta("Only done.") and isinstance(got[1], StreamDone)


async def test_stream_errors(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    bad = KeyConfig(name="prod-mistral", value=Secret("wrong-mistral-key-123456"))
    stream = mistral.stream(request(), attempt(fake_mistral, key=bad))
    assert fake_mistral.requests == []  # nothing happens before the first __anext__
    with pytest.raises(UpstreamError) as info:
        await stream.__anext__()
    assert info.value.status == 401 and info.value.error_type == "authentication_error"
    fake_mistral.enqueue(sse_body([{"type": "transcription.text.delta", "text": "Hel"}]))
    with pytest.raises(UpstreamUnavailable, match="before transcription.done"):
        await events(mistral, request(), attempt(fake_mistral))
    fake_mistral.enqueue(Reply(body={"text": "not a stream"}))
    with pytest.raises(UpstreamUnavailable, match="instead of text/event-stream"):
        await events(mistral, request(), attempt(fake_mistral))


async def test_auth_failure_keeps_fields_never_the_key(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    secret = "mistral-wrong-but-secret-987654"
    with pytest.raises(UpstreamError) as info:
        await mistral.transcribe(request(), attempt(fake_mistral, key=KeyConfig(name="team-a", value=Secret(secret))))
    err = info.value
    assert (err.status, err.error_type, err.provider) == (401, "authentication_error", "mistral")
    assert err.message == "Unauthorized"  # the router adds the key's name
    fake_mistral.enqueue(Reply(status=401, body={"message": f"bad key {secret}"}))
    with pytest.raises(UpstreamError) as info:
        await mistral.transcribe(request(), attempt(fake_mistral, key=KeyConfig(name="team-a", value=Secret(secret))))
    assert all(secret not in text for text in (str(info.value), str(envelope(info.value))))


async def test_vendor_errors_keep_status_type_code_param(mistral: Mistral, fake_mistral: FakeMistral) -> None:
    with pytest.raises(UpstreamError) as info:
        await mistral.transcribe(request(), attempt(fake_mistral, model="voxtral-nope"))
    assert (info.value.status, info.value.error_type, info.value.code) == (400, "invalid_model", "1500")
    assert "voxtral-nope" in info.value.message
    fake_mistral.enqueue(Reply(status=503, body="<html>busy</html>", content_type="text/html", headers={"retry-after": "2"}))
    with pytest.raises(UpstreamUnavailable) as unavailable:
        await mistral.transcribe(request(), attempt(fake_mistral))
    assert unavailable.value.status == 502


def test_registry_and_zero_config_env() -> None:
    assert registry.load("mistral") is create and "mistral" in registry.known()
    impl = registry.build(from_environment({"MISTRAL_API_KEY": "k-123456"}, registry.known())
                          .providers["mistral"], httpx.AsyncClient())
    assert isinstance(impl, Mistral) and impl.capabilities is MISTRAL
    assert impl.config.keys[0].name == "MISTRAL_API_KEY" and impl.config.network.base_url is None
    assert MISTRAL.native_formats == frozenset({"json", "text", "verbose_json"}) and MISTRAL.native_stream


# --------------------------------------------------------------------------- end to end via the openai SDK

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@pytest.fixture
def sdk(run_gateway: Callable[..., str], fake_mistral: FakeMistral) -> openai.OpenAI:
    url = run_gateway(config_with(fake_mistral.provider_config()))
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


def audio_file() -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(), "audio/wav")


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_every_format(sdk: openai.OpenAI, fake_mistral: FakeMistral, fmt: str) -> None:
    result: Any = sdk.audio.transcriptions.create(
        model=f"mistral/{MODEL}", file=audio_file(), response_format=fmt  # type: ignore[call-overload]
    )
    upstream = fake_mistral.last
    assert upstream.field("model") == MODEL and upstream.names[-1] == "file"
    assert upstream.headers["authorization"] == f"Bearer {MISTRAL_KEY}"
    timed = fmt in ("verbose_json", "srt", "vtt")
    assert upstream.fields("timestamp_granularities") == (["segment"] if timed else [])
    if fmt == "json":
        assert result.text == TRANSCRIPT
    elif fmt == "verbose_json":
        assert (result.text, result.language, result.duration) == (TRANSCRIPT, "en", 5.0)
        assert [(s.start, s.end) for s in result.segments] == [(0.0, 2.0), (2.0, 4.5)]
    elif fmt == "text":
        assert result.strip() == TRANSCRIPT
    elif fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> 00:00:02,000\nThe quick brown fox\n\n2\n00:00:02,000 --> ")
    else:
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nThe quick brown fox\n")


def test_sdk_stream(sdk: openai.OpenAI, fake_mistral: FakeMistral) -> None:
    stream = sdk.audio.transcriptions.create(model=f"mistral/{MODEL}", file=audio_file(), stream=True)
    got = list(stream)
    deltas = [e.delta for e in got if e.type == "transcript.text.delta"]
    assert "".join(deltas) == TRANSCRIPT and len(deltas) == 9
    assert got[-1].type == "transcript.text.done" and got[-1].text == TRANSCRIPT
    assert fake_mistral.last.field("stream") == "true"


def test_sdk_language_with_subtitles_is_a_400_naming_language(sdk: openai.OpenAI, fake_mistral: FakeMistral) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model=f"mistral/{MODEL}", file=audio_file(), response_format="srt",
                                        language="en")
    assert "language" in json.dumps(info.value.body) and fake_mistral.requests == []
    text = sdk.audio.transcriptions.create(model=f"mistral/{MODEL}", file=audio_file(), response_format="text",
                                           language="en")
    assert text.strip() == TRANSCRIPT and fake_mistral.last.field("language") == "en"


def test_sdk_auth_failure_names_the_key(sdk: openai.OpenAI, fake_mistral: FakeMistral) -> None:
    fake_mistral.keys = {"some-other-key"}
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model=f"mistral/{MODEL}", file=audio_file())
    body = json.dumps(info.value.body)
    assert "MISTRAL_API_KEY" in body and MISTRAL_KEY not in body
