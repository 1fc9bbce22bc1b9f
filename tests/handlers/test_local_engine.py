"""The local engine end to end: the openai SDK and raw HTTP -> a real gateway on loopback -> the bundled model.

Zero config (nothing configured: every route is served locally), every format, native streaming, a
cloud provider failing over to ``local/tiny.en``, admission (503 when the queue is full) and a client going
away mid-decode. The gateway runs with strict response validation: every answer must fit the contract.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.server import Reply
from tests.local import LONG, SENTENCES, THRESHOLD, local_config, overlap
from tests.speech import speech_wav
from tests.support import config_with, serve, strict_app

from bifrost_stt.gateway.config.load import load_config
from bifrost_stt.gateway.render.formats import parse_subtitles
from bifrost_stt.server import cli

TEXT = " ".join(SENTENCES)


@pytest.fixture(scope="module")
def wav() -> Path:
    return speech_wav(SENTENCES)


@pytest.fixture(scope="module")
def zero_config_url() -> Iterator[str]:
    """A gateway started with nothing configured, as `./dev serve` on a fresh machine."""
    with serve(strict_app(load_config(None, {}))) as url:
        yield url


def seconds(wav: Path) -> float:
    return (wav.stat().st_size - 44) / 32000  # 16 kHz mono 16-bit (tests.speech)


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=120)


def post(url: str, path: str, audio: bytes, timeout: float = 120, **data: Any) -> httpx.Response:
    files = {"file": ("speech.wav", audio, "audio/wav")}
    return httpx.post(url + path, data=data, files=files, timeout=timeout)


# ------------------------------------------------------------------------------------------ zero config


def test_zero_config_serves_openai_model_names_locally(zero_config_url: str, wav: Path) -> None:
    raw = sdk(zero_config_url).audio.transcriptions.with_raw_response.create(model="whisper-1", file=wav.open("rb"))
    assert raw.status_code == 200
    assert (raw.headers["x-bifrost-provider"], raw.headers["x-bifrost-original-model"],
            raw.headers["x-bifrost-resolved-model"]) == ("local", "whisper-1", "tiny.en")
    result = raw.parse()
    assert overlap(TEXT, result.text) >= THRESHOLD, result.text
    body = json.loads(raw.text)
    assert body["extra_fields"]["provider"] == "local"
    assert body["usage"] == {"type": "duration", "seconds": -(-wav.stat().st_size // 32000)}  # 16 kHz, 16 bit
    assert httpx.get(zero_config_url + "/health").json()["providers"] == ["local"]


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "tiny.en", "local/tiny.en"])
def test_zero_config_every_name_on_the_openai_route(zero_config_url: str, model: str) -> None:
    short = speech_wav(SENTENCES[:1])
    raw = sdk(zero_config_url).audio.transcriptions.with_raw_response.create(
        model=model, file=short.open("rb"), response_format="text")
    assert raw.headers["x-bifrost-resolved-model"] == "tiny.en" and raw.headers["content-type"].startswith("text/plain")
    assert overlap(SENTENCES[0], raw.parse()) >= THRESHOLD


def test_zero_config_azure_deployments_and_the_unified_route(zero_config_url: str, wav: Path) -> None:
    azure = openai.AzureOpenAI(azure_endpoint=f"{zero_config_url}/openai", api_key="unused",
                               api_version="2024-10-21", max_retries=0, timeout=120)
    result = azure.audio.transcriptions.create(model="my-whisper-deployment", file=wav.open("rb"))
    assert overlap(TEXT, result.text) >= THRESHOLD
    unified = post(zero_config_url, "/v1/audio/transcriptions", wav.read_bytes(), model="local/tiny.en")
    assert unified.status_code == 200 and unified.json()["extra_fields"]["model_requested"] == "tiny.en"
    # the unified route names its provider: no other provider is configured, and local/<unknown> is refused
    cloud = post(zero_config_url, "/v1/audio/transcriptions", wav.read_bytes(), model="openai/whisper-1")
    assert cloud.status_code == 400 and cloud.json()["error"]["code"] == "provider_not_configured"
    unknown = post(zero_config_url, "/v1/audio/transcriptions", wav.read_bytes(), model="local/whisper-1")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "model_not_found"


def test_every_format(zero_config_url: str, wav: Path) -> None:
    client = sdk(zero_config_url)
    assert overlap(TEXT, client.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"),
                                                            response_format="text")) >= THRESHOLD
    for fmt in ("srt", "vtt"):
        subtitles = client.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), response_format=fmt)
        cues = parse_subtitles(subtitles)
        assert len(cues) >= 2 and cues[0].start < cues[-1].end <= seconds(wav), subtitles
        assert overlap(TEXT, " ".join(c.text for c in cues)) >= THRESHOLD
    verbose = client.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.language == "en" and verbose.duration == pytest.approx(seconds(wav), abs=0.01)
    assert verbose.segments and len(verbose.segments) == 2 and verbose.words and len(verbose.words) >= 12
    assert overlap(SENTENCES[1], verbose.segments[1].text) >= THRESHOLD
    unified = post(zero_config_url, "/v1/audio/transcriptions", wav.read_bytes(), model="local/tiny.en",
                   response_format="srt")
    assert unified.status_code == 200 and unified.json()["text"].startswith("1\n00:00:0")


def test_native_stream_through_the_sdk(zero_config_url: str) -> None:
    events = list(sdk(zero_config_url).audio.transcriptions.create(
        model="whisper-1", file=speech_wav(LONG[:4], gap=0.4).open("rb"), stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert done.type == "transcript.text.done" and len(deltas) >= 2  # one delta per decoded segment (the model
    # may join two sentences into one segment: four sentences give three or four)
    assert "".join(deltas) == done.text and overlap(" ".join(LONG[:4]), done.text) >= THRESHOLD


@pytest.mark.parametrize("audio", [b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8,
                                   b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x01" * 200], ids=["mp3", "wav"])
def test_a_corrupt_file_is_a_400_envelope(zero_config_url: str, audio: bytes) -> None:
    for stream in ("false", "true"):
        r = post(zero_config_url, "/v1/audio/transcriptions", audio, model="local/tiny.en", stream=stream)
        assert r.status_code == 400, r.text
        body = r.json()
        assert (body["error"]["code"], body["error"]["param"], body["extra_fields"]["provider"]) == (
            "invalid_audio", "file", "local")


# --------------------------------------------------------------------------------------------- fallback


def test_a_failing_cloud_provider_falls_back_to_local(run_gateway: Any, fake_openai: Any, wav: Path) -> None:
    url = run_gateway(config_with(fake_openai.provider_config(), local_config(preload=False)))
    fake_openai.enqueue(Reply(status=500, body={"error": {"message": "the cloud is down", "type": "server_error"}}))
    r = post(url, "/v1/audio/transcriptions", wav.read_bytes(), model="openai/whisper-1", fallbacks="local/tiny.en")
    assert r.status_code == 200, r.text
    assert (r.headers["x-bifrost-provider"], r.headers["x-bifrost-fallback-index"]) == ("local", "1")
    assert overlap(TEXT, r.json()["text"]) >= THRESHOLD and len(fake_openai.requests) == 1
    # with a cloud provider configured, bare names go to openai as before
    raw = sdk(url).audio.transcriptions.with_raw_response.create(model="whisper-1", file=wav.open("rb"))
    assert raw.headers["x-bifrost-provider"] == "openai" and len(fake_openai.requests) == 2


def test_audio_longer_than_the_engine_takes_is_split_into_pieces(run_gateway: Any) -> None:
    wav = speech_wav(SENTENCES, gap=1.5)
    url = run_gateway(config_with(local_config(preload=False, max_audio_seconds=5)))
    r = post(url, "/v1/audio/transcriptions", wav.read_bytes(), model="local/tiny.en", response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["extra_fields"]["pieces"] >= 2 and overlap(TEXT, body["text"]) >= THRESHOLD
    starts = [segment["start"] for segment in body["segments"]]
    assert starts == sorted(starts) and body["duration"] > 5


# ------------------------------------------------------------------------------- admission, cancellation


def test_a_full_queue_is_a_503_and_a_client_going_away_frees_the_engine(
    run_gateway: Any, wav: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bifrost_stt.providers.local")
    url = run_gateway(config_with(local_config(concurrency_and_buffer_size={"concurrency": 1, "buffer_size": 1})))
    long_audio = speech_wav(LONG * 3, gap=0.4).read_bytes()  # minutes: the stream cannot end during the test
    first_event = threading.Event()
    leave = threading.Event()
    results: dict[str, Any] = {}

    def streaming_client() -> None:  # holds the one decode slot, then goes away mid-stream
        files = {"file": ("long.wav", long_audio, "audio/wav")}
        with httpx.Client(timeout=120) as client, client.stream(
            "POST", url + "/v1/audio/transcriptions", data={"model": "local/tiny.en", "stream": "true"}, files=files
        ) as r:
            results["stream"] = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    first_event.set()
                    leave.wait(60)
                    return

    def waiting_client() -> None:
        results["waiting"] = post(url, "/v1/audio/transcriptions", wav.read_bytes(), model="local/tiny.en")

    holder = threading.Thread(target=streaming_client)
    holder.start()
    assert first_event.wait(120), "the stream sent nothing"
    waiter = threading.Thread(target=waiting_client)
    waiter.start()
    time.sleep(0.5)  # the waiting request is admitted to the buffer
    started = time.perf_counter()
    refused = post(url, "/v1/audio/transcriptions", wav.read_bytes(), model="local/tiny.en")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "provider_overloaded", refused.text
    assert time.perf_counter() - started < 2  # refused at once, not after a decode
    assert "waiting" not in results  # still queued behind the stream
    leave.set()  # the streaming client goes away: its decode stops, the slot frees, the waiting request runs
    holder.join(30)
    waiter.join(120)
    assert results["stream"] == 200 and results["waiting"].status_code == 200
    assert overlap(TEXT, results["waiting"].json()["text"]) >= THRESHOLD
    assert any("local decode stopped early" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ start


def test_zero_config_start_says_so(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    for var in ("BIFROST_STT_CONFIG", "BIFROST_STT_OVERRIDES", "BIFROST_STT_HOST", "BIFROST_STT_PORT"):
        monkeypatch.setenv(var, "")
    for var in [v for v in os.environ if v.endswith(("_API_KEY", "_BASE_URL"))]:
        monkeypatch.delenv(var)
    caplog.set_level(logging.INFO, logger="bifrost_stt")
    assert cli.main(["serve"]) == 0
    lines = [r.getMessage() for r in caplog.records if "only the local engine is configured" in r.getMessage()]
    assert len(lines) == 1 and "served by local/tiny.en" in lines[0] and "whisper-1" in lines[0]
