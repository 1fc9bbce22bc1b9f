"""End to end: the official openai SDK and raw HTTP -> a real gateway on loopback -> fake upstreams.

Each test asserts what the client got and what reached the upstream.
"""

from __future__ import annotations

import json
from dataclasses import replace
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from bifrost_stt.kernel.settings import KeyConfig, Secret
from tests.audio import wav_bytes
from tests.fakes.openai import AZURE_KEY, TRANSCRIPT
from tests.support import config_with, serve
from bifrost_stt.server.app import create_app

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="sk-client", max_retries=0)


@pytest.fixture
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=10) as c:
        yield c


def audio_file() -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(), "audio/wav")


# ------------------------------------------------------------------------------ integration routes (SDK)


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_sdk_every_format(client: openai.OpenAI, fake_openai: Any, fmt: str) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=audio_file(), response_format=fmt)
    if fmt in ("json", "verbose_json"):
        assert result.text == TRANSCRIPT
    else:
        assert isinstance(result, str)
        assert TRANSCRIPT.split()[0] in result
    if fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> ")
    if fmt == "vtt":
        assert result.startswith("WEBVTT")
    upstream = fake_openai.last
    assert upstream.path == "/v1/audio/transcriptions"
    assert upstream.field("model") == "whisper-1"
    assert upstream.field("response_format") == fmt
    assert upstream.names[0] == "model" and upstream.names[-1] == "file"
    assert upstream.file.filename == "speech.wav"
    assert upstream.file.data == wav_bytes()
    assert upstream.headers["authorization"] != "Bearer sk-client"  # the configured key, not the client's


def test_text_formats_are_plain_with_route_headers(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post(
        "/openai/v1/audio/transcriptions",
        data={"model": "whisper-1", "response_format": "srt"},
        files={"file": audio_file()},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-bifrost-provider"] == "openai"
    assert r.headers["x-bifrost-original-model"] == "whisper-1"
    assert r.headers["x-bifrost-resolved-model"] == "whisper-1"
    assert "x-bifrost-fallback-index" not in r.headers
    assert "-->" in r.text


def test_verbose_json_and_granularities_reach_upstream(client: openai.OpenAI, fake_openai: Any) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=audio_file(), response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.words and result.words[0].word == "The"
    assert result.segments
    assert result.duration > 0
    assert fake_openai.last.fields("timestamp_granularities[]") == ["word", "segment"]


def test_raw_bytes_upload_gets_a_real_filename(client: openai.OpenAI, fake_openai: Any) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=wav_bytes())
    assert result.text == TRANSCRIPT
    assert fake_openai.last.file.filename == "audio.wav"


@pytest.mark.parametrize("route", ["litellm", "langchain", "pydanticai"])
def test_framework_routes_serve_the_same_contract(gateway_url: str, fake_openai: Any, route: str) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway_url}/{route}/v1", api_key="x", max_retries=0)
    assert sdk.audio.transcriptions.create(model="whisper-1", file=audio_file(), response_format="text") \
        .startswith(TRANSCRIPT[:10])


def test_openai_alias_route(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post("/openai/audio/transcriptions", data={"model": "whisper-1"}, files={"file": audio_file()})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == TRANSCRIPT


def test_provider_prefix_routes_to_groq_and_renders_srt_groq_lacks(client: openai.OpenAI, fake_groq: Any) -> None:
    result = client.audio.transcriptions.create(
        model="groq/whisper-large-v3", file=audio_file(), response_format="srt"
    )
    assert result.startswith("1\n00:00:00,000 --> ")
    assert fake_groq.last.field("model") == "whisper-large-v3"
    assert fake_groq.last.field("response_format") == "verbose_json"


def test_other_form_fields_pass_through(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post(
        "/openai/v1/audio/transcriptions",
        data={"model": "whisper-1", "include[]": "logprobs", "language": "en", "prompt": "a, b, c"},
        files={"file": audio_file()},
    )
    assert r.status_code == 200, r.text
    assert fake_openai.last.field("include[]") == "logprobs"
    assert fake_openai.last.field("language") == "en"
    assert fake_openai.last.field("prompt") == "a, b, c"


# ------------------------------------------------------------------------------ Azure route


def test_azure_sdk_path_deployment_wins(gateway_url: str, fake_azure: Any) -> None:
    sdk = openai.AzureOpenAI(
        azure_endpoint=f"{gateway_url}/openai", api_key="anything", api_version="2024-10-21",
        azure_deployment="whisper", max_retries=0,
    )
    result = sdk.audio.transcriptions.create(model="some-other-model", file=audio_file(), response_format="json")
    assert result.text == TRANSCRIPT
    upstream = fake_azure.last
    assert upstream.path == "/openai/deployments/whisper/audio/transcriptions"
    assert upstream.params["api-version"] == "2024-10-21"
    assert upstream.headers["api-key"] == AZURE_KEY


@pytest.mark.parametrize("fmt", FORMATS)
def test_azure_sdk_every_format(gateway_url: str, fake_azure: Any, fmt: str) -> None:
    sdk = openai.AzureOpenAI(
        azure_endpoint=f"{gateway_url}/openai", api_key="anything", api_version="2024-10-21", max_retries=0
    )
    result = sdk.audio.transcriptions.create(model="whisper", file=audio_file(), response_format=fmt)
    text = result if isinstance(result, str) else result.text
    assert "quick brown fox" in text


# ------------------------------------------------------------------------------ unified route


def test_unified_route_json_with_extra_fields(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files={"file": audio_file()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == TRANSCRIPT
    extra = body["extra_fields"]
    assert extra["request_type"] == "transcription"
    assert extra["provider"] == "openai"
    assert extra["model_requested"] == "whisper-1"
    assert extra["model_deployment"] == "whisper-1"
    assert extra["chunk_index"] == 0
    assert isinstance(extra["latency"], int) and extra["latency"] >= 0


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_unified_route_wraps_text_formats_in_json(http: httpx.Client, fake_openai: Any, fmt: str) -> None:
    r = http.post(
        "/v1/audio/transcriptions",
        data={"model": "openai/whisper-1", "response_format": fmt},
        files={"file": audio_file()},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "quick brown fox" in r.json()["text"]


def test_unified_route_requires_provider_prefix(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": audio_file()})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert "provider/model" in body["error"]["message"]
    assert fake_openai.requests == []


# ------------------------------------------------------------------------------ errors


def _assert_envelope(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status_code"] == status
    assert isinstance(body["is_bifrost_error"], bool)
    assert body["error"]["message"]
    return body


def test_upstream_auth_error_keeps_its_fields(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.keys = {"sk-some-other-key"}
    sdk = openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(model="whisper-1", file=audio_file())
    body = info.value.body
    assert "Incorrect API key" in json.dumps(body)
    assert "sk-test-openai" not in json.dumps(body)


def test_unconfigured_provider_is_400_saying_how(http: httpx.Client) -> None:
    r = http.post(
        "/openai/v1/audio/transcriptions", data={"model": "mistral/voxtral-mini-latest"}, files={"file": audio_file()}
    )
    body = _assert_envelope(r, 400)
    assert "mistral" in body["error"]["message"] and "MISTRAL_API_KEY" in body["error"]["message"]


def test_missing_file_and_model(http: httpx.Client) -> None:
    body = _assert_envelope(http.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"},
                                      files={"other": ("a.txt", b"x")}), 400)
    assert "file" in body["error"]["message"]
    body = _assert_envelope(http.post("/v1/audio/transcriptions", files={"file": audio_file()}), 400)
    assert "model" in body["error"]["message"]


def test_file_sent_as_text_is_refused(http: httpx.Client) -> None:
    r = http.post("/v1/audio/transcriptions", files={"model": (None, "openai/whisper-1"), "file": (None, "abc")})
    body = _assert_envelope(r, 400)
    assert body["error"].get("param") == "file"


def test_bad_enum_names_the_field(http: httpx.Client) -> None:
    r = http.post(
        "/v1/audio/transcriptions", data={"model": "openai/whisper-1", "response_format": "mp3"},
        files={"file": audio_file()},
    )
    body = _assert_envelope(r, 400)
    assert "response_format" in json.dumps(body)


def test_unknown_path_and_method(http: httpx.Client) -> None:
    _assert_envelope(http.get("/v1/nothing-here"), 404)
    r = http.get("/v1/audio/transcriptions")
    _assert_envelope(r, 405)
    assert "POST" in r.headers.get("allow", "")


def test_json_body_is_415(http: httpx.Client) -> None:
    _assert_envelope(http.post("/v1/audio/transcriptions", json={"model": "openai/whisper-1"}), 415)


def test_malformed_multipart_is_400(http: httpx.Client) -> None:
    r = http.post(
        "/v1/audio/transcriptions",
        content=b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nopenai/whi",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    _assert_envelope(r, 400)


def test_non_audio_file_is_refused_before_upstream(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post(
        "/v1/audio/transcriptions", data={"model": "openai/whisper-1"},
        files={"file": ("notes.json", b'{"not": "audio"}', "application/json")},
    )
    _assert_envelope(r, 400)
    assert fake_openai.requests == []


def test_body_over_limit_is_413(run_gateway: Any, fake_openai: Any) -> None:
    url = run_gateway(config_with(fake_openai.provider_config(), max_request_body_size_mb=1))
    with httpx.Client(base_url=url) as c:
        r = c.post(
            "/v1/audio/transcriptions", data={"model": "openai/whisper-1"},
            files={"file": ("big.wav", wav_bytes() + bytes(2 * 1024 * 1024), "audio/wav")},
        )
    _assert_envelope(r, 413)
    assert fake_openai.requests == []


def test_upstream_connection_refused_is_502(run_gateway: Any, refused_url: str) -> None:
    from tests.support import provider

    url = run_gateway(config_with(provider("openai", refused_url)))
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files={"file": audio_file()})
    body = _assert_envelope(r, 502)
    assert "openai" in body["error"]["message"]


def test_no_key_leaks_in_any_error_or_log(
    run_gateway: Any, fake_openai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected key, an upstream echoing it, retries, streams and fallbacks: the value never shows."""
    secret = "sk-super-secret-value-123456"
    fake_openai.keys = {"sk-another"}
    cfg = fake_openai.provider_config(max_retries=1, retry_backoff_initial=1, retry_backoff_max=2)
    cfg = replace(cfg, keys=(KeyConfig(name="prod", value=Secret(secret)),))
    caplog.set_level(logging.DEBUG)
    url = run_gateway(config_with(cfg))
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1", "fallbacks": "groq/x"},
                   files={"file": audio_file()})
        s = c.post("/v1/audio/transcriptions", data={"model": "openai/gpt-4o-transcribe", "stream": "true"},
                   files={"file": audio_file()})
    assert r.status_code == 401 and s.status_code == 401
    assert "(key 'prod')" in r.json()["error"]["message"]
    assert "openai/whisper-1" in caplog.text  # the gateway's own log lines were captured
    for text in (r.text, s.text, caplog.text, repr(cfg)):
        assert secret not in text and secret[-6:] not in text


# ------------------------------------------------------------------------------ contract endpoints


def test_health(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "providers": ["azure", "groq", "openai"]}


def test_openapi_json_is_the_merged_31_contract(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/openai/audio/transcriptions" in doc["paths"]
    assert http.get("/docs/").status_code == 200


# ------------------------------------------------------------------------------ per-model capabilities


def test_gpt4o_model_gets_srt_rendered_by_the_gateway(client: openai.OpenAI, fake_openai: Any) -> None:
    result = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio_file(), response_format="srt")
    assert result.startswith("1\n00:00:00,000 --> ") and "quick brown fox" in result
    assert fake_openai.last.field("response_format") == "json"  # the model answers json/text only


def test_gpt4o_word_timestamps_are_refused_naming_the_field(client: openai.OpenAI, fake_openai: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=audio_file(), response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert info.value.body["param"] == "timestamp_granularities"  # type: ignore[index]
    assert fake_openai.requests == []


@pytest.mark.parametrize("fmt", ["json", "verbose_json"])
def test_openai_sdk_on_the_unified_route(gateway_url: str, fake_groq: Any, fmt: str) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
    result = sdk.audio.transcriptions.create(model="groq/whisper-large-v3", file=audio_file(), response_format=fmt)
    assert result.text == TRANSCRIPT
    assert result.model_extra["extra_fields"]["provider"] == "groq"  # type: ignore[index]
    assert fake_groq.last.field("model") == "whisper-large-v3"


def test_readme_fallback_example_through_the_sdk(client: openai.OpenAI, fake_openai: Any, fake_groq: Any) -> None:
    fake_openai.keys = {"sk-nobody"}  # the primary fails (401); the fallback serves
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=audio_file(), response_format="srt",
        extra_body={"fallbacks": ["groq/whisper-large-v3"]},
    )
    assert raw.status_code == 200
    assert raw.headers["x-bifrost-fallback-index"] == "1"
    assert raw.headers["x-bifrost-provider"] == "groq"
    assert raw.parse().startswith("1\n00:00:00,000 --> ")
    assert fake_openai.last.field("model") == "whisper-1"
    assert fake_groq.last.field("model") == "whisper-large-v3"


# ------------------------------------------------------------------------------ CORS


def test_cors_for_configured_origins_only(run_gateway: Any, fake_openai: Any) -> None:
    url = run_gateway(config_with(fake_openai.provider_config(), allowed_origins=("https://app.example",)))
    with httpx.Client(base_url=url) as c:
        pre = c.options("/v1/audio/transcriptions", headers={
            "origin": "https://app.example", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        ok = c.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files={"file": audio_file()},
                    headers={"origin": "https://app.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-bifrost-provider" in ok.headers["access-control-expose-headers"]
        err = c.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": audio_file()},
                     headers={"origin": "https://app.example"})
        assert err.status_code == 400 and err.headers["access-control-allow-origin"] == "https://app.example"
        other = c.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files={"file": audio_file()},
                       headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        refused = c.options("/v1/audio/transcriptions", headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "cors_refused"


def test_no_cors_headers_without_configured_origins(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files={"file": audio_file()},
                  headers={"origin": "https://app.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("segment", [
    {"id": None, "seek": None, "start": 0, "end": 1, "text": "x"},
    {"id": 0, "start": "a", "end": 1, "text": "x"},
])
def test_an_answer_that_breaks_its_shape_is_502_and_falls_back(
    http: httpx.Client, fake_openai: Any, fake_groq: Any, segment: dict[str, Any]
) -> None:
    from tests.fakes.server import Reply

    broken = {"text": "x", "language": "english", "duration": 1.0, "segments": [segment]}
    fake_openai.enqueue(Reply(200, broken), Reply(200, broken))
    data = {"model": "openai/whisper-1", "response_format": "verbose_json"}
    alone = http.post("/v1/audio/transcriptions", data=data, files={"file": audio_file()})
    assert alone.status_code == 502 and "could not read" in alone.json()["error"]["message"]
    saved = http.post("/v1/audio/transcriptions", data={**data, "fallbacks": "groq/whisper-large-v3"},
                      files={"file": audio_file()})
    assert saved.status_code == 200 and saved.headers["x-bifrost-fallback-index"] == "1"


def test_unconfigured_azure_names_its_real_variables(run_gateway: Any, fake_openai: Any) -> None:
    url = run_gateway(config_with(fake_openai.provider_config()))
    with httpx.Client(base_url=url) as c:
        r = c.post("/openai/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21",
                   data={"model": "whisper-1"}, files={"file": audio_file()})
    assert r.status_code == 400
    assert "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT" in r.json()["error"]["message"]


def test_fallbacks_are_capped_and_repeats_folded(http: httpx.Client, fake_openai: Any, fake_groq: Any) -> None:
    r = http.post("/v1/audio/transcriptions", files={"file": audio_file()},
                  data={"model": "openai/whisper-1", "fallbacks": ["openai/whisper-1"] * 17})
    body = _assert_envelope(r, 400)
    assert "fallbacks" in json.dumps(body)
    fake_openai.keys = {"sk-nobody"}  # the primary fails: count the calls
    r = http.post("/v1/audio/transcriptions", files={"file": audio_file()}, data={
        "model": "openai/whisper-1",
        "fallbacks": ["openai/whisper-1", "groq/whisper-large-v3", "groq/whisper-large-v3"]})
    assert r.status_code == 200 and r.headers["x-bifrost-fallback-index"] == "1"
    assert len(fake_openai.requests) == 1 and len(fake_groq.requests) == 1
