"""The exact cache end to end: real gateways on loopback, the fake OpenAI upstream counting what reaches it.

Every test asserts what the client sees (status, headers, body, cache_debug) and how many requests the
upstream received: a hit must never reach it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from bifrost_stt.gateway.cache import stats
from bifrost_stt.kernel.settings import CacheConfig, GatewayConfig, RedisStoreConfig
from tests.audio import wav_bytes
from tests.fakes.openai import TRANSCRIPT
from tests.support import config_with

AUDIO = wav_bytes()
UNIFIED = "/v1/audio/transcriptions"


def cached_config(fake: Any, cache: CacheConfig, job_store: str | None = None) -> GatewayConfig:
    return replace(config_with(fake.provider_config(), job_store_path=job_store), cache=cache)


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "cache.sqlite3")


@pytest.fixture
def start(run_gateway: Callable[..., str], fake_openai: Any, store_path: str,
          tmp_path: Path) -> Callable[..., httpx.Client]:
    """``start(**cache_fields)``: a gateway with its own embedded store; an httpx client on it."""
    clients: list[httpx.Client] = []

    def _start(**cache: Any) -> httpx.Client:
        url = run_gateway(cached_config(fake_openai, CacheConfig(store_path=store_path, **cache),
                                        job_store=str(tmp_path / "jobs.sqlite3")))
        client = httpx.Client(base_url=url, timeout=10)
        clients.append(client)
        return client

    yield _start  # type: ignore[misc]
    for client in clients:
        client.close()


@pytest.fixture
def http(start: Callable[..., httpx.Client]) -> httpx.Client:
    return start()


def post(
    http: httpx.Client,
    *,
    key: str | None = "team-a",
    headers: dict[str, str] | None = None,
    filename: str = "speech.wav",
    path: str = UNIFIED,
    audio: bytes = AUDIO,
    **fields: str,
) -> httpx.Response:
    sent = {"x-bf-cache-key": key} if key is not None else {}
    sent.update(headers or {})
    data = {"model": "openai/whisper-1" if path == UNIFIED else "whisper-1", **fields}
    return http.post(path, data=data, files={"file": (filename, audio, "audio/wav")}, headers=sent)


def debug_of(response: httpx.Response) -> dict[str, Any] | None:
    assert response.status_code == 200, response.text
    value: dict[str, Any] | None = response.json()["extra_fields"].get("cache_debug")
    return value


# ---------------------------------------------------------------------------------------------- hits, misses


def test_the_same_audio_under_another_filename_is_a_hit_that_never_reaches_the_upstream(
    http: httpx.Client, fake_openai: Any
) -> None:
    first = post(http, filename="speech.wav")
    miss = debug_of(first)
    assert miss is not None and miss["cache_hit"] is False and miss["cache_id"]
    second = post(http, filename="renamed-copy.wav")
    hit = debug_of(second)
    assert hit == {
        "cache_hit": True,
        "cache_id": miss["cache_id"],
        "hit_type": "direct",
        "requested_provider": "openai",
        "requested_model": "whisper-1",
        "provider_used": "openai",
        "model_used": "whisper-1",
    }
    assert len(fake_openai.requests) == 1
    assert second.json()["text"] == first.json()["text"] == TRANSCRIPT
    assert second.headers["x-bifrost-provider"] == "openai"
    assert second.headers["x-bifrost-resolved-model"] == "whisper-1"
    assert second.headers["x-bifrost-original-model"] == "openai/whisper-1"
    assert {k: v for k, v in second.json()["extra_fields"].items() if k not in ("latency", "cache_debug")} == {
        k: v for k, v in first.json()["extra_fields"].items() if k not in ("latency", "cache_debug")
    }


@pytest.mark.parametrize(
    "changed",
    [
        {"language": "de"},
        {"prompt": "names: Ada"},
        {"temperature": "0.4"},
        {"response_format": "verbose_json"},
        {"model": "openai/gpt-4o-transcribe"},
        {"include[]": "logprobs"},
    ],
    ids=lambda d: next(iter(d)),
)
def test_one_changed_parameter_is_a_miss(http: httpx.Client, fake_openai: Any, changed: dict[str, str]) -> None:
    assert debug_of(post(http))["cache_hit"] is False  # type: ignore[index]
    response = post(http, **changed)
    assert response.status_code == 200, response.text
    assert len(fake_openai.requests) == 2
    assert post(http, **changed).status_code == 200
    assert len(fake_openai.requests) == 2, "the changed request was cached under its own key"


def test_other_audio_another_partition_or_no_key_all_miss(http: httpx.Client, fake_openai: Any) -> None:
    post(http)
    post(http, audio=wav_bytes(1.5))  # other audio
    post(http, key="team-b")  # other partition
    assert len(fake_openai.requests) == 3
    plain = post(http, key=None)
    assert "cache_debug" not in plain.json()["extra_fields"]
    post(http, key=None)
    assert len(fake_openai.requests) == 5, "without a cache key nothing is cached"


def test_a_default_cache_key_engages_the_cache_without_the_header(
    start: Callable[..., httpx.Client], fake_openai: Any
) -> None:
    http = start(default_cache_key="everyone")
    assert debug_of(post(http, key=None))["cache_hit"] is False  # type: ignore[index]
    assert debug_of(post(http, key=None))["cache_hit"] is True  # type: ignore[index]
    post(http, key="mine")  # the header still picks another partition
    assert len(fake_openai.requests) == 2


def test_text_formats_on_the_integration_route_hit_too(http: httpx.Client, fake_openai: Any) -> None:
    path = "/openai/v1/audio/transcriptions"
    first = post(http, path=path, response_format="srt")
    second = post(http, path=path, response_format="srt", filename="x.wav")
    assert second.status_code == 200 and second.headers["content-type"].startswith("text/plain")
    assert second.text == first.text and "-->" in second.text
    assert len(fake_openai.requests) == 1
    wrapped = post(http, response_format="srt")  # the unified route shares the entry, in its JSON shape
    assert wrapped.json()["text"] == first.text and debug_of(wrapped)["cache_hit"] is True  # type: ignore[index]
    assert len(fake_openai.requests) == 1


def test_only_successful_answers_are_stored(http: httpx.Client, fake_openai: Any) -> None:
    from tests.fakes.server import error_reply

    fake_openai.enqueue(error_reply(500, "upstream broke"))
    assert post(http).status_code == 500
    assert debug_of(post(http))["cache_hit"] is False  # type: ignore[index]
    assert len(fake_openai.requests) == 2


def test_the_ttl_header_expires_the_entry(http: httpx.Client, fake_openai: Any) -> None:
    post(http, headers={"x-bf-cache-ttl": "300ms"})
    assert debug_of(post(http))["cache_hit"] is True  # type: ignore[index]
    time.sleep(0.4)
    assert debug_of(post(http))["cache_hit"] is False  # type: ignore[index]
    assert len(fake_openai.requests) == 2


def test_the_configured_ttl_is_the_default(start: Callable[..., httpx.Client], fake_openai: Any) -> None:
    http = start(ttl_seconds=0.3)
    post(http)
    time.sleep(0.4)
    assert debug_of(post(http, headers={"x-bf-cache-ttl": "1m"}))["cache_hit"] is False  # type: ignore[index]
    time.sleep(0.4)
    assert debug_of(post(http))["cache_hit"] is True  # type: ignore[index]
    assert len(fake_openai.requests) == 2


def test_no_store_reads_but_never_writes(http: httpx.Client, fake_openai: Any) -> None:
    no_store = {"x-bf-cache-no-store": "true"}
    first = post(http, headers=no_store)
    assert "cache_debug" not in first.json()["extra_fields"]
    assert debug_of(post(http))["cache_hit"] is False  # type: ignore[index]  (nothing was written)
    assert debug_of(post(http, headers=no_store))["cache_hit"] is True  # type: ignore[index]  (but it reads)
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-bf-cache-key", ""),
        ("x-bf-cache-ttl", "soon"),
        ("x-bf-cache-ttl", "0"),
        ("x-bf-cache-ttl", "-5"),
        ("x-bf-cache-ttl", "400d"),
        ("x-bf-cache-no-store", "maybe"),
        ("x-bf-cache-type", "semantic"),
    ],
)
def test_a_bad_cache_header_is_a_400_naming_it(
    http: httpx.Client, fake_openai: Any, header: str, value: str
) -> None:
    response = post(http, headers={header: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == header and header in error["message"]
    assert fake_openai.requests == []


# ---------------------------------------------------------------------------------------------- clearing


def test_clear_by_request_id_removes_that_entry(http: httpx.Client, fake_openai: Any) -> None:
    cache_id = debug_of(post(http))["cache_id"]  # type: ignore[index]
    other = debug_of(post(http, language="fr"))["cache_id"]  # type: ignore[index]
    cleared = http.delete(f"/api/cache/clear/{cache_id}")
    assert cleared.status_code == 200 and cleared.json()["removed"] == 1, cleared.text
    assert debug_of(post(http))["cache_hit"] is False  # type: ignore[index]
    assert debug_of(post(http, language="fr"))["cache_id"] == other  # the other entry stays
    again = http.delete(f"/api/cache/clear/{cache_id}")
    assert again.status_code == 200 and again.json()["removed"] == 0
    assert len(fake_openai.requests) == 3


def test_clear_by_cache_key_removes_the_partition(http: httpx.Client, fake_openai: Any) -> None:
    post(http, key="batch 7 a")
    post(http, key="batch 7 a", language="fr")
    post(http, key="keep")
    cleared = http.delete("/api/cache/clear-by-key/batch%207%20a")
    assert cleared.status_code == 200 and cleared.json()["removed"] == 2, cleared.text
    assert debug_of(post(http, key="batch 7 a"))["cache_hit"] is False  # type: ignore[index]
    assert debug_of(post(http, key="keep"))["cache_hit"] is True  # type: ignore[index]
    assert len(fake_openai.requests) == 4


# ---------------------------------------------------------------------------------------------- streams


def test_a_stream_hit_is_replayed_as_sse_with_the_openai_sdk(http: httpx.Client, fake_openai: Any) -> None:
    client = openai.OpenAI(base_url=str(http.base_url).rstrip("/") + "/openai/v1", api_key="sk-client", max_retries=0)
    headers = {"x-bf-cache-key": "sdk"}
    plain = client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", AUDIO, "audio/wav"), extra_headers=headers
    )
    events = list(client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("b.wav", AUDIO, "audio/wav"), stream=True, extra_headers=headers
    ))
    assert len(fake_openai.requests) == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    (done,) = [e for e in events if e.type == "transcript.text.done"]
    assert "".join(deltas) == done.text == plain.text == TRANSCRIPT
    debug = (done.model_extra or {})["extra_fields"]["cache_debug"]
    assert debug["cache_hit"] is True and debug["hit_type"] == "direct"
    assert all("cache_debug" not in (e.model_extra or {}).get("extra_fields", {}) for e in events if e is not done)


def test_a_live_stream_is_stored_and_serves_a_later_plain_request(http: httpx.Client, fake_openai: Any) -> None:
    fields = {"model": "openai/gpt-4o-transcribe", "stream": "true"}
    with http.stream("POST", UNIFIED, data=fields, files={"file": ("a.wav", AUDIO, "audio/wav")},
                     headers={"x-bf-cache-key": "live"}) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_raw())
    events = [orjson.loads(chunk.removeprefix(b"data: ")) for chunk in body.split(b"\n\n")
              if chunk.startswith(b"data: {")]
    assert events[-1]["type"] == "transcript.text.done"
    stored = events[-1]["extra_fields"]["cache_debug"]
    assert stored["cache_hit"] is False and stored["cache_id"]
    plain = post(http, key="live", model="openai/gpt-4o-transcribe")
    assert plain.json()["text"] == TRANSCRIPT
    assert debug_of(plain) == {**debug_of(plain), "cache_hit": True, "cache_id": stored["cache_id"]}  # type: ignore[arg-type]
    assert len(fake_openai.requests) == 1


# ---------------------------------------------------------------------------------------------- async jobs


def test_an_async_job_is_served_from_the_cache(http: httpx.Client, fake_openai: Any) -> None:
    post(http)
    job = http.post("/v1/async/audio/transcriptions", data={"model": "openai/whisper-1"},
                    files={"file": ("j.wav", AUDIO, "audio/wav")}, headers={"x-bf-cache-key": "team-a"})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 10
    while (polled := http.get(f"/v1/async/audio/transcriptions/{job.json()['id']}")).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    result = polled.json()["result"]
    assert result["text"] == TRANSCRIPT and result["extra_fields"]["cache_debug"]["cache_hit"] is True
    assert len(fake_openai.requests) == 1


# ---------------------------------------------------------------------------------------------- stores


def test_a_broken_store_is_a_miss_and_the_request_is_still_served(
    run_gateway: Callable[..., str], fake_openai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    cache = CacheConfig(redis=RedisStoreConfig(addr=f"127.0.0.1:{dead}"))
    before = sum(stats.snapshot()["store_failures"].values())
    with caplog.at_level(logging.WARNING, logger="bifrost_stt.cache"):
        with httpx.Client(base_url=run_gateway(cached_config(fake_openai, cache)), timeout=10) as http:
            for _ in range(3):
                response = post(http)
                assert response.status_code == 200 and response.json()["text"] == TRANSCRIPT
                assert "cache_debug" not in response.json()["extra_fields"]
    assert len(fake_openai.requests) == 3
    assert sum(stats.snapshot()["store_failures"].values()) - before >= 3
    warnings = [r for r in caplog.records if "cache store failed" in r.getMessage()]
    assert len(warnings) == 1, "a broken store is logged once"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_gateway_process(
    tmp_path: Path, fake_openai: Any, redis_url: str, redis_prefix: str
) -> Iterator[str]:
    """``bifrost-stt serve`` in its own process, its cache configured in upstream's shape on the test's Redis."""
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    config = {
        "providers": {"openai": {"keys": [{"name": "k", "value": "sk-test-key", "weight": 1, "models": ["*"]}],
                                 "network_config": {"base_url": fake_openai.url}}},
        "plugins": [{"enabled": True, "name": "semantic_cache",
                     "config": {"ttl": "5m", "vector_store_namespace": redis_prefix, "cache_by_model": True}}],
        "vector_store": {"enabled": True, "type": "redis", "config": {"addr": host_port, "db": 0}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bifrost_stt.server.cli", "serve", "--config", str(path), "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"gateway did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_redis_is_shared_by_two_gateway_processes(
    redis_gateway_process: str, run_gateway: Callable[..., str], fake_openai: Any, redis_url: str,
    redis_prefix: str,
) -> None:
    import redis

    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    cache = CacheConfig(namespace=redis_prefix, redis=RedisStoreConfig(addr=f"{host}:{port}"))
    with httpx.Client(base_url=redis_gateway_process, timeout=10) as first, \
            httpx.Client(base_url=run_gateway(cached_config(fake_openai, cache)), timeout=10) as second:
        stored = debug_of(post(first, filename="one.wav"))
        hit = debug_of(post(second, filename="two.wav"))
        assert stored is not None and hit is not None
        assert hit["cache_hit"] is True and hit["cache_id"] == stored["cache_id"]
        assert len(fake_openai.requests) == 1
        # cleared through one instance, gone for the other
        assert second.delete(f"/api/cache/clear/{stored['cache_id']}").json()["removed"] == 1
        assert debug_of(post(first))["cache_hit"] is False  # type: ignore[index]
        assert len(fake_openai.requests) == 2
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.scan_iter(match="*", count=1000) if redis_prefix.encode() in k]
    client.close()
    assert keys and all(k.startswith(redis_prefix) for k in keys)
