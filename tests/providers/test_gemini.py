"""bifrost_stt.providers.gemini: conversions on recorded payloads, the provider against a fake Gemini on 127.0.0.1,
and end to end through a real gateway with the openai SDK."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.kernel.canonical import BytesAudio, FileAudio, StreamDelta, StreamDone, StreamEvent, TranscriptionRequest
from bifrost_stt.kernel.errors import ClientError, PayloadTooLarge, UpstreamError, UpstreamTimeout, UpstreamUnavailable, envelope
from bifrost_stt.kernel.settings import KeyConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber, Transcriber
from bifrost_stt.providers.http import base64_chunks
from bifrost_stt.providers.gemini import (
    DEFAULT_INSTRUCTION,
    Gemini,
    create,
    to_generation_config,
    to_result,
    to_upstream_error,
    to_usage,
    wire_body,
)
from tests.audio import wav_bytes
from tests.fakes.gemini import GEMINI_KEY, TRANSCRIPT, FakeGemini, google_error, inline_audio, instruction
from tests.fakes.server import Reply
from tests.support import built, config_with

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4001)
MODEL = "gemini-2.5-flash"


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="gemini", model=MODEL, **kw)


def attempt(*, key: KeyConfig | None = None, timeout: float = 5, model: str = MODEL) -> Attempt:
    return Attempt(key=key or KeyConfig(name="GEMINI_API_KEY", value=Secret(GEMINI_KEY)), model=model, timeout=timeout)


@pytest.fixture
async def gemini(fake_gemini: FakeGemini) -> AsyncIterator[Gemini]:
    async with built(fake_gemini.provider_config(), Gemini) as impl:
        yield impl


async def collect(impl: Gemini, req: TranscriptionRequest, att: Attempt) -> list[StreamEvent]:
    async with aclosing(impl.stream(req, att)) as events:
        return [e async for e in events]


async def body_of(req: TranscriptionRequest) -> bytes:
    length, stream = wire_body("gemini", req)
    body = b"".join([chunk async for chunk in stream])
    assert len(body) == length
    return body


# ------------------------------------------------------------------------------------------- to wire


async def test_body_is_json_with_instruction_then_inline_audio() -> None:
    body = json.loads(await body_of(request()))
    assert body == {"contents": [{"role": "user", "parts": [
        {"text": DEFAULT_INSTRUCTION},
        {"inline_data": {"mime_type": "audio/wav", "data": base64.b64encode(WAV).decode()}},
    ]}]}


@pytest.mark.parametrize("size", [0, 1, 2, 3, 196607, 196608, 196609, 400_001])
async def test_streamed_base64_matches_for_any_size(size: int, tmp_path: Any) -> None:
    data = os.urandom(size)
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT)
    os.write(fd, data)
    audio = FileAudio(fd=fd, size=size, filename="a.flac", format="flac")
    try:
        encoded = b"".join([c async for c in base64_chunks(audio)])
        body = json.loads(await body_of(request(audio=audio)))
    finally:
        audio.close()
    assert encoded == base64.b64encode(data)
    assert body["contents"][0]["parts"][1]["inline_data"] == {"mime_type": "audio/flac", "data": encoded.decode()}


async def test_prompt_language_temperature_and_generation_extras() -> None:
    req = request(prompt='Names: "Ada", Grace', language="fr", temperature=0.2,
                  extra=(("thinking_budget", "0"), ("max_output_tokens", "2048"), ("include[]", "logprobs")))
    body = json.loads(await body_of(req))
    text = body["contents"][0]["parts"][0]["text"]
    assert text.startswith('Names: "Ada", Grace') and "French (language code fr)" in text
    assert body["generationConfig"] == {
        "temperature": 0.2, "thinkingConfig": {"thinkingBudget": 0}, "maxOutputTokens": 2048, "responseLogprobs": True,
    }


def test_what_gemini_cannot_take_is_refused_by_name() -> None:
    with pytest.raises(ClientError) as info:
        to_generation_config(request(timestamp_granularities=("word",)))
    assert info.value.status == 400 and info.value.param == "timestamp_granularities"
    with pytest.raises(ClientError) as info:
        to_generation_config(request(extra=(("chunking_strategy[type]", "auto"), ("diarize", "true"))))
    assert info.value.param == "chunking_strategy[type]" and "diarize" in info.value.message
    with pytest.raises(ClientError, match="top_k must be a int"):
        to_generation_config(request(extra=(("top_k", "many"),)))


def test_inline_limit_is_a_413_that_says_why() -> None:
    big = BytesAudio(bytes(16 * 1024 * 1024), filename="long.wav", format="wav")
    with pytest.raises(PayloadTooLarge) as info:
        wire_body("gemini", request(audio=big))
    err = info.value
    assert err.status == 413 and err.param == "file"
    assert "20 MB" in err.message and "Files API" in err.message


# ------------------------------------------------------------------------------------- to canonical

RECORDED = {
    "candidates": [{
        "content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "Hello there.\n"}], "role": "model"},
        "finishReason": "STOP", "index": 0,
        "logprobsResult": {"chosenCandidates": [{"token": "Hello", "logProbability": -0.1}]},
    }],
    "usageMetadata": {
        "promptTokenCount": 180, "candidatesTokenCount": 4, "thoughtsTokenCount": 10, "totalTokenCount": 194,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20}, {"modality": "AUDIO", "tokenCount": 160}],
    },
    "modelVersion": "gemini-2.5-flash", "responseId": "abc",
}


def test_to_result_from_a_recorded_payload_via_mock_transport() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=RECORDED)))
    result = to_result("gemini", client.post("http://upstream/v1beta/models/m:generateContent").json(), "en")
    assert (result.text, result.language, result.duration, result.segments, result.words) == ("Hello there.", "en", None, (), ())
    assert result.logprobs[0].token == "Hello" and result.logprobs[0].logprob == -0.1
    assert result.extra == {}
    cut = {"candidates": [{"content": {"parts": [{"text": "Hello"}]}, "finishReason": "MAX_TOKENS"}]}
    assert to_result("gemini", cut).extra == {"finishReason": "MAX_TOKENS"}
    usage = result.usage
    assert usage is not None and usage.type == "tokens"
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (180, 14, 194)
    assert (usage.audio_tokens, usage.text_tokens) == (160, 20)
    assert to_usage(None) is None


def test_blocked_and_cut_off_answers_are_errors() -> None:
    with pytest.raises(UpstreamError) as info:
        to_result("gemini", {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert (info.value.status, info.value.code) == (400, "PROHIBITED_CONTENT")
    with pytest.raises(UpstreamError, match="finishReason SAFETY"):
        to_result("gemini", {"candidates": [{"finishReason": "SAFETY"}]})
    assert to_result("gemini", {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}]}).text == ""


def test_error_shape_names_the_key_and_reads_retry_info() -> None:
    key = KeyConfig(name="prod-gemini", value=Secret("AIza-secret-value-1234"))
    bad = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
    err = to_upstream_error("gemini", 400, bad.body, key=key, secrets=[key.value.reveal()])
    assert err is not None and (err.status, err.error_type, err.code) == (400, "INVALID_ARGUMENT", "API_KEY_INVALID")
    assert err.message.endswith("(key 'prod-gemini')")
    limited = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="17s")
    err = to_upstream_error("gemini", 429, limited.body, key=key)
    assert err is not None and err.retryable and err.headers == {"retry-after": "17"} and "key" not in err.message
    assert to_upstream_error("gemini", 500, {"detail": "x"}) is None


# ------------------------------------------------------------------------------ against the fake


async def test_transcribe_on_the_wire(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    result = await gemini.transcribe(request(), attempt())
    seen = fake_gemini.last
    assert seen.path == f"/v1beta/models/{MODEL}:generateContent" and seen.method == "POST"
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY and "authorization" not in seen.headers
    assert seen.headers["content-type"] == "application/json" and seen.headers["content-length"] == str(len(seen.body))
    assert inline_audio(seen) == ("audio/wav", WAV) and instruction(seen) == DEFAULT_INSTRUCTION
    assert result.text == TRANSCRIPT  # the trailing newline Gemini sends is gone
    assert result.usage is not None and result.usage.audio_tokens == len(WAV) // 500 and result.usage.text_tokens == 40


async def test_logprobs_and_models_prefix(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    result = await gemini.transcribe(request(extra=(("include[]", "logprobs"),)), attempt(model="models/" + MODEL))
    assert fake_gemini.last.path == f"/v1beta/models/{MODEL}:generateContent"
    assert [lp.token.strip() for lp in result.logprobs] == TRANSCRIPT.split()


async def test_refusals_happen_before_any_request(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    with pytest.raises(ClientError):
        await gemini.transcribe(request(timestamp_granularities=("segment",)), attempt())
    with pytest.raises(PayloadTooLarge):
        await gemini.transcribe(request(audio=BytesAudio(bytes(16 * 1024 * 1024), format="wav")), attempt())
    assert fake_gemini.requests == []


async def test_wrong_key_names_the_key_never_its_value(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    secret = "AIzaSy-wrong-but-secret-998877"
    with pytest.raises(UpstreamError) as info:
        await gemini.transcribe(request(), attempt(key=KeyConfig(name="GEMINI_API_KEY", value=Secret(secret))))
    err = info.value
    assert (err.status, err.code, err.provider) == (400, "API_KEY_INVALID", "gemini")
    assert "API key not valid" in err.message and "'GEMINI_API_KEY'" in err.message
    fake_gemini.enqueue(google_error(400, "INVALID_ARGUMENT", f"bad key {secret}", reason="API_KEY_INVALID"))
    with pytest.raises(UpstreamError) as info:
        await gemini.transcribe(request(), attempt(key=KeyConfig(name="k", value=Secret(secret))))
    assert all(secret not in text for text in (str(info.value), repr(info.value), json.dumps(envelope(info.value))))


async def test_unknown_model_and_html_failures(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    with pytest.raises(UpstreamError) as info:
        await gemini.transcribe(request(), attempt(model="gemini-9"))
    assert (info.value.status, info.value.error_type) == (404, "NOT_FOUND") and "models/gemini-9" in info.value.message
    fake_gemini.enqueue(Reply(status=502, body="<html>bad gateway</html>", content_type="text/html"))
    with pytest.raises(UpstreamUnavailable, match="HTML"):
        await gemini.transcribe(request(), attempt())


async def test_slow_upstream_is_504(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(Reply(body={}, delay=2))
    with pytest.raises(UpstreamTimeout):
        await gemini.transcribe(request(), attempt(timeout=0.3))


def test_capabilities_and_protocols(gemini: Gemini) -> None:
    caps = gemini.capabilities
    assert caps.native_formats == frozenset({"json"}) and caps.native_stream
    assert not caps.word_timestamps and not caps.segment_timestamps and caps.max_file_mb == 15
    assert isinstance(gemini, Transcriber) and isinstance(gemini, StreamingTranscriber) and gemini.streams(MODEL)
    assert registry.load("gemini") is create


# ------------------------------------------------------------------------------------------- streaming


async def test_stream_deltas_join_to_the_done_text(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    got = await collect(gemini, request(stream=True, extra=(("include[]", "logprobs"),)), attempt())
    deltas = [e for e in got if isinstance(e, StreamDelta)]
    done = got[-1]
    assert isinstance(done, StreamDone) and done.text == TRANSCRIPT == "".join(d.delta for d in deltas)
    assert len(deltas) == 3 and done.usage is not None and done.usage.output_tokens == 3  # the last chunk's count
    assert len(done.logprobs) == len(TRANSCRIPT.split())
    seen = fake_gemini.last
    assert seen.path == f"/v1beta/models/{MODEL}:streamGenerateContent" and seen.params == {"alt": "sse"}
    assert seen.headers["accept"] == "text/event-stream"


async def test_stream_errors_before_and_during(gemini: Gemini, fake_gemini: FakeGemini) -> None:
    events = gemini.stream(request(), attempt(model="gemini-9"))
    assert fake_gemini.requests == []
    with pytest.raises(UpstreamError) as info:
        await events.__anext__()
    assert info.value.status == 404
    chunk = fake_gemini.chunk("Hel", 10, None, False)
    fake_gemini.enqueue(Reply(events=[chunk, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}]))
    got: list[StreamEvent] = []
    with pytest.raises(UpstreamError, match="overloaded") as info:
        async for event in gemini.stream(request(), attempt()):
            got.append(event)
    assert got == [StreamDelta("Hel")] and info.value.status == 503
    fake_gemini.enqueue(Reply(events=[chunk]))
    with pytest.raises(UpstreamUnavailable, match="before a finishReason"):
        await collect(gemini, request(), attempt())


# ------------------------------------------------------------------------------------------ end to end

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@pytest.fixture
def sdk(run_gateway: Callable[..., str], fake_gemini: FakeGemini) -> openai.OpenAI:
    url = run_gateway(config_with(fake_gemini.provider_config()))
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_every_format(sdk: openai.OpenAI, fake_gemini: FakeGemini, fmt: str) -> None:
    result: Any = sdk.audio.transcriptions.create(
        model=f"gemini/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), response_format=fmt  # type: ignore[arg-type]
    )
    if fmt == "json":
        assert result.text == TRANSCRIPT
    elif fmt == "verbose_json":
        assert result.text == TRANSCRIPT and not getattr(result, "words", None)
    elif fmt == "text":
        assert result.strip() == TRANSCRIPT
    elif fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> ") and TRANSCRIPT.split()[0] in result
    else:
        assert result.startswith("WEBVTT") and "-->" in result
    seen = fake_gemini.last
    assert inline_audio(seen) == ("audio/wav", wav_bytes()) and seen.headers["x-goog-api-key"] == GEMINI_KEY


def test_sdk_stream(sdk: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    stream = sdk.audio.transcriptions.create(
        model=f"gemini/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), stream=True
    )
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == TRANSCRIPT == "".join(deltas)
    assert done.usage is not None and done.usage.input_tokens > 0
    assert fake_gemini.last.path.endswith(":streamGenerateContent")


def test_sdk_refusals_are_400s_naming_the_field(sdk: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(
            model=f"gemini/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"),
            response_format="verbose_json", timestamp_granularities=["word"],
        )
    assert info.value.body is not None and "timestamp_granularities" in json.dumps(info.value.body)
    assert fake_gemini.requests == []


def test_sdk_bad_key_error_envelope(run_gateway: Callable[..., str], fake_gemini: FakeGemini) -> None:
    secret = "AIzaSy-operator-typo-424242"
    cfg = replace(fake_gemini.provider_config(), keys=(KeyConfig(name="GEMINI_API_KEY", value=Secret(secret)),))
    url = run_gateway(config_with(cfg))
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": f"gemini/{MODEL}"},
                   files={"file": ("speech.wav", wav_bytes(), "audio/wav")})
    body = r.json()
    assert r.status_code == 400 and body["status_code"] == 400 and body["is_bifrost_error"] is False
    assert body["error"]["code"] == "API_KEY_INVALID" and "GEMINI_API_KEY" in body["error"]["message"]
    assert secret not in r.text


def test_zero_config_from_the_environment() -> None:
    from bifrost_stt.gateway.config.load import load_config
    from bifrost_stt.gateway.contract.loading import load_contract, provider_ids

    cfg = load_config(None, {"GEMINI_API_KEY": "AIza-env-key"}).providers["gemini"]
    assert (cfg.kind, cfg.keys[0].name, cfg.keys[0].value.reveal()) == ("gemini", "GEMINI_API_KEY", "AIza-env-key")
    assert "gemini" in provider_ids(load_contract())


@pytest.mark.parametrize("suffix", ["/v1beta", "/v1beta/", ""])
def test_upstream_config_with_a_versioned_base_url_works_unchanged(
    run_gateway: Callable[..., str], fake_gemini: FakeGemini, tmp_path: Any, suffix: str
) -> None:
    """Upstream's Gemini base URL includes /v1beta; a file saying so must not call /v1beta/v1beta/..."""
    from bifrost_stt.gateway.config.load import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": {"gemini": {
        "keys": [{"name": "GEMINI_API_KEY", "value": GEMINI_KEY, "weight": 1.0, "models": ["*"]}],
        "network_config": {"base_url": fake_gemini.url + suffix},
    }}}))
    url = run_gateway(load_config(path, {}))
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": f"gemini/{MODEL}"},
                   files={"file": ("speech.wav", wav_bytes(), "audio/wav")})
    assert r.status_code == 200 and r.json()["text"] == TRANSCRIPT
    assert fake_gemini.last.path == f"/v1beta/models/{MODEL}:generateContent"


def test_the_default_base_url_is_upstreams() -> None:
    from bifrost_stt.providers.gemini import DEFAULT_BASE_URL

    assert DEFAULT_BASE_URL == "https://generativelanguage.googleapis.com/v1beta"
