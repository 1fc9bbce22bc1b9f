"""bifrost_stt.providers.huggingface: conversions, then the adapter against a fake HF router on 127.0.0.1, then end to end."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.server.app import create_app
from bifrost_stt.kernel.canonical import BytesAudio, FileAudio, TranscriptionRequest
from bifrost_stt.kernel.errors import ClientError, UpstreamError, UpstreamUnavailable, envelope
from bifrost_stt.kernel.settings import KeyConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber, Transcriber
from bifrost_stt.providers.http import make_client
from bifrost_stt.providers.huggingface import HUGGINGFACE, HuggingFace, accepts_raw, json_body, to_parameters, to_result
from tests.audio import wav_bytes
from tests.fakes.huggingface import HF_TOKEN, FakeHuggingFace, decoded_audio
from tests.fakes.openai import TRANSCRIPT
from tests.fakes.server import Reply
from tests.support import built, config_with, serve

MODEL = "openai/whisper-large-v3"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000)


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="huggingface", model=MODEL, **kw)


def attempt(fake: FakeHuggingFace, *, key: KeyConfig | None = None, model: str = MODEL, timeout: float = 5) -> Attempt:
    return Attempt(key=key or fake.key(), model=model, timeout=timeout)


@pytest.fixture
async def hf(fake_huggingface: FakeHuggingFace) -> AsyncIterator[HuggingFace]:
    async with built(fake_huggingface.provider_config(), HuggingFace) as impl:
        yield impl


# ------------------------------------------------------------------------------------------ conversions


def test_parameters_translate_timings_and_temperature() -> None:
    assert to_parameters("huggingface", request()) == {}
    assert to_parameters("huggingface", request(response_format="verbose_json")) == {"return_timestamps": True}
    words = request(response_format="verbose_json", timestamp_granularities=("segment", "word"))
    assert to_parameters("huggingface", words) == {"return_timestamps": "word"}
    assert to_parameters("huggingface", request(temperature=0.0)) == {"generation_parameters": {"do_sample": False}}
    hot = request(temperature=0.4, extra=(("generation_parameters[num_beams]", "5"),))
    assert to_parameters("huggingface", hot) == {
        "generation_parameters": {"do_sample": True, "temperature": 0.4, "num_beams": 5}
    }


def test_parameters_it_cannot_take_are_refused_by_name() -> None:
    with pytest.raises(ClientError) as info:
        to_parameters("huggingface", request(language="en", prompt="Ada", extra=(("include[]", "logprobs"),)))
    err = info.value
    assert (err.status, err.param, err.code) == (400, "language", "unsupported_parameter")
    assert "language, prompt, include[]" in err.message and "generation_parameters[<name>]" in err.message


def test_raw_bodies_only_on_the_hf_inference_route() -> None:
    assert accepts_raw("https://router.huggingface.co/hf-inference") and accepts_raw("http://127.0.0.1:9/hf-inference/")
    assert not accepts_raw("https://router.huggingface.co/fal-ai")
    assert not accepts_raw("https://abc.us-east-1.aws.endpoints.huggingface.cloud")


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 65535, 65536, 65537, 200_001])
async def test_json_body_streams_exact_base64(size: int) -> None:
    data = os.urandom(size)
    length, stream = json_body(BytesAudio(data), {"return_timestamps": True})
    body = b"".join([piece async for piece in stream])
    assert len(body) == length
    assert body.startswith(b'{"inputs":"') and body.endswith(b'","parameters":{"return_timestamps":true}}')
    assert base64.b64decode(body[len(b'{"inputs":"') : body.index(b'","parameters"')]) == data


def test_to_result_segments_words_and_open_ended_chunks() -> None:
    payload = {"text": " Hi there.", "chunks": [{"text": " Hi", "timestamp": [0.0, 0.4]}, {"text": " there.", "timestamp": [0.4, None]}]}
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=payload)))
    body = client.post("http://hf/hf-inference/models/x").json()
    segments = to_result(body, True)
    assert [(s.id, s.start, s.end, s.text) for s in segments.segments] == [(0, 0.0, 0.4, " Hi"), (1, 0.4, 0.4, " there.")]
    words = to_result(body, "word")
    assert [(w.word, w.start) for w in words.words] == [("Hi", 0.0), ("there.", 0.4)] and not words.segments
    assert to_result([{"text": "x"}], None).text == "x"  # a deployment that wraps its output in a list
    with pytest.raises(UpstreamUnavailable):
        to_result({"generated_text": "x"}, None)


def test_capabilities_are_the_module_constant() -> None:
    assert registry.capabilities("huggingface") is HUGGINGFACE
    assert not HUGGINGFACE.native_stream and HUGGINGFACE.native_formats == {"json", "verbose_json"}


# ------------------------------------------------------------------------------------------ on the wire


async def test_json_without_parameters_is_a_raw_audio_body(hf: HuggingFace, fake_huggingface: FakeHuggingFace) -> None:
    result = await hf.transcribe(request(), attempt(fake_huggingface))
    assert result.text.strip() == TRANSCRIPT and not result.segments
    seen = fake_huggingface.last
    assert seen.path == f"/hf-inference/models/{MODEL}"
    assert seen.headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert seen.content_type == "audio/wav" and seen.body == WAV
    assert seen.headers["content-length"] == str(len(WAV))
    assert isinstance(hf, Transcriber) and not isinstance(hf, StreamingTranscriber)


async def test_timings_go_as_json_with_base64_inputs(hf: HuggingFace, fake_huggingface: FakeHuggingFace, tmp_path: Any) -> None:
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT)
    os.write(fd, WAV * 50)
    audio = FileAudio(fd=fd, size=len(WAV) * 50, filename="upload", format="wav")
    try:
        result = await hf.transcribe(request(audio=audio, response_format="verbose_json"), attempt(fake_huggingface))
        words = await hf.transcribe(
            request(audio=audio, response_format="verbose_json", timestamp_granularities=("word",)), attempt(fake_huggingface)
        )
    finally:
        audio.close()
    assert [s.text.strip() for s in result.segments] == ["The quick brown fox", "jumps over the lazy dog."]
    assert result.segments[1].end == 4.5 and not result.words
    assert len(words.words) == 9 and words.words[1].word == "quick" and words.words[1].start == 0.5
    first, second = fake_huggingface.requests
    assert first.content_type == "application/json" and decoded_audio(first) == WAV * 50
    assert first.json()["parameters"] == {"return_timestamps": True}
    assert second.json()["parameters"] == {"return_timestamps": "word"}


async def test_other_routes_always_get_json(fake_huggingface: FakeHuggingFace) -> None:
    cfg = fake_huggingface.provider_config(base_url=fake_huggingface.url + "/endpoint")
    impl = HuggingFace(cfg, make_client(cfg))
    try:
        result = await impl.transcribe(request(), attempt(fake_huggingface))
    finally:
        await impl.client.aclose()
    assert result.text.strip() == TRANSCRIPT
    assert fake_huggingface.last.path == f"/endpoint/models/{MODEL}"
    assert fake_huggingface.last_parameters() == {}


async def test_refusal_happens_before_any_upstream_call(hf: HuggingFace, fake_huggingface: FakeHuggingFace) -> None:
    with pytest.raises(ClientError, match="cannot take language"):
        await hf.transcribe(request(language="en"), attempt(fake_huggingface))
    assert fake_huggingface.requests == []


# --------------------------------------------------------------------------------------------- errors


async def test_bad_token_is_401_with_hf_message_and_no_secret(hf: HuggingFace, fake_huggingface: FakeHuggingFace) -> None:
    secret = "hf_wrong_but_secret_0123456789"
    with pytest.raises(UpstreamError) as info:
        await hf.transcribe(request(), attempt(fake_huggingface, key=KeyConfig(name="hf-main", value=Secret(secret))))
    err = info.value
    assert (err.status, err.error_type, err.provider) == (401, "authentication_error", "huggingface")
    assert err.message == "Invalid credentials in Authorization header"
    fake_huggingface.enqueue(Reply(status=401, body={"error": f"token {secret} is revoked"}))
    with pytest.raises(UpstreamError) as info:
        await hf.transcribe(request(), attempt(fake_huggingface, key=KeyConfig(name="hf-main", value=Secret(secret))))
    assert secret not in str(envelope(info.value))


async def test_unknown_model_loading_model_and_bad_audio(hf: HuggingFace, fake_huggingface: FakeHuggingFace) -> None:
    with pytest.raises(UpstreamError) as info:
        await hf.transcribe(request(), attempt(fake_huggingface, model="nobody/nothing"))
    assert (info.value.status, info.value.message) == (404, "Model nobody/nothing does not exist")
    fake_huggingface.loading.add(MODEL)
    with pytest.raises(UpstreamError) as info:
        await hf.transcribe(request(), attempt(fake_huggingface))
    assert info.value.status == 503 and info.value.retryable and info.value.headers["retry-after"] == "20"
    assert "currently loading" in info.value.message
    fake_huggingface.loading.clear()
    with pytest.raises(UpstreamError) as info:
        await hf.transcribe(request(audio=BytesAudio(b"not audio at all")), attempt(fake_huggingface))
    assert info.value.status == 400 and "malformed" in info.value.message


async def test_list_shaped_errors_keep_status_and_every_message(hf: HuggingFace, fake_huggingface: FakeHuggingFace) -> None:
    fake_huggingface.enqueue(Reply(status=422, body={"error": ["Error in `parameters`: a", "Error in `inputs`: b"]}))
    with pytest.raises(UpstreamError) as info:
        await hf.transcribe(request(), attempt(fake_huggingface))
    assert info.value.status == 422 and info.value.message == "Error in `parameters`: a; Error in `inputs`: b"


async def test_html_and_non_hf_bodies_are_502(hf: HuggingFace, fake_huggingface: FakeHuggingFace) -> None:
    fake_huggingface.enqueue(Reply(status=502, body="<html>Bad Gateway</html>", content_type="text/html"))
    with pytest.raises(UpstreamUnavailable, match="HTML"):
        await hf.transcribe(request(), attempt(fake_huggingface))
    fake_huggingface.enqueue(Reply(status=200, body=""))
    with pytest.raises(UpstreamUnavailable, match="empty"):
        await hf.transcribe(request(), attempt(fake_huggingface))


async def test_key_less_custom_route_sends_no_authorization(fake_huggingface: FakeHuggingFace) -> None:
    cfg = replace(fake_huggingface.provider_config(id="local-asr"), keys=(), is_key_less=True)
    impl = HuggingFace(cfg, make_client(cfg))
    fake_huggingface.enqueue(Reply(body={"text": "local"}))
    try:
        result = await impl.transcribe(request(), Attempt(key=None, model=MODEL, timeout=5))
    finally:
        await impl.client.aclose()
    assert result.text == "local" and "authorization" not in fake_huggingface.last.headers


# ------------------------------------------------------------------------------ end to end (openai SDK)


@pytest.fixture(scope="module")
def sdk(_fake_huggingface_server: FakeHuggingFace) -> Iterator[openai.OpenAI]:
    with serve(create_app(config_with(_fake_huggingface_server.provider_config()))) as url:
        yield openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_sdk_every_format(sdk: openai.OpenAI, fake_huggingface: FakeHuggingFace, fmt: str) -> None:
    result: Any = sdk.audio.transcriptions.create(
        model=f"huggingface/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), response_format=fmt  # type: ignore[call-overload]
    )
    if fmt == "json":
        assert result.text.strip() == TRANSCRIPT and fake_huggingface.last_parameters() is None
    elif fmt == "verbose_json":
        assert result.text.strip() == TRANSCRIPT and len(result.segments) == 2 and result.segments[1].end == 4.5
    elif fmt == "text":
        assert isinstance(result, str) and result.strip() == TRANSCRIPT
    elif fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> 00:00:02,000\n") and "2\n00:00:02,000 --> 00:00:04,500\n" in result
    else:
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n")
    assert fake_huggingface.last.path == f"/hf-inference/models/{MODEL}"
    assert decoded_audio(fake_huggingface.last) == wav_bytes()


def test_sdk_word_granularity(sdk: openai.OpenAI, fake_huggingface: FakeHuggingFace) -> None:
    result = sdk.audio.transcriptions.create(
        model=f"huggingface/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"),
        response_format="verbose_json", timestamp_granularities=["word"],
    )
    assert result.words is not None and [w.word for w in result.words][:3] == ["The", "quick", "brown"]
    assert fake_huggingface.last_parameters() == {"return_timestamps": "word"}


def test_sdk_stream_is_synthesized(sdk: openai.OpenAI, fake_huggingface: FakeHuggingFace) -> None:
    stream = sdk.audio.transcriptions.create(
        model=f"huggingface/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), stream=True
    )
    events = list(stream)
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert events[-1].type == "transcript.text.done" and events[-1].text.strip() == TRANSCRIPT
    assert deltas == events[-1].text


def test_sdk_refused_parameter_is_a_400_naming_it(sdk: openai.OpenAI, fake_huggingface: FakeHuggingFace) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model=f"huggingface/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"), prompt="Ada")
    assert "cannot take prompt" in str(info.value) and fake_huggingface.requests == []


def test_sdk_upstream_auth_error_names_the_key(sdk: openai.OpenAI, fake_huggingface: FakeHuggingFace) -> None:
    fake_huggingface.keys = {"hf_some_other_token"}
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model=f"huggingface/{MODEL}", file=("speech.wav", wav_bytes(), "audio/wav"))
    body: Any = info.value.body
    assert "Invalid credentials" in body["message"] and "hf-main" in body["message"]
    assert HF_TOKEN not in str(info.value.response.text)


# ------------------------------------------------------------------- upstream's model strings and base URL


def test_route_base_and_model_strings() -> None:
    from bifrost_stt.providers.huggingface import DEFAULT_BASE_URL, route_base, split_route

    assert DEFAULT_BASE_URL == "https://router.huggingface.co"
    assert split_route("hf-inference/openai/whisper-large-v3") == ("hf-inference", "openai/whisper-large-v3")
    assert split_route("openai/whisper-large-v3") == (None, "openai/whisper-large-v3")
    root = "https://router.huggingface.co"
    assert route_base(root, None) == route_base(root + "/", "hf-inference") == root + "/hf-inference"
    assert route_base(root, "fal-ai") == root + "/fal-ai"
    assert route_base(root + "/hf-inference", "hf-inference") == root + "/hf-inference"
    assert route_base(root + "/hf-inference", "fal-ai") == root + "/fal-ai"  # the earlier default, moved
    assert route_base("https://x.endpoints.huggingface.cloud/asr", None) == "https://x.endpoints.huggingface.cloud/asr"
    for bad in ("../secrets/x", "hf-inference/../../x", "a/b/c/d", "openai/whisper?x=1", "", "a//b"):
        with pytest.raises(ClientError, match="invalid Hugging Face model"):
            split_route(bad)


@pytest.fixture
def upstream_config_gateway(run_gateway: Any, fake_huggingface: FakeHuggingFace, tmp_path: Any) -> str:
    """A gateway from an upstream Bifrost config file: base_url is the router itself, as upstream documents it."""
    import json

    from bifrost_stt.gateway.config.load import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": {"huggingface": {
        "keys": [{"name": "hf-main", "value": HF_TOKEN, "weight": 1.0, "models": ["*"]}],
        "network_config": {"base_url": fake_huggingface.url},
    }}}))
    return run_gateway(load_config(path, {}))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("model", "path", "raw"),
    [
        ("huggingface/hf-inference/openai/whisper-large-v3", "/hf-inference/models/openai/whisper-large-v3", True),
        ("huggingface/openai/whisper-large-v3", "/hf-inference/models/openai/whisper-large-v3", True),  # shorthand
        ("huggingface/fal-ai/openai/whisper-large-v3", "/fal-ai/models/openai/whisper-large-v3", False),
    ],
)
def test_upstream_model_strings_reach_the_inference_provider(
    upstream_config_gateway: str, fake_huggingface: FakeHuggingFace, model: str, path: str, raw: bool
) -> None:
    with httpx.Client(base_url=upstream_config_gateway) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": model},
                   files={"file": ("speech.wav", wav_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    assert r.json()["text"].strip() == TRANSCRIPT
    assert r.json()["extra_fields"]["model_requested"] == model.removeprefix("huggingface/")
    seen = fake_huggingface.last
    assert seen.path == path and seen.headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert (seen.content_type == "audio/wav") is raw and decoded_audio(seen) == wav_bytes()


async def test_the_earlier_route_base_takes_the_full_model_string_without_doubling(
    hf: HuggingFace, fake_huggingface: FakeHuggingFace
) -> None:
    """base_url ``…/hf-inference`` (this gateway's earlier default) and upstream's model string."""
    await hf.transcribe(request(), attempt(fake_huggingface, model="hf-inference/" + MODEL))
    assert fake_huggingface.last.path == f"/hf-inference/models/{MODEL}"


def test_a_model_string_that_would_leave_the_route_is_a_400(
    upstream_config_gateway: str, fake_huggingface: FakeHuggingFace
) -> None:
    with httpx.Client(base_url=upstream_config_gateway) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": "huggingface/hf-inference/../../v1/x"},
                   files={"file": ("speech.wav", wav_bytes(), "audio/wav")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert "invalid Hugging Face model" in r.json()["error"]["message"]
    assert fake_huggingface.requests == []
