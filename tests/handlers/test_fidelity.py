"""Issue 10 (part A): every route honours the whole request.

A real gateway on loopback in front of the fake upstreams; each test asserts what the client received and
what reached the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.audio import wav_bytes
from tests.fakes.openai import TRANSCRIPT
from tests.support import config_with, serve, strict_app

UNIFIED = "/v1/audio/transcriptions"
AZURE = "/openai/openai/deployments/whisper/audio/transcriptions"

# provider -> (a model its fake serves, what reached the upstream says about word timings)
WORD_TIMINGS: dict[str, tuple[str, Any]] = {
    "openai": ("whisper-1", lambda r: r.fields("timestamp_granularities[]") == ["word"]),
    "groq": ("whisper-large-v3", lambda r: r.fields("timestamp_granularities[]") == ["word"]),
    "fireworks": ("whisper-v3", lambda r: r.fields("timestamp_granularities[]") == ["word"]),
    "mistral": ("voxtral-mini-latest", lambda r: "word" in r.fields("timestamp_granularities")),
    "elevenlabs": ("scribe_v1", lambda r: r.field("timestamps_granularity") == "word"),
    "deepgram": ("nova-3", lambda r: True),  # Deepgram always answers word timings
}


@pytest.fixture(scope="module")
def gateway(
    _fake_openai_server: Any, _fake_azure_server: Any, _fake_groq_server: Any, _fake_fireworks_server: Any,
    _fake_mistral_server: Any, _fake_elevenlabs_server: Any, _fake_deepgram_server: Any,
    _fake_gemini_server: Any, _fake_vllm_server: Any,
) -> Iterator[str]:
    fakes = (
        _fake_openai_server, _fake_azure_server, _fake_groq_server, _fake_fireworks_server, _fake_mistral_server,
        _fake_elevenlabs_server, _fake_deepgram_server, _fake_gemini_server, _fake_vllm_server,
    )
    for server in fakes:  # an earlier module may have left its own keys set
        server.reset()
    config = config_with(*(server.provider_config() for server in fakes))
    with serve(strict_app(config)) as url:
        yield url


@pytest.fixture
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=10) as client:
        yield client


def audio() -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("speech.wav", wav_bytes(), "audio/wav")}


def fake(request: pytest.FixtureRequest, provider: str) -> Any:
    return request.getfixturevalue(f"fake_{provider}")


# ------------------------------------------------------------------ 1. the unified route drops nothing


@pytest.mark.parametrize("spelling", ["timestamp_granularities[]", "timestamp_granularities"])
@pytest.mark.parametrize("provider", sorted(WORD_TIMINGS))
def test_unified_route_word_timestamps_reach_every_provider(
    http: httpx.Client, request: pytest.FixtureRequest, provider: str, spelling: str
) -> None:
    upstream = fake(request, provider)
    model, asked_for_words = WORD_TIMINGS[provider]
    r = http.post(UNIFIED, data={"model": f"{provider}/{model}", "response_format": "verbose_json",
                                 spelling: "word"}, files=audio())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["words"] and all({"word", "start", "end"} <= set(w) for w in body["words"])
    assert body["extra_fields"]["provider"] == provider
    assert asked_for_words(upstream.last), upstream.last.form


@pytest.mark.parametrize("provider", ["openai", "groq", "fireworks"])
def test_unified_route_passes_temperature_on_as_the_openai_route_does(
    http: httpx.Client, request: pytest.FixtureRequest, provider: str
) -> None:
    upstream = fake(request, provider)
    model = WORD_TIMINGS[provider][0]
    for route, name in ((UNIFIED, f"{provider}/{model}"), ("/openai/v1/audio/transcriptions", f"{provider}/{model}")):
        r = http.post(route, data={"model": name, "temperature": "0.2"}, files=audio())
        assert r.status_code == 200, r.text
        assert upstream.last.field("temperature") == "0.2"
        assert upstream.last.fields("timestamp_granularities[]") == []


@pytest.mark.parametrize("value", ["2", "hot", "-0.5"])
def test_unified_route_validates_temperature(http: httpx.Client, fake_openai: Any, value: str) -> None:
    r = http.post(UNIFIED, data={"model": "openai/whisper-1", "temperature": value}, files=audio())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "temperature"
    assert fake_openai.requests == []


def test_unified_route_validates_granularities(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post(UNIFIED, data={"model": "openai/whisper-1", "response_format": "verbose_json",
                                 "timestamp_granularities[]": "character"}, files=audio())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "timestamp_granularities"
    assert fake_openai.requests == []


def test_unified_route_with_the_openai_sdk_gets_words(gateway: str, fake_groq: Any) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
    result = sdk.audio.transcriptions.create(
        model="groq/whisper-large-v3", file=("speech.wav", wav_bytes(), "audio/wav"),
        response_format="verbose_json", timestamp_granularities=["word"],
    )
    assert result.words and result.words[0].word
    assert fake_groq.last.fields("timestamp_granularities[]") == ["word"]


# ------------------------------------------------------------------ 3. Azure: the deployment is the model


def test_azure_route_takes_a_request_with_only_a_file(http: httpx.Client, fake_azure: Any) -> None:
    r = http.post(AZURE, params={"api-version": "2024-10-21"}, files=audio())
    assert r.status_code == 200, r.text
    assert r.json()["text"] == TRANSCRIPT
    assert fake_azure.last.path == "/openai/deployments/whisper/audio/transcriptions"
    assert r.headers["x-bifrost-original-model"] == "whisper"


def test_other_integration_routes_still_require_model(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post("/openai/v1/audio/transcriptions", files=audio())
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert fake_openai.requests == []


def test_served_contract_declares_model_optional_on_azure_only(gateway: str) -> None:
    doc = httpx.get(f"{gateway}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    azure_ref = doc["paths"]["/openai/openai/deployments/{deployment-id}/audio/transcriptions"]["post"][
        "requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    azure = schemas[azure_ref.rsplit("/", 1)[1]]
    assert azure["required"] == ["file"]
    assert set(azure["properties"]) == set(schemas["OpenAITranscriptionRequest"]["properties"])
    assert schemas["OpenAITranscriptionRequest"]["required"] == ["model", "file"]
    assert {"temperature", "timestamp_granularities"} <= set(schemas["TranscriptionRequest"]["properties"])


# ------------------------------------------------------------------ 4. diarized_json, one shape for all

DIARIZERS = {
    "openai": "gpt-4o-transcribe-diarize",
    "fireworks": "whisper-v3",
    "elevenlabs": "scribe_v1",
    "deepgram": "nova-3",
    "mistral": "voxtral-mini-latest",
}


def _asked_to_diarize(provider: str, upstream: Any) -> bool:
    last = upstream.last
    if provider == "openai":
        return bool(last.field("response_format") == "diarized_json")
    if provider == "deepgram":
        return bool(last.params.get("diarize") == "true")
    return bool(last.field("diarize") == "true")


@pytest.mark.parametrize("route", [UNIFIED, "/openai/v1/audio/transcriptions"])
@pytest.mark.parametrize("provider", sorted(DIARIZERS))
def test_diarized_json_is_one_shape_from_every_diarizing_provider(
    http: httpx.Client, request: pytest.FixtureRequest, provider: str, route: str
) -> None:
    upstream = fake(request, provider)
    r = http.post(route, data={"model": f"{provider}/{DIARIZERS[provider]}", "response_format": "diarized_json"},
                  files=audio())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "transcribe" and body["text"] and body["duration"] > 0
    segments = body["segments"]
    assert segments, body
    for i, segment in enumerate(segments):
        assert set(segment) == {"type", "id", "start", "end", "text", "speaker"}, segment
        assert segment["type"] == "transcript.text.segment" and segment["id"] == f"seg_{i}"
        assert segment["speaker"] in {"A", "B", "C"}, segment  # vendor numbering becomes A, B, ...
        assert 0 <= segment["start"] <= segment["end"] and segment["text"]
    assert segments[0]["speaker"] == "A"
    assert _asked_to_diarize(provider, upstream), upstream.last.form


@pytest.mark.parametrize(("provider", "model"), [
    ("groq", "whisper-large-v3"), ("openai", "whisper-1"), ("gemini", "gemini-2.5-flash"), ("vllm", "whisper-small"),
])
def test_diarized_json_for_a_target_that_cannot_is_400_naming_the_format(
    http: httpx.Client, request: pytest.FixtureRequest, provider: str, model: str
) -> None:
    upstream = fake(request, provider)
    r = http.post(UNIFIED, data={"model": f"{provider}/{model}", "response_format": "diarized_json"}, files=audio())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "response_format" and "diarized_json" in error["message"]
    assert upstream.requests == []


def test_diarized_json_falls_back_to_a_target_that_diarizes(
    http: httpx.Client, fake_groq: Any, fake_deepgram: Any
) -> None:
    r = http.post(UNIFIED, data={"model": "groq/whisper-large-v3", "response_format": "diarized_json",
                                 "fallbacks": "deepgram/nova-3"}, files=audio())
    assert r.status_code == 200, r.text
    assert r.json()["segments"][0]["speaker"] == "A"
    assert fake_groq.requests == [] and fake_deepgram.last.params.get("diarize") == "true"


# ------------------------------------------------------------------ 5. language, in each provider's form

def _gemini_prompt(upstream: Any) -> str:
    parts = upstream.last.json()["contents"][0]["parts"]
    return " ".join(p["text"] for p in parts if "text" in p)


@pytest.mark.parametrize(("provider", "model", "sent", "reached"), [
    ("openai", "whisper-1", "en", lambda u: u.last.field("language") == "en"),
    ("openai", "whisper-1", "en-US", lambda u: u.last.field("language") == "en"),
    ("groq", "whisper-large-v3", "de", lambda u: u.last.field("language") == "de"),
    ("mistral", "voxtral-mini-latest", "fr", lambda u: u.last.field("language") == "fr"),
    ("elevenlabs", "scribe_v1", "en", lambda u: u.last.field("language_code") == "eng"),
    ("elevenlabs", "scribe_v1", "el", lambda u: u.last.field("language_code") == "ell"),
    ("deepgram", "nova-3", "en", lambda u: u.last.params.get("language") == "en"),
    ("deepgram", "nova-3", "en_us", lambda u: u.last.params.get("language") == "en-US"),
    ("gemini", "gemini-2.5-flash", "de", lambda u: "German" in _gemini_prompt(u)),
])
def test_language_reaches_each_provider_in_its_form(
    http: httpx.Client, request: pytest.FixtureRequest, provider: str, model: str, sent: str, reached: Any
) -> None:
    upstream = fake(request, provider)
    r = http.post(UNIFIED, data={"model": f"{provider}/{model}", "language": sent}, files=audio())
    assert r.status_code == 200, r.text
    assert reached(upstream), upstream.last.form or upstream.last.params


@pytest.mark.parametrize("route", [UNIFIED, "/openai/v1/audio/transcriptions", AZURE])
@pytest.mark.parametrize("language", ["xx", "english", "e", "en-", "123"])
def test_unknown_language_is_400_naming_the_field(
    http: httpx.Client, fake_openai: Any, fake_azure: Any, route: str, language: str
) -> None:
    model = "openai/whisper-1" if route == UNIFIED else "whisper-1"
    r = http.post(route, data={"model": model, "language": language}, files=audio())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "language"
    assert fake_openai.requests == [] and fake_azure.requests == []


def test_the_contracts_language_pattern_is_the_kernels_table() -> None:
    import re

    from bifrost_stt.gateway.contract.loading import load_contract
    from bifrost_stt.kernel.languages import ISO_639_1

    schemas = load_contract()["components"]["schemas"]
    for name in ("TranscriptionRequest", "OpenAITranscriptionRequest", "AzureTranscriptionRequest"):
        pattern = schemas[name]["properties"]["language"]["pattern"]
        codes = re.search(r"\(\?:\(\?:([a-z|]+)\)", pattern)
        assert codes is not None and set(codes.group(1).split("|")) == set(ISO_639_1), name


def test_declared_fields_no_canonical_field_holds_are_passed_on_as_sent() -> None:
    """A field the contract declares (say a future upstream one) but the handlers do not read is not dropped."""
    from bifrost_stt.handlers.inbound import _declared_extras

    fields = {"model": "m", "temperature": 0.2, "diarize": True, "num_speakers": 2, "tags": ["a", "b"],
              "opts": {"k": 1}, "absent": None}
    assert _declared_extras(fields) == [
        ("diarize", "true"), ("num_speakers", "2"), ("tags[]", "a"), ("tags[]", "b"), ("opts", '{"k": 1}'),
    ]


@pytest.mark.parametrize("model", ["gpt-4o-transcribe-diarize", "elevenlabs/scribe_v1", "deepgram/nova-3"])
def test_openai_sdk_reads_diarized_json(gateway: str, request: pytest.FixtureRequest, model: str) -> None:
    for provider in ("openai", "elevenlabs", "deepgram"):
        request.getfixturevalue(f"fake_{provider}")
    sdk = openai.OpenAI(base_url=f"{gateway}/openai/v1", api_key="unused", max_retries=0)
    result = sdk.audio.transcriptions.create(
        model=model, file=("speech.wav", wav_bytes(), "audio/wav"), response_format="diarized_json",
    )
    segments = result.segments  # the SDK's TranscriptionDiarized
    assert segments and segments[0].speaker == "A" and segments[0].type == "transcript.text.segment"
    assert result.text
