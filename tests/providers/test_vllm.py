"""vllm and custom named OpenAI-compatible providers: URLs, per-key servers, key-less calls, config files, SDK."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.server.app import create_app
from bifrost_stt.kernel.canonical import BytesAudio, TranscriptionRequest
from bifrost_stt.gateway.config.load import load_config
from bifrost_stt.kernel.errors import GatewayError, UpstreamError
from bifrost_stt.kernel.settings import KeyConfig, Secret
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Attempt, StreamingTranscriber
from bifrost_stt.providers.http import make_client
from bifrost_stt.providers.openai_compat import OpenAICompatible
from bifrost_stt.providers.openai_family import VLLM, PerKeyServer, vllm_url
from tests.audio import wav_bytes
from tests.fakes.openai import TRANSCRIPT
from tests.fakes.vllm import VLLM_KEY, VLLM_MODEL, FakeVLLM
from tests.support import serve

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(2000)


def request(**kw: Any) -> TranscriptionRequest:
    kw.setdefault("audio", BytesAudio(WAV, filename="speech.wav", content_type="audio/wav", format="wav"))
    return TranscriptionRequest(provider="vllm", model="whisper", **kw)


# ------------------------------------------------------------------------------------------ conversions


def test_url_key_server_wins_and_v1_suffix_is_tolerated() -> None:
    plain = Attempt(key=None, model="m", timeout=1)
    assert vllm_url("http://gpu:8000", plain) == "http://gpu:8000/v1/audio/transcriptions"
    assert vllm_url("http://gpu:8000/v1/", plain) == "http://gpu:8000/v1/audio/transcriptions"
    keyed = Attempt(key=KeyConfig(name="k", sections={"vllm_key_config": {"url": "http://other:9000/v1"}}), model="m", timeout=1)
    assert vllm_url("http://gpu:8000", keyed) == "http://other:9000/v1/audio/transcriptions"
    with pytest.raises(GatewayError, match="vllm_key_config.url"):
        vllm_url(None, plain)


def test_capabilities_declared_without_a_client() -> None:
    caps = registry.capabilities("vllm")
    assert caps is VLLM.capabilities and not caps.native_stream and not caps.word_timestamps
    assert caps.native_formats == {"json", "text", "verbose_json"}


# ------------------------------------------------------------------------------------------ on the wire


async def test_key_less_call_sends_no_authorization(fake_vllm: FakeVLLM) -> None:
    cfg = fake_vllm.provider_config()
    impl = registry.build(cfg, make_client(cfg))
    assert isinstance(impl, PerKeyServer) and not isinstance(impl, StreamingTranscriber)
    try:
        result = await impl.transcribe(request(response_format="verbose_json"), Attempt(key=None, model=VLLM_MODEL, timeout=5))
    finally:
        await impl.client.aclose()
    assert result.text == TRANSCRIPT and result.segments and result.language == "en"
    assert result.usage is not None and result.usage.seconds == 4
    seen = fake_vllm.last
    assert seen.path == "/v1/audio/transcriptions" and "authorization" not in seen.headers
    assert seen.form[0] == ("model", VLLM_MODEL) and seen.names[-1] == "file"


async def test_per_key_url_and_model_name(fake_vllm: FakeVLLM, fake_upstream: Any) -> None:
    cfg = fake_vllm.provider_config(base_url=fake_upstream.url)  # a base URL the key's own url overrides
    impl = registry.build(cfg, make_client(cfg))
    assert isinstance(impl, PerKeyServer)
    fake_vllm.api_keys = {VLLM_KEY}
    key = KeyConfig(name="gpu-a", value=Secret(VLLM_KEY),
                    sections={"vllm_key_config": {"url": fake_vllm.url + "/v1", "model_name": VLLM_MODEL}})
    assert impl.key_serves(key, VLLM_MODEL) and not impl.key_serves(key, "whisper")
    assert impl.key_serves(KeyConfig(name="any", sections={"vllm_key_config": {"url": "http://x"}}), "whisper")
    try:
        result = await impl.transcribe(request(), Attempt(key=key, model=VLLM_MODEL, timeout=5))
        with pytest.raises(UpstreamError) as info:
            wrong = KeyConfig(name="gpu-a", value=Secret("not-the-key-123"),
                              sections={"vllm_key_config": {"url": fake_vllm.url, "model_name": VLLM_MODEL}})
            await impl.transcribe(request(), Attempt(key=wrong, model=VLLM_MODEL, timeout=5))
    finally:
        await impl.client.aclose()
    assert result.text == TRANSCRIPT and fake_upstream.requests == []
    first = fake_vllm.requests[0]
    assert first.field("model") == VLLM_MODEL and first.headers["authorization"] == f"Bearer {VLLM_KEY}"
    assert (info.value.status, info.value.message) == (401, "Unauthorized")


async def test_vllm_errors_keep_status_and_message(fake_vllm: FakeVLLM) -> None:
    cfg = fake_vllm.provider_config()
    impl = registry.build(cfg, make_client(cfg))
    assert isinstance(impl, PerKeyServer)
    try:
        with pytest.raises(UpstreamError) as bad_format:
            await impl.transcribe(request(response_format="srt"), Attempt(key=None, model=VLLM_MODEL, timeout=5))
        with pytest.raises(UpstreamError) as bad_model:
            await impl.transcribe(request(), Attempt(key=None, model="nope", timeout=5))
    finally:
        await impl.client.aclose()
    assert (bad_format.value.status, bad_format.value.error_type) == (400, "BadRequestError")
    assert "verbose_json" in bad_format.value.message
    assert (bad_model.value.status, bad_model.value.message) == (404, "The model `nope` does not exist.")


# ------------------------------------------------------------------------- a config file, end to end (SDK)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, _fake_vllm_server: FakeVLLM, _fake_upstream_server: Any) -> Path:
    """Upstream-shaped config.json: vllm with a per-key server, and two custom named key-less providers."""
    document = {
        "providers": {
            "vllm": {
                "network_config": {"base_url": _fake_upstream_server.url},  # never used: the key's url wins
                "keys": [{
                    "name": "gpu-a", "value": "", "weight": 1, "models": ["*"],
                    "vllm_key_config": {"url": _fake_vllm_server.url + "/v1", "model_name": VLLM_MODEL},
                }],
            },
            "selfhosted": {
                "keys": [],
                "network_config": {"base_url": _fake_vllm_server.url},
                "custom_provider_config": {"base_provider_type": "vllm", "is_key_less": True},
            },
            "office-whisper": {
                "keys": [],
                "network_config": {"base_url": _fake_vllm_server.url},
                "custom_provider_config": {"base_provider_type": "openai", "is_key_less": True},
            },
        }
    }
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def sdk(config_file: Path) -> Iterator[openai.OpenAI]:
    config = load_config(config_file, env={})
    assert config.providers["selfhosted"].kind == "vllm" and config.providers["selfhosted"].is_key_less
    assert config.providers["office-whisper"].kind == "openai"
    with serve(create_app(config)) as url:
        yield openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-client", max_retries=0)


def upload() -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(), "audio/wav")


@pytest.mark.parametrize("provider", ["selfhosted", "vllm"])
@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_sdk_every_format(sdk: openai.OpenAI, fake_vllm: FakeVLLM, provider: str, fmt: str) -> None:
    model = VLLM_MODEL
    result: Any = sdk.audio.transcriptions.create(model=f"{provider}/{model}", file=upload(), response_format=fmt)  # type: ignore[call-overload]
    if fmt in ("json", "verbose_json"):
        assert result.text == TRANSCRIPT
    if fmt == "verbose_json":
        assert result.segments and result.segments[0].end == 4.5 and result.language == "en"
    if fmt == "text":
        assert result.strip() == TRANSCRIPT
    if fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> 00:00:04,500\n")
    if fmt == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.500\n")
    seen = fake_vllm.last
    assert seen.path == "/v1/audio/transcriptions" and "authorization" not in seen.headers  # key without a value
    assert seen.field("model") == VLLM_MODEL  # as requested (for vllm/: the model its key's model_name names)
    # vLLM cannot render srt/vtt: the gateway asked for verbose_json and rendered them
    assert seen.field("response_format") == ("verbose_json" if fmt in ("srt", "vtt") else fmt)
    assert seen.file is not None and seen.file.data == wav_bytes()


def test_sdk_stream_is_synthesized(sdk: openai.OpenAI, fake_vllm: FakeVLLM) -> None:
    events = list(sdk.audio.transcriptions.create(model=f"selfhosted/{VLLM_MODEL}", file=upload(), stream=True))
    assert events[-1].type == "transcript.text.done" and events[-1].text == TRANSCRIPT
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == TRANSCRIPT
    assert fake_vllm.last.field("stream") is None  # vLLM's own stream dialect is not used


def test_sdk_custom_openai_type_provider(sdk: openai.OpenAI, fake_vllm: FakeVLLM) -> None:
    text = sdk.audio.transcriptions.create(model=f"office-whisper/{VLLM_MODEL}", file=upload(), response_format="text")
    assert text.strip() == TRANSCRIPT
    assert fake_vllm.last.field("model") == VLLM_MODEL and "authorization" not in fake_vllm.last.headers


def test_sdk_server_with_api_key_rejects_a_key_less_call(sdk: openai.OpenAI, fake_vllm: FakeVLLM) -> None:
    fake_vllm.api_keys = {VLLM_KEY}
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model=f"selfhosted/{VLLM_MODEL}", file=upload())
    body: Any = info.value.body
    assert body["message"].startswith("Unauthorized") and info.value.status_code == 401


def test_sdk_upstream_refused_model_is_relayed(sdk: openai.OpenAI, fake_vllm: FakeVLLM) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.audio.transcriptions.create(model="selfhosted/whisper-nonexistent", file=upload())
    assert "does not exist" in str(info.value)


def test_httpx_unified_route_wraps_text(sdk: openai.OpenAI, fake_vllm: FakeVLLM) -> None:
    base = str(sdk.base_url).removesuffix("/openai/v1/")
    r = httpx.post(f"{base}/v1/audio/transcriptions", data={"model": f"selfhosted/{VLLM_MODEL}", "response_format": "srt"},
                   files={"file": upload()}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["text"].startswith("1\n00:00:00,000 --> ")
    # a named custom provider is reported by its name, in extra_fields as in the header
    assert r.json()["extra_fields"]["provider"] == "selfhosted" and r.headers["x-bifrost-provider"] == "selfhosted"


def test_openai_compatible_type_is_reused_not_subclassed() -> None:
    assert not issubclass(PerKeyServer, OpenAICompatible)


# ---------------------------------------------------- vllm_key_config.model_name selects the key (as upstream)


@pytest.fixture
def two_servers(run_gateway: Any, fake_vllm: FakeVLLM, tmp_path: Path) -> str:
    """One vllm provider, two keys: each names the model its server runs (the same fake, told apart by key)."""
    fake_vllm.api_keys = {"vllm-key-large", "vllm-key-small"}
    document = {"providers": {"vllm": {"keys": [
        {"name": "gpu-large", "value": "vllm-key-large", "weight": 1, "models": ["*"],
         "vllm_key_config": {"url": fake_vllm.url, "model_name": VLLM_MODEL}},
        {"name": "gpu-small", "value": "vllm-key-small", "weight": 1, "models": ["*"],
         "vllm_key_config": {"url": fake_vllm.url + "/v1", "model_name": "whisper-small"}},
    ]}}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return run_gateway(load_config(path, env={}))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "key"), [(VLLM_MODEL, "vllm-key-large"), ("whisper-small", "vllm-key-small")])
def test_model_name_selects_the_key_and_the_model_is_sent_unchanged(
    two_servers: str, fake_vllm: FakeVLLM, model: str, key: str
) -> None:
    for _ in range(4):  # weighted random choice among keys: every time the key serving the model
        r = httpx.post(f"{two_servers}/v1/audio/transcriptions", data={"model": f"vllm/{model}"},
                       files={"file": upload()}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["text"] == TRANSCRIPT
        extra = r.json()["extra_fields"]
        assert extra["model_requested"] == extra["model_deployment"] == model
        assert r.headers["x-bifrost-resolved-model"] == model
    assert [(q.field("model"), q.headers["authorization"]) for q in fake_vllm.requests] == [(model, f"Bearer {key}")] * 4


def test_a_model_no_key_serves_is_a_400_and_never_rewritten(two_servers: str, fake_vllm: FakeVLLM) -> None:
    r = httpx.post(f"{two_servers}/v1/audio/transcriptions", data={"model": "vllm/whisper-tiny"},
                   files={"file": upload()}, timeout=10)
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["param"] == "model" and body["error"]["code"] == "model_not_allowed"
    assert "whisper-tiny" in body["error"]["message"] and "vllm_key_config.model_name" in body["error"]["message"]
    assert fake_vllm.requests == []
