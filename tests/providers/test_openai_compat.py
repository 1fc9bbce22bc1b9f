"""providers.openai_compat against real fake upstreams on 127.0.0.1 (OpenAI, Azure, Groq dialects)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import httpx
import pytest

from bifrost_stt.kernel.canonical import (
    BytesAudio, FileAudio, StreamDelta, StreamDone, StreamEvent, TranscriptionRequest, TranscriptionResult,
)
from bifrost_stt.kernel.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable, envelope
from bifrost_stt.kernel.settings import KeyConfig, NetworkConfig, ProviderConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber, Transcriber
from bifrost_stt.providers.http import make_client
from bifrost_stt.providers.openai_compat import OpenAICompatible, create_openai, to_result
from tests.fakes.openai import AZURE_KEY, GROQ_KEY, OPENAI_KEY, TRANSCRIPT, FakeAzure, FakeGroq, FakeOpenAI
from tests.fakes.server import Reply

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000)


def request(model: str = "whisper-1", **kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="x", model=model, **kw)


def attempt(fake: FakeOpenAI, model: str = "whisper-1", *, key: KeyConfig | None = None, timeout: float = 5) -> Attempt:
    return Attempt(key=key or fake.key(), model=model, timeout=timeout)


async def provider_for(fake: FakeOpenAI, **network: Any) -> OpenAICompatible:
    cfg = fake.provider_config(**network)
    impl = registry.build(cfg, make_client(cfg))
    assert isinstance(impl, OpenAICompatible)
    return impl


@pytest.fixture
async def openai(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAICompatible]:
    impl = await provider_for(fake_openai)
    yield impl
    await impl.client.aclose()


async def events(impl: OpenAICompatible, req: TranscriptionRequest, att: Attempt) -> list[StreamEvent]:
    async with aclosing(impl.stream(req, att)) as stream:
        return [e async for e in stream]


# --------------------------------------------------------------------------------- what went on the wire


async def test_fields_in_order_model_first_file_last(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    req = request(
        language="en", prompt="names: Ada", response_format="verbose_json", temperature=0.2,
        timestamp_granularities=("word", "segment"), extra=(("include[]", "logprobs"), ("chunking_strategy[type]", "server_vad")),
    )
    await openai.transcribe(req, attempt(fake_openai))
    seen = fake_openai.last
    assert seen.path == "/v1/audio/transcriptions" and seen.method == "POST"
    assert seen.form == [
        ("model", "whisper-1"), ("language", "en"), ("prompt", "names: Ada"), ("response_format", "verbose_json"),
        ("temperature", "0.2"), ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment"),
        ("include[]", "logprobs"), ("chunking_strategy[type]", "server_vad"),
    ]
    assert seen.names[-1] == "file" and seen.file is not None
    assert (seen.file.filename, seen.file.content_type, seen.file.data) == ("speech.wav", "audio/wav", WAV)
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen.headers["content-length"] == str(len(seen.body)) and "stream" not in seen.names


async def test_sdk_raw_bytes_get_a_sniffed_filename(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    audio = BytesAudio(WAV, filename="upload", content_type="application/octet-stream", format="wav")
    result = await openai.transcribe(request(audio=audio), attempt(fake_openai))
    assert result.text == TRANSCRIPT
    assert fake_openai.last.file is not None and fake_openai.last.file.filename == "audio.wav"


async def test_unknown_format_is_not_disguised_as_mp3(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    audio = BytesAudio(b"????", filename="upload", format=None)
    with pytest.raises(UpstreamError) as info:
        await openai.transcribe(request(audio=audio), attempt(fake_openai))
    assert (info.value.status, info.value.param) == (400, "file") and "Invalid file format" in info.value.message


async def test_the_upload_replays_for_each_attempt(openai: OpenAICompatible, fake_openai: FakeOpenAI, tmp_path: Any) -> None:
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT)
    os.write(fd, WAV * 40)
    audio = FileAudio(fd=fd, size=len(WAV) * 40, filename="big.wav", format="wav")
    fake_openai.enqueue(Reply(status=503, body={"error": {"message": "busy", "type": "server_error"}}))
    req = request(audio=audio)
    with pytest.raises(UpstreamError) as info:
        await openai.transcribe(req, attempt(fake_openai))
    assert info.value.status == 503 and info.value.retryable
    result = await openai.transcribe(req, replace(attempt(fake_openai), retry=1))
    assert result.text == TRANSCRIPT
    assert [r.file.data == WAV * 40 for r in fake_openai.requests if r.file] == [True, True]
    audio.close()


async def test_base_url_and_path_override(fake_openai: FakeOpenAI) -> None:
    cfg = replace(fake_openai.provider_config(), request_path_overrides={"transcription": "/custom/stt"})
    impl = create_openai(cfg, make_client(cfg))
    fake_openai.enqueue(Reply(body={"text": "custom"}), path="/custom/stt")
    try:
        assert (await impl.transcribe(request(), attempt(fake_openai))).text == "custom"
    finally:
        await impl.client.aclose()
    assert fake_openai.last.path == "/custom/stt"


# --------------------------------------------------------------------------------------- formats


async def test_json_whisper_has_duration_usage(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    result = await openai.transcribe(request(), attempt(fake_openai))
    assert result.text == TRANSCRIPT and result.native is None
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds == 5


async def test_json_gpt4o_has_token_usage_and_logprobs(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    req = request("gpt-4o-transcribe", extra=(("include[]", "logprobs"),))
    result = await openai.transcribe(req, attempt(fake_openai, "gpt-4o-transcribe"))
    usage = result.usage
    assert usage is not None and usage.type == "tokens"
    assert (usage.input_tokens, usage.audio_tokens, usage.text_tokens) == (27, 27, 0)
    assert usage.total_tokens == usage.input_tokens + (usage.output_tokens or 0)
    assert [lp.token for lp in result.logprobs][:2] == ["The", "quick"] and result.logprobs[0].bytes == tuple(b"The")


async def test_verbose_json_segments_and_words(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    req = request(response_format="verbose_json", timestamp_granularities=("word", "segment"))
    result = await openai.transcribe(req, attempt(fake_openai))
    assert (result.language, result.duration, result.task) == ("english", 4.5, "transcribe")
    assert len(result.words) == 9 and result.words[1].word == "quick" and result.words[1].start == 0.5
    seg = result.segments[0]
    assert (seg.id, seg.start, seg.end, seg.text.strip()) == (0, 0.0, 4.5, TRANSCRIPT)
    assert seg.tokens == (50364, 440, 1702) and seg.avg_logprob == -0.21 and seg.no_speech_prob == 0.01
    only_words = await openai.transcribe(replace(req, timestamp_granularities=("word",)), attempt(fake_openai))
    assert only_words.words and not only_words.segments


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
async def test_text_formats_keep_the_native_body(openai: OpenAICompatible, fake_openai: FakeOpenAI, fmt: str) -> None:
    result = await openai.transcribe(request(response_format=fmt), attempt(fake_openai))
    assert result.native_format == fmt and result.native == result.text
    assert TRANSCRIPT in result.text
    if fmt == "srt":
        assert result.text.startswith("1\n00:00:00,000 --> 00:00:04,500\n")
    if fmt == "vtt":
        assert result.text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    if fmt == "text":
        assert result.text == TRANSCRIPT + "\n"


def test_to_result_from_a_recorded_payload_via_mock_transport() -> None:
    payload = {
        "task": "transcribe", "language": "english", "duration": 1.25, "text": "Hi.",
        "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.25, "text": " Hi.", "tokens": [1], "speaker": "A"}],
        "words": [{"word": "Hi", "start": 0.1, "end": 0.4}],
        "usage": {"type": "duration", "seconds": 1.25}, "x_groq": {"id": "req_1"},
    }
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=payload)))
    result = to_result(client.post("http://upstream/v1/audio/transcriptions").json(), "verbose_json")
    assert result.segments[0].speaker == "A" and result.words[0].end == 0.4
    assert result.usage is not None and result.usage.seconds == 1 and result.extra == {"x_groq": {"id": "req_1"}}


# ------------------------------------------------------------------------------------------ streaming


def test_every_model_but_whisper_is_asked_to_stream(openai: OpenAICompatible) -> None:
    """Names are no truth: every model is asked (stream=true) and the answer decides (SSE or JSON); only a name
    known not to stream (whisper*) is not asked, a first guess."""
    assert openai.streams("gpt-4o-transcribe") and openai.streams("gpt-4o-mini-transcribe-2025-03-20")
    assert openai.streams("eu-speech-main") and openai.streams("nova-transcribe")
    assert not openai.streams("whisper-1") and not openai.streams("openai/whisper-large-v3")
    assert isinstance(openai, Transcriber) and isinstance(openai, StreamingTranscriber)


@pytest.mark.parametrize("done_marker", [False, True])
async def test_stream_deltas_then_done(openai: OpenAICompatible, fake_openai: FakeOpenAI, done_marker: bool) -> None:
    fake_openai.done_marker = done_marker
    got = await events(openai, request("gpt-4o-mini-transcribe", stream=True), attempt(fake_openai, "gpt-4o-mini-transcribe"))
    deltas = [e for e in got if isinstance(e, StreamDelta)]
    assert "".join(d.delta for d in deltas) == TRANSCRIPT and len(deltas) == 9
    done = got[-1]
    assert isinstance(done, StreamDone) and done.text == TRANSCRIPT
    assert done.usage is not None and done.usage.type == "tokens" and done.usage.audio_tokens == 27
    seen = fake_openai.last
    assert seen.field("stream") == "true" and seen.names[-1] == "file" and seen.headers["accept"] == "text/event-stream"


async def test_stream_errors_raise_before_the_first_event(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    bad_key = replace(fake_openai.key(), value=Secret("sk-wrong-key-000000000000"))
    stream = openai.stream(request("gpt-4o-transcribe"), attempt(fake_openai, "gpt-4o-transcribe", key=bad_key))
    assert fake_openai.requests == []  # nothing happens before the first __anext__
    with pytest.raises(UpstreamError) as info:
        await stream.__anext__()
    assert info.value.status == 401 and info.value.code == "invalid_api_key"


async def test_a_json_answer_to_a_stream_is_the_whole_transcript(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    # whisper-1 ignores stream=true and answers JSON: one TranscriptionResult, which the gateway streams
    got = [item async for item in openai.stream(request(response_format="verbose_json"), attempt(fake_openai))]
    assert len(got) == 1 and isinstance(got[0], TranscriptionResult)
    assert got[0].text == TRANSCRIPT and got[0].segments and got[0].duration == 4.5
    seen = fake_openai.last
    assert seen.field("stream") == "true" and seen.field("response_format") == "verbose_json"


async def test_an_answer_neither_sse_nor_json_is_an_error(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(body="maintenance until noon", content_type="text/plain"))
    stream = openai.stream(request(), attempt(fake_openai))
    with pytest.raises(UpstreamUnavailable, match="instead of text/event-stream"):
        await stream.__anext__()


async def test_mid_stream_error_and_truncation(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    att = attempt(fake_openai, "gpt-4o-transcribe")
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "Hel"},
                                      {"error": {"message": "audio decode failed", "type": "server_error"}}]))
    got: list[StreamEvent] = []
    with pytest.raises(UpstreamError, match="audio decode failed"):
        async for event in openai.stream(request("gpt-4o-transcribe"), att):
            got.append(event)
    assert got == [StreamDelta("Hel")]
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "Hel"}]))
    with pytest.raises(UpstreamUnavailable, match="before transcript.text.done"):
        await events(openai, request("gpt-4o-transcribe"), att)


async def test_stalled_stream_hits_the_idle_timeout(fake_openai: FakeOpenAI) -> None:
    impl = await provider_for(fake_openai, stream_idle_timeout_in_seconds=0.2)
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "a"}], stall=2))
    try:
        with pytest.raises(UpstreamTimeout, match="stream_idle_timeout_in_seconds"):
            await events(impl, request("gpt-4o-transcribe"), attempt(fake_openai, "gpt-4o-transcribe"))
    finally:
        await impl.client.aclose()


# --------------------------------------------------------------------------------------------- errors


async def test_wrong_key_401_keeps_fields_and_never_leaks(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    secret = "sk-wrong-but-secret-1234567890"
    bad = KeyConfig(name="k", value=Secret(secret))
    with pytest.raises(UpstreamError) as info:
        await openai.transcribe(request(), attempt(fake_openai, key=bad))
    err = info.value
    assert (err.status, err.error_type, err.code, err.provider) == (401, "invalid_request_error", "invalid_api_key", "openai")
    assert "Incorrect API key provided" in err.message
    # a misbehaving upstream that echoes the whole key
    fake_openai.enqueue(Reply(status=401, body={"error": {"message": f"bad key {secret}", "type": "auth"}}))
    with pytest.raises(UpstreamError) as info:
        await openai.transcribe(request(), attempt(fake_openai, key=bad))
    for rendered in (str(info.value), repr(info.value), str(envelope(info.value))):
        assert secret not in rendered


async def test_html_500_is_502(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(status=500, body="<html><h1>500 Internal Server Error</h1></html>", content_type="text/html"))
    with pytest.raises(UpstreamUnavailable) as info:
        await openai.transcribe(request(), attempt(fake_openai))
    assert info.value.status == 502 and "openai" in info.value.message and "500" in info.value.message


async def test_2xx_html_is_502(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(status=200, body="<html>captive portal</html>", content_type="text/html"))
    with pytest.raises(UpstreamUnavailable, match="HTML"):
        await openai.transcribe(request(), attempt(fake_openai))


async def test_connection_refused_is_502(refused_url: str) -> None:
    cfg = ProviderConfig(id="openai", kind="openai", network=NetworkConfig(base_url=refused_url))
    impl = create_openai(cfg, make_client(cfg))
    key = KeyConfig(name="k", value=Secret(OPENAI_KEY))
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await impl.transcribe(request(), Attempt(key=key, model="whisper-1", timeout=5))
    finally:
        await impl.client.aclose()
    assert info.value.status == 502 and info.value.message.startswith("could not reach openai")
    assert OPENAI_KEY not in str(envelope(info.value))


async def test_slow_upstream_is_504(openai: OpenAICompatible, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(body={"text": "late"}, delay=2))
    with pytest.raises(UpstreamTimeout) as info:
        await openai.transcribe(request(), attempt(fake_openai, timeout=0.3))
    assert info.value.status == 504 and "openai" in info.value.message
    assert "default_request_timeout_in_seconds" in info.value.message


# ------------------------------------------------------------------------------------------- vendors


async def test_azure_deployment_url_api_version_and_api_key(fake_azure: FakeAzure) -> None:
    impl = await provider_for(fake_azure)
    key = fake_azure.key(sections={"azure_key_config": {"endpoint": fake_azure.url + "/",
                                                          "api_version": "2025-03-01-preview"}})
    try:
        result = await impl.transcribe(request("whisper", response_format="verbose_json"), attempt(fake_azure, "whisper", key=key))
        got = await events(impl, request("gpt-4o-transcribe", stream=True), attempt(fake_azure, "gpt-4o-transcribe", key=key))
    finally:
        await impl.client.aclose()
    assert result.text == TRANSCRIPT and result.segments
    first, second = fake_azure.requests
    assert first.path == "/openai/deployments/whisper/audio/transcriptions"
    assert first.params == {"api-version": "2025-03-01-preview"}
    assert first.headers["api-key"] == AZURE_KEY and "authorization" not in first.headers
    assert first.form[0] == ("model", "whisper")
    assert isinstance(got[-1], StreamDone) and second.path.endswith("/gpt-4o-transcribe/audio/transcriptions")


async def test_azure_default_api_version_and_wrong_key(fake_azure: FakeAzure) -> None:
    impl = await provider_for(fake_azure)
    try:
        key = KeyConfig(name="k", value=Secret("nope-nope-nope"), sections={"azure_key_config": {"endpoint": fake_azure.url}})
        with pytest.raises(UpstreamError) as info:
            await impl.transcribe(request("whisper"), attempt(fake_azure, "whisper", key=key))
    finally:
        await impl.client.aclose()
    assert info.value.status == 401 and info.value.code == "401" and "Access denied" in info.value.message
    assert fake_azure.last.params == {"api-version": "2024-10-21"}


async def test_groq_base_path_formats_and_extras(fake_groq: FakeGroq) -> None:
    impl = await provider_for(fake_groq)
    try:
        result = await impl.transcribe(request("whisper-large-v3", response_format="verbose_json",
                                               timestamp_granularities=("word",)), attempt(fake_groq, "whisper-large-v3"))
        with pytest.raises(UpstreamError) as info:
            await impl.transcribe(request("whisper-large-v3", response_format="srt"), attempt(fake_groq, "whisper-large-v3"))
    finally:
        await impl.client.aclose()
    assert result.words and result.extra["x_groq"]["id"].startswith("req_")
    assert fake_groq.requests[0].path == "/openai/v1/audio/transcriptions"
    assert fake_groq.requests[0].headers["authorization"] == f"Bearer {GROQ_KEY}"
    assert (info.value.status, info.value.param) == (400, "response_format")
    assert impl.capabilities.native_formats == frozenset({"json", "text", "verbose_json"})
    assert not impl.capabilities.native_stream and not impl.streams("whisper-large-v3")


def test_registry() -> None:
    assert {"openai", "azure", "groq"} <= registry.known()
    assert registry.load("openai") is create_openai
    with pytest.raises(LookupError, match=r"unknown provider kind .nonesuch.*known: .*openai"):
        registry.load("nonesuch")
    caps = registry.build(ProviderConfig(id="o", kind="openai"), httpx.AsyncClient()).capabilities  # type: ignore[attr-defined]
    assert caps.native_stream and "srt" in caps.native_formats and caps.max_file_mb == 25


@pytest.mark.parametrize("base", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"])
def test_a_base_url_in_the_sdks_style_does_not_double_v1(base: str) -> None:
    from bifrost_stt.providers.openai_compat import join_url

    assert join_url(base, "/v1/audio/transcriptions", "openai") == "http://h:1/v1/audio/transcriptions"


def test_speaker_labels_are_read_in_either_spelling() -> None:
    result = to_result({"text": "a b", "words": [{"word": "a", "start": 0, "end": 1, "speaker_id": 2},
                                                 {"word": "b", "start": 1, "end": 2, "speaker": "B"}]},
                       "verbose_json")
    assert [w.speaker for w in result.words] == ["2", "B"]
