"""Every provider × every response format × with and without timestamp_granularities, end to end.

The openai SDK talks to a real gateway on loopback, which talks to the fake upstreams. For a format the
provider renders itself, the upstream is asked for exactly that and its answer reaches the client
unchanged (text/srt/vtt byte for byte; json/verbose_json key for key, plus the gateway's extra_fields).
For a format it lacks (Groq has no srt/vtt), the upstream is asked for verbose_json with timings and the
client gets the gateway's rendering of those timings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from bifrost_stt.gateway.render import formats
from bifrost_stt.providers.openai_compat import to_result
from tests.audio import wav_bytes
from tests.fakes.openai import TRANSCRIPT, FakeOpenAI
from tests.support import config_with, serve
from bifrost_stt.server.app import create_app

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES: tuple[tuple[str, ...], ...] = ((), ("word",), ("segment",), ("word", "segment"))
# provider -> (model the client names on the integration route, formats the upstream renders itself)
PROVIDERS = {
    "openai": ("whisper-1", frozenset(FORMATS)),
    "azure": ("azure/whisper", frozenset(FORMATS)),
    "groq": ("groq/whisper-large-v3", frozenset({"json", "text", "verbose_json"})),
}
TEXT = "text/plain; charset=utf-8"


@pytest.fixture
def fakes(fake_openai: FakeOpenAI, fake_azure: FakeOpenAI, fake_groq: FakeOpenAI) -> dict[str, FakeOpenAI]:
    return {"openai": fake_openai, "azure": fake_azure, "groq": fake_groq}


def audio_file() -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(), "audio/wav")


def upstream_answer(fake: FakeOpenAI) -> Any:
    """What the fake sent for its last request: str for text bodies, the parsed JSON otherwise."""
    reply = fake.handle(fake.last)  # deterministic: the same request gets the same answer
    assert reply.status == 200, reply.body
    return reply.body


def expected_rendering(answer: Any, fmt: str, granularities: tuple[str, ...]) -> Any:
    """The gateway's rendering of the upstream's verbose_json (used only when fmt is not native)."""
    return formats.render(to_result(answer, "verbose_json"), fmt, granularities=granularities)


def _create(sdk: openai.OpenAI, model: str, fmt: str, granularities: tuple[str, ...]) -> httpx.Response:
    kwargs: dict[str, Any] = {"model": model, "file": audio_file(), "response_format": fmt}
    if granularities:
        kwargs["timestamp_granularities"] = list(granularities)
    raw = sdk.audio.transcriptions.with_raw_response.create(**kwargs)
    parsed = raw.parse()  # what an SDK user gets: str for text formats, a model for the JSON ones
    if fmt in ("text", "srt", "vtt"):
        assert isinstance(parsed, str) and parsed == raw.http_response.text
    else:
        assert parsed.text
    return raw.http_response


@pytest.mark.parametrize("granularities", GRANULARITIES, ids=lambda g: "+".join(g) or "none")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_provider_every_format(
    gateway_url: str, fakes: dict[str, FakeOpenAI], provider: str, fmt: str, granularities: tuple[str, ...]
) -> None:
    model, native = PROVIDERS[provider]
    fake = fakes[provider]
    sdk = openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="sk-client", max_retries=0)
    response = _create(sdk, model, fmt, granularities)
    assert response.headers["x-bifrost-provider"] == provider

    upstream = fake.last
    answer = upstream_answer(fake)
    if fmt in native:
        assert upstream.field("response_format") == fmt
        assert upstream.fields("timestamp_granularities[]") == list(granularities)
        if isinstance(answer, str):
            assert response.headers["content-type"] == TEXT
            assert response.content == answer.encode("utf-8")  # byte for byte
        else:
            body = orjson.loads(response.content)
            assert body.pop("extra_fields")["provider"] == provider
            assert body == answer  # every key and value the upstream sent (x_groq included)
        return

    assert upstream.field("response_format") == "verbose_json"
    asked = upstream.fields("timestamp_granularities[]")
    assert "segment" in asked and ("word" in asked) == ("word" in granularities)
    assert set(answer) >= {"task", "language", "duration", "text", "segments"}
    assert response.headers["content-type"] == TEXT
    assert response.text == expected_rendering(answer, fmt, granularities)


def test_groq_srt_is_rendered_from_its_segments(gateway_url: str, fake_groq: FakeOpenAI) -> None:
    """One rendering spelled out, so the matrix above is not only checked against the renderer itself."""
    sdk = openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="x", max_retries=0)
    srt = sdk.audio.transcriptions.create(model="groq/whisper-large-v3", file=audio_file(), response_format="srt")
    vtt = sdk.audio.transcriptions.create(model="groq/whisper-large-v3", file=audio_file(), response_format="vtt")
    lines = "The quick brown fox\njumps over the lazy dog."
    assert srt == f"1\n00:00:00,000 --> 00:00:04,500\n{lines}\n\n"
    assert vtt == f"WEBVTT\n\n00:00:00.000 --> 00:00:04.500\n{lines}\n\n"


@pytest.mark.parametrize("granularities", [(), ("word",)], ids=["none", "word"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_verbose_json_always_has_its_fields(
    gateway_url: str, fakes: dict[str, FakeOpenAI], provider: str, granularities: tuple[str, ...]
) -> None:
    model, _ = PROVIDERS[provider]
    sdk = openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="x", max_retries=0)
    kwargs: dict[str, Any] = {"timestamp_granularities": list(granularities)} if granularities else {}
    result = sdk.audio.transcriptions.create(
        model=model, file=audio_file(), response_format="verbose_json", **kwargs
    )
    assert result.text == TRANSCRIPT
    assert result.language and result.duration == 4.5
    assert result.model_extra is not None and result.model_extra.get("task") == "transcribe"
    if granularities:
        assert [w.word for w in result.words or []] == TRANSCRIPT.rstrip(".").split()
    else:
        assert result.segments and result.segments[0].end == 4.5


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_unified_route_every_provider_every_format(
    gateway_url: str, fakes: dict[str, FakeOpenAI], provider: str, fmt: str
) -> None:
    """The unified route answers JSON always; text formats as {"text": <the same body>} like upstream."""
    model, native = PROVIDERS[provider]
    qualified = model if "/" in model else f"{provider}/{model}"
    with httpx.Client(base_url=gateway_url, timeout=10) as http:
        r = http.post("/v1/audio/transcriptions", data={"model": qualified, "response_format": fmt},
                      files={"file": audio_file()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body.pop("extra_fields")["provider"] == provider
    answer = upstream_answer(fakes[provider])
    if fmt in native:
        assert body == ({"text": answer} if isinstance(answer, str) else answer)
    else:
        assert body == {"text": expected_rendering(answer, fmt, ())}
