"""Capabilities decided by the upstream's answer, not by model names, end to end.

Fake upstreams behave like deployments whose names no pattern knows: an Azure deployment named by its owner
(``eu-speech-main`` serving gpt-4o-transcribe: streams SSE, refuses verbose_json/srt/vtt with OpenAI's real
400 wording), one serving whisper-1 (answers JSON to ``stream=true``), and an OpenAI model newer than the
patterns. Each test asserts what the client received and what reached the upstream, including that a second
request goes straight to the format the gateway remembered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.audio import wav_bytes
from tests.fakes.openai import AZURE_KEY, TRANSCRIPT, FakeAzure, FakeOpenAI
from tests.fakes.server import error_reply
from tests.support import config_with

DEPLOYMENT = "eu-speech-main"  # gpt-4o-transcribe behind a name no pattern recognises
WHISPER_DEPLOYMENT = "team-asr"  # whisper-1 behind another owner's name
NEW_MODEL = "nova-transcribe"  # an OpenAI model newer than the gpt-4o pattern: streams, json/text only


@pytest.fixture
def azure(fake_azure: FakeAzure) -> Iterator[FakeAzure]:
    fake_azure.deployments[DEPLOYMENT] = "gpt-4o-transcribe"
    fake_azure.deployments[WHISPER_DEPLOYMENT] = "whisper-1"
    yield fake_azure
    fake_azure.reset()  # the fake is shared by the session: leave it as the next test expects


@pytest.fixture
def gateway(run_gateway: Callable[..., str], azure: FakeAzure, fake_openai: FakeOpenAI) -> Iterator[str]:
    fake_openai.models.add(NEW_MODEL)
    fake_openai.json_text_only.add(NEW_MODEL)
    yield run_gateway(config_with(azure.provider_config(), fake_openai.provider_config()))
    fake_openai.reset()


def post(url: str, model: str, *, path: str = "/v1/audio/transcriptions", **fields: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=10) as c:
        return c.post(path, data={"model": model, **fields},
                      files={"file": ("speech.wav", wav_bytes(), "audio/wav")})


def post_stream(url: str, model: str) -> tuple[httpx.Response, list[Any]]:
    """A stream request; the SSE payloads (parsed JSON, or "[DONE]") the client received."""
    r = post(url, model, stream="true")
    payloads: list[Any] = []
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for event in r.text.split("\n\n"):
            if event.startswith("data: "):
                data = event.removeprefix("data: ")
                payloads.append(data if data == "[DONE]" else json.loads(data))
    return r, payloads


def asked(fake: Any, since: int = 0) -> list[tuple[str | None, str | None]]:
    """(response_format, stream) of every request the upstream received (from the ``since``-th), in order."""
    return [(r.field("response_format"), r.field("stream")) for r in fake.requests[since:]]


def deltas(payloads: list[Any]) -> list[str]:
    return [p["delta"] for p in payloads if isinstance(p, dict) and p.get("type") == "transcript.text.delta"]


# ------------------------------------------------------------------------------------------ streams


def test_an_unknown_deployment_that_streams_is_relayed_and_its_format_remembered(gateway: str, azure: FakeAzure) -> None:
    r, payloads = post_stream(gateway, f"azure/{DEPLOYMENT}")
    assert r.status_code == 200 and payloads[-1] == "[DONE]"
    # relayed: the upstream's own events, one delta per word, and its token usage
    assert deltas(payloads) == [(" " if i else "") + w for i, w in enumerate(TRANSCRIPT.split())]
    done = payloads[-2]
    assert done["type"] == "transcript.text.done" and done["text"] == TRANSCRIPT and done["usage"]["type"] == "tokens"
    assert done["extra_fields"]["provider"] == "azure" and done["extra_fields"]["model_deployment"] == DEPLOYMENT
    # stream=true went upstream; verbose_json (the first guess for an unknown name) was refused, json taken
    assert asked(azure) == [("verbose_json", "true"), ("json", "true")]
    assert all(req.path == f"/openai/deployments/{DEPLOYMENT}/audio/transcriptions" for req in azure.requests)
    assert all(req.headers["api-key"] == AZURE_KEY for req in azure.requests)

    n = len(azure.requests)
    r, payloads = post_stream(gateway, f"azure/{DEPLOYMENT}")
    assert r.status_code == 200 and "".join(deltas(payloads)) == TRANSCRIPT
    assert asked(azure, n) == [("json", "true")]  # straight to the remembered format


def test_a_deployment_that_answers_json_to_stream_true_is_streamed_by_the_gateway(gateway: str, azure: FakeAzure) -> None:
    r, payloads = post_stream(gateway, f"azure/{WHISPER_DEPLOYMENT}")
    assert r.status_code == 200 and payloads[-1] == "[DONE]"
    done = payloads[-2]
    assert done["text"] == TRANSCRIPT == "".join(deltas(payloads)) and done["usage"]["type"] == "duration"
    # asked once, to stream, in a format with segments; it answered JSON (whisper ignores stream)
    assert asked(azure) == [("verbose_json", "true")]
    assert azure.last.path == f"/openai/deployments/{WHISPER_DEPLOYMENT}/audio/transcriptions"


def test_a_deployment_that_refuses_the_stream_field_is_streamed_by_the_gateway(gateway: str, azure: FakeAzure) -> None:
    path = f"/openai/deployments/{WHISPER_DEPLOYMENT}/audio/transcriptions"
    azure.enqueue(error_reply(400, "Unrecognized request argument supplied: stream"), path=path)
    r, payloads = post_stream(gateway, f"azure/{WHISPER_DEPLOYMENT}")
    assert r.status_code == 200 and payloads[-1] == "[DONE]"
    assert payloads[-2]["text"] == TRANSCRIPT == "".join(deltas(payloads))
    assert asked(azure) == [("verbose_json", "true"), ("verbose_json", None)]  # refused; then asked plainly
    n = len(azure.requests)
    r, payloads = post_stream(gateway, f"azure/{WHISPER_DEPLOYMENT}")
    assert r.status_code == 200 and "".join(deltas(payloads)) == TRANSCRIPT
    assert asked(azure, n) == [("verbose_json", None)]  # remembered: not asked to stream again


def test_a_model_newer_than_the_patterns_streams_natively(gateway: str, fake_openai: FakeOpenAI) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway}/openai/v1", api_key="sk-client", max_retries=0)
    events = list(sdk.audio.transcriptions.create(
        model=NEW_MODEL, file=("speech.wav", wav_bytes(), "audio/wav"), stream=True
    ))
    assert events[-1].type == "transcript.text.done" and events[-1].text == TRANSCRIPT
    assert len([e for e in events if e.type == "transcript.text.delta"]) == len(TRANSCRIPT.split())
    assert asked(fake_openai) == [("verbose_json", "true"), ("json", "true")]
    assert all(req.field("model") == NEW_MODEL for req in fake_openai.requests)


# -------------------------------------------------------------------------------------- transcriptions


def test_a_refused_format_is_rendered_from_json_and_remembered(gateway: str, azure: FakeAzure) -> None:
    r = post(gateway, f"azure/{DEPLOYMENT}", response_format="srt")
    assert r.status_code == 200, r.text
    srt = r.json()["text"]  # the unified route answers {"text": <srt>}
    assert srt.startswith("1\n00:00:00,000 --> ") and TRANSCRIPT.split()[0] in srt
    assert r.json()["extra_fields"]["model_deployment"] == DEPLOYMENT
    # the refusal named what the model takes (json, text): the second ask went straight to json
    assert asked(azure) == [("srt", None), ("json", None)]

    n = len(azure.requests)
    r = post(gateway, f"azure/{DEPLOYMENT}", response_format="vtt")
    assert r.status_code == 200 and r.json()["text"].startswith("WEBVTT")
    assert asked(azure, n) == [("json", None)]  # vtt was ruled out by the same refusal

    n = len(azure.requests)
    r = post(gateway, f"azure/{DEPLOYMENT}", response_format="text")
    assert r.status_code == 200 and r.json()["text"].strip() == TRANSCRIPT
    assert asked(azure, n) == [("text", None)]  # what it takes is still asked for as it is


def test_timings_a_deployment_turned_out_not_to_have_are_a_400_naming_them(gateway: str, azure: FakeAzure) -> None:
    r = post(gateway, f"azure/{DEPLOYMENT}", path="/openai/v1/audio/transcriptions", response_format="verbose_json",
             **{"timestamp_granularities[]": "word"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["param"] == "timestamp_granularities" and "word" in body["error"]["message"]
    assert asked(azure) == [("verbose_json", None)]  # asked once as the client wanted; refused; not worked around

    n = len(azure.requests)
    r = post(gateway, f"azure/{DEPLOYMENT}", response_format="verbose_json")
    assert r.status_code == 200 and r.json()["text"] == TRANSCRIPT  # rendered from json, no timings to show
    assert asked(azure, n) == [("json", None)]


def test_a_known_model_is_asked_as_its_pattern_says(gateway: str, azure: FakeAzure, fake_openai: FakeOpenAI) -> None:
    """Patterns stay the first guess: a model they know costs no refused request."""
    r = post(gateway, "openai/gpt-4o-transcribe", response_format="srt")
    assert r.status_code == 200 and asked(fake_openai) == [("json", None)]
    r = post(gateway, f"azure/{WHISPER_DEPLOYMENT}", response_format="srt")
    assert r.status_code == 200 and asked(azure) == [("srt", None)]


def test_a_refusal_of_json_itself_is_the_clients_error(gateway: str, azure: FakeAzure) -> None:
    azure.deployments["odd"] = "gpt-4o-transcribe"
    azure.enqueue(error_reply(400, "response_format 'json' is not supported here", param="response_format"))
    r = post(gateway, "azure/odd")
    assert r.status_code == 400 and "not supported here" in r.json()["error"]["message"]
    assert asked(azure) == [("json", None)]
