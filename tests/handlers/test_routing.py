"""End to end under faults: a real gateway on loopback -> fault-injecting fake upstreams (tests.fakes.faults).

Each test asserts what the client got (status, body, headers) and what reached which upstream with which
key. Backoffs are configured small (20-100 ms) and checked on the fakes' arrival timestamps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bifrost_stt.server.app import create_app
from bifrost_stt.kernel.settings import ConcurrencyConfig, KeyConfig, Secret
from tests.audio import wav_bytes, wav_of_size
from tests.fakes.faults import (
    FaultyAzure,
    FaultyGroq,
    FaultyOpenAI,
    empty,
    garbage_json,
    html,
    keys_seen,
    reset,
    slow,
    status,
    truncated,
)
from tests.fakes.openai import TRANSCRIPT
from tests.fakes.server import Reply
from tests.support import config_with, serve

UNIFIED = "/v1/audio/transcriptions"
OPENAI_PATH = "/v1/audio/transcriptions"
GROQ_PATH = "/openai/v1/audio/transcriptions"
FAST = {"retry_backoff_initial": 20, "retry_backoff_max": 100}


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[FaultyOpenAI, FaultyGroq, FaultyAzure]]:
    with FaultyOpenAI() as o, FaultyGroq() as g, FaultyAzure() as a:
        yield o, g, a


@pytest.fixture
def up(_servers: tuple[FaultyOpenAI, FaultyGroq, FaultyAzure]) -> SimpleNamespace:
    for server in _servers:
        server.reset()
    openai, groq, azure = _servers
    return SimpleNamespace(openai=openai, groq=groq, azure=azure)


def post(url: str, model: str = "openai/whisper-1", *, audio: bytes | None = None, timeout: float = 10,
         path: str = UNIFIED, headers: dict[str, str] | None = None, **data: Any) -> httpx.Response:
    files = {"file": ("speech.wav", audio if audio is not None else wav_bytes(), "audio/wav")}
    with httpx.Client(base_url=url, timeout=timeout) as client:
        return client.post(path, data={"model": model, **data}, files=files, headers=headers or {})


def error_of(r: httpx.Response, status_code: int) -> dict[str, Any]:
    assert r.status_code == status_code, r.text
    body = r.json()
    assert body["status_code"] == status_code
    return body  # type: ignore[no-any-return]


def gaps(server: Any) -> list[float]:
    times = [r.received_at for r in server.requests]
    return [b - a for a, b in zip(times, times[1:])]


# ------------------------------------------------------------------------------------------ fault table

# fault -> (status the client gets, is_bifrost_error, a word the message must hold, retried?)
FAULTS: dict[str, tuple[Callable[[], Reply], int, bool, str, bool]] = {
    "429": (lambda: status(429, "Rate limit reached", retry_after="0.05"), 429, False, "Rate limit", True),
    "500": (lambda: status(500, "The server had an error"), 500, False, "server had an error", True),
    "502": (lambda: status(502), 502, False, "502", True),
    "503": (lambda: status(503, "Service overloaded"), 503, False, "overloaded", True),
    "504": (lambda: status(504), 504, False, "504", True),
    "html-502": (lambda: html(502), 502, True, "HTML", True),
    "html-400": (lambda: html(400), 502, True, "HTML", False),
    "garbage-json": (garbage_json, 502, True, "not JSON", True),
    "empty-200": (empty, 502, True, "empty", True),
    "truncated": (truncated, 502, True, "openai broke off its answer", True),
    "reset-before": (reset, 502, True, "could not reach openai", True),
    "reset-mid-body": (lambda: reset(after=5), 502, True, "openai broke off its answer", True),
    "drop": (lambda: Reply(drop=True), 502, True, "could not reach openai", True),
    # the request timeout bounds the target as a whole: a timed-out attempt leaves no time for a retry
    "timeout": (lambda: slow(3), 504, True, "default_request_timeout_in_seconds", False),
    "400": (lambda: status(400, "Invalid file format"), 400, False, "Invalid file format", False),
    "404-model": (lambda: status(404, "The model does not exist", code="model_not_found"), 404, False, "model", False),
}


@pytest.fixture(scope="module")
def fault_gateway(_servers: tuple[FaultyOpenAI, FaultyGroq, FaultyAzure]) -> Iterator[str]:
    """One gateway for the whole fault table: one retry, 20-100 ms backoff, 0.4 s request timeout."""
    with serve(create_app(config_with(_servers[0].provider_config(timeout=0.4, max_retries=1, **FAST)))) as url:
        yield url


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_what_the_client_gets_and_what_reached_upstream(fault_gateway: str, up: Any, name: str) -> None:
    make, code, bifrost, word, retried = FAULTS[name]
    url = fault_gateway

    up.openai.enqueue(make(), make(), path=OPENAI_PATH)
    r = post(url)
    body = error_of(r, code)
    assert body["is_bifrost_error"] is bifrost
    assert word in body["error"]["message"]
    assert body["extra_fields"]["provider"] == "openai"
    assert len(up.openai.requests) == (2 if retried else 1)
    if retried:  # both calls listed, the last one's error returned
        assert [a["status"] for a in body["extra_fields"]["attempts"]] == [code, code]
    if name == "timeout":
        assert "openai" in body["error"]["message"] and "0.4 s" in body["error"]["message"]
    if name == "429":
        assert r.headers["retry-after"] == "0.05"  # the upstream's hint travels to the client
    assert all(req.file.data == wav_bytes() for req in up.openai.requests)

    if retried:  # one fault, then a good answer: the client never notices
        up.openai.enqueue(make(), path=OPENAI_PATH)
        r = post(url)
        assert r.status_code == 200, r.text
        assert r.json()["text"] == TRANSCRIPT
        assert len(up.openai.requests) == 4


def test_backoff_doubles_within_jitter_bounds(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(up.openai.provider_config(max_retries=3, **FAST)))
    up.openai.enqueue(status(503), status(503), status(503), path=OPENAI_PATH)
    assert post(url).status_code == 200
    measured = gaps(up.openai)
    assert len(measured) == 3
    for gap, base in zip(measured, (0.02, 0.04, 0.08), strict=True):
        assert base * 0.8 <= gap <= base * 1.2 + 0.3, measured  # slack: loopback and a busy CI box


def test_retry_after_is_honoured_only_up_to_the_max(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(up.openai.provider_config(max_retries=2, **FAST)))
    up.openai.enqueue(status(429, retry_after="0.09"), status(503, retry_after="30"), path=OPENAI_PATH)
    started = time.monotonic()
    assert post(url).status_code == 200
    first, second = gaps(up.openai)
    assert 0.09 <= first <= 0.09 + 0.3  # longer than the 20 ms backoff: the upstream asked for 90 ms
    assert 0.1 * 0.99 <= second <= 0.1 + 0.3  # 30 s asked, retry_backoff_max (100 ms) wins
    assert time.monotonic() - started < 2


# ------------------------------------------------------------------------------------------------ keys


def _keys(server: Any, *names: str, **kw: Any) -> tuple[KeyConfig, ...]:
    values = {name: f"sk-{name}-{server.vendor}-0123456789" for name in names}
    server.keys |= set(values.values())
    return tuple(KeyConfig(name=n, value=Secret(v), **kw) for n, v in values.items())


def test_rate_limit_moves_the_retry_to_another_key(run_gateway: Any, up: Any) -> None:
    keys = _keys(up.openai, "a", "b")
    url = run_gateway(config_with(replace(up.openai.provider_config(max_retries=1, **FAST), keys=keys)))
    for _ in range(3):
        up.openai.enqueue(status(429, "Rate limit reached"), path=OPENAI_PATH)
        assert post(url).status_code == 200
    seen = keys_seen(up.openai)
    assert len(seen) == 6
    for first, retry in zip(seen[::2], seen[1::2]):
        assert first != retry and {first, retry} == {k.value.reveal() for k in keys}


def test_network_error_retries_the_same_key(run_gateway: Any, up: Any) -> None:
    keys = _keys(up.openai, "a", "b", "c")
    url = run_gateway(config_with(replace(up.openai.provider_config(max_retries=2, **FAST), keys=keys)))
    for _ in range(3):
        up.openai.enqueue(reset(), Reply(drop=True), path=OPENAI_PATH)
        assert post(url).status_code == 200
    seen = keys_seen(up.openai)
    assert len(seen) == 9
    assert all(len(set(seen[i:i + 3])) == 1 for i in (0, 3, 6)), seen


def test_aliases_allow_lists_and_disabled_keys(run_gateway: Any, up: Any) -> None:
    (off,) = _keys(up.azure, "off", enabled=False)
    (wk,) = _keys(up.azure, "whisper-only", models=("whisper-1",), aliases={"whisper-1": "whisper"})
    endpoint = up.azure.key().sections
    keys = (replace(off, sections=endpoint), replace(wk, sections=endpoint))
    url = run_gateway(config_with(replace(up.azure.provider_config(), keys=keys)))

    r = post(url, "azure/whisper-1")
    assert r.status_code == 200, r.text
    assert r.json()["extra_fields"]["model_deployment"] == "whisper"
    assert up.azure.last.path == "/openai/deployments/whisper/audio/transcriptions"
    assert keys_seen(up.azure) == [wk.value.reveal()]

    body = error_of(post(url, "azure/gpt-4o-transcribe"), 400)
    assert body["error"]["code"] == "model_not_allowed" and "gpt-4o-transcribe" in body["error"]["message"]
    assert len(up.azure.requests) == 1


def test_all_keys_disabled_is_503(run_gateway: Any, up: Any) -> None:
    keys = _keys(up.openai, "off", enabled=False)
    url = run_gateway(config_with(replace(up.openai.provider_config(), keys=keys)))
    body = error_of(post(url), 503)
    assert body["error"]["code"] == "no_enabled_key"
    assert up.openai.requests == []


def test_rejected_key_is_named_and_its_value_never_shown(run_gateway: Any, up: Any) -> None:
    secret = "sk-prod-secret-4f9a2c71e0b3"
    cfg = replace(up.openai.provider_config(), keys=(KeyConfig(name="prod", value=Secret(secret)),))
    url = run_gateway(config_with(cfg))
    body = error_of(post(url), 401)
    message = body["error"]["message"]
    assert message.startswith("Incorrect API key provided: **********") and "(key 'prod')" in message
    for fragment in (secret, secret[:6], secret[-4:]):
        assert fragment not in json.dumps(body)
    assert keys_seen(up.openai) == [secret]


def test_direct_keys_are_used_only_when_allowed(run_gateway: Any, up: Any) -> None:
    client_key = "sk-client-own-key-998877"
    up.openai.keys.add(client_key)
    allowed = replace(up.openai.provider_config(), allow_direct_keys=True)
    groq = replace(up.groq.provider_config(), allow_direct_keys=True)  # allowed there too, yet not sent
    url = run_gateway(config_with(allowed, groq))
    auth = {"authorization": f"Bearer {client_key}"}
    assert post(url, headers=auth).status_code == 200
    # a fallback at another vendor never sees the client's key
    up.openai.enqueue(status(500), path=OPENAI_PATH)
    r = post(url, headers=auth, fallbacks="groq/whisper-large-v3")
    assert r.status_code == 200 and r.headers["x-bifrost-fallback-index"] == "1"
    assert keys_seen(up.openai) == [client_key, client_key]
    assert keys_seen(up.groq) == [groq.keys[0].value.reveal()]

    up.openai.keys.discard(client_key)  # a wrong client key: named as the client's, never shown
    body = error_of(post(url, headers=auth), 401)
    assert "(key 'client-supplied')" in body["error"]["message"]
    assert client_key[-4:] not in json.dumps(body) and client_key[:8] not in json.dumps(body)

    off = run_gateway(config_with(up.openai.provider_config()))  # the default: the client's key is ignored
    assert post(off, headers=auth).status_code == 200
    assert keys_seen(up.openai)[-1] == up.openai.key().value.reveal()


def test_direct_key_on_the_azure_route_comes_from_api_key(run_gateway: Any, up: Any) -> None:
    client_key = "azure-client-own-key-1234"
    up.azure.keys.add(client_key)
    url = run_gateway(config_with(replace(up.azure.provider_config(), allow_direct_keys=True)))
    r = post(url, "ignored", path="/openai/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21",
             headers={"api-key": client_key})
    assert r.status_code == 200, r.text
    assert keys_seen(up.azure) == [client_key]
    assert up.azure.last.path == "/openai/deployments/whisper/audio/transcriptions"


# ------------------------------------------------------------------------------------------- fallbacks

FALLBACK_FORMS = {
    "repeated": {"fallbacks": ["groq/whisper-large-v3", "azure/whisper"]},
    "brackets": {"fallbacks[]": ["groq/whisper-large-v3", "azure/whisper"]},
    "json-string": {"fallbacks": json.dumps(["groq/whisper-large-v3", "azure/whisper"])},
}


@pytest.mark.parametrize("form", list(FALLBACK_FORMS))
def test_fallbacks_in_every_wire_form_each_with_its_own_model(run_gateway: Any, up: Any, form: str) -> None:
    url = run_gateway(config_with(up.openai.provider_config(), up.groq.provider_config(), up.azure.provider_config()))
    up.openai.enqueue(status(500), path=OPENAI_PATH)
    up.groq.enqueue(html(503), path=GROQ_PATH)
    r = post(url, **FALLBACK_FORMS[form])
    assert r.status_code == 200, r.text
    assert r.headers["x-bifrost-fallback-index"] == "2"
    assert r.headers["x-bifrost-provider"] == "azure"
    extra = r.json()["extra_fields"]
    assert (extra["provider"], extra["model_requested"], extra["model_deployment"]) == ("azure", "whisper", "whisper")
    assert up.openai.last.field("model") == "whisper-1"
    assert up.groq.last.field("model") == "whisper-large-v3"
    assert up.azure.last.path == "/openai/deployments/whisper/audio/transcriptions"
    assert [len(s.requests) for s in (up.openai, up.groq, up.azure)] == [1, 1, 1]


def test_all_failing_returns_the_primary_error_with_every_attempt(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(up.openai.provider_config(max_retries=1, **FAST), up.groq.provider_config()))
    up.openai.enqueue(status(503, "openai is overloaded"), status(503, "openai is overloaded"), path=OPENAI_PATH)
    up.groq.enqueue(status(400, "groq says no"), path=GROQ_PATH)
    r = post(url, fallbacks=["mistral/voxtral-mini-latest", "groq/whisper-large-v3"])
    body = error_of(r, 503)
    assert body["error"]["message"] == "openai is overloaded" and body["extra_fields"]["provider"] == "openai"
    assert body["extra_fields"]["attempts"] == [
        {"provider": "openai", "model": "whisper-1", "status": 503, "message": "openai is overloaded"},
        {"provider": "openai", "model": "whisper-1", "status": 503, "message": "openai is overloaded"},
        {"provider": "mistral", "model": "voxtral-mini-latest", "status": 0,
         "message": "skipped: provider 'mistral' is not configured"},
        {"provider": "groq", "model": "whisper-large-v3", "status": 400, "message": "groq says no"},
    ]
    assert "x-bifrost-fallback-index" not in r.headers


def test_audio_is_spooled_once_and_replayed_identically(run_gateway: Any, up: Any) -> None:
    audio = wav_of_size(300 * 1024)
    audio = audio[:44] + bytes(i % 251 for i in range(len(audio) - 44))  # not all zeros: order matters
    cfg = config_with(up.openai.provider_config(max_retries=1, **FAST), up.groq.provider_config(),
                      spool_threshold_kb=16)
    url = run_gateway(cfg)
    up.openai.enqueue(status(502), reset(after=3), path=OPENAI_PATH)
    r = post(url, audio=audio, fallbacks="groq/whisper-large-v3")
    assert r.status_code == 200, r.text
    uploads = [req.file.data for req in up.openai.requests + up.groq.requests]
    assert len(uploads) == 3 and all(data == audio for data in uploads)


# ------------------------------------------------------------------------------ timeouts, cancellation


def test_client_disconnect_closes_the_upstream_call(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(up.openai.provider_config(timeout=10)))
    up.openai.enqueue(slow(5), path=OPENAI_PATH)
    with pytest.raises(httpx.ReadTimeout):
        post(url, timeout=0.5)
    deadline = time.monotonic() + 3
    while not up.openai.last.disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.openai.last.disconnected, "the gateway kept the upstream call open after the client left"
    assert len(up.openai.requests) == 1  # cancelled, not retried, no fallback


def test_client_leaving_mid_stream_closes_the_upstream_stream(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(_limited(up, 1, 100), drop_excess_requests=True))
    up.openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "The"}], stall=5), path=OPENAI_PATH)
    with httpx.Client(base_url=url, timeout=10) as client:
        files = {"file": ("speech.wav", wav_bytes(), "audio/wav")}
        with client.stream("POST", UNIFIED, data={"model": "openai/gpt-4o-transcribe", "stream": "true"},
                           files=files) as stream:
            assert '"delta": "The"' in next(stream.iter_lines()).replace('":"', '": "')
    deadline = time.monotonic() + 3
    while not up.openai.last.disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.openai.last.disconnected, "the upstream stream stayed open after the client left"
    deadline = time.monotonic() + 3  # and its slot came back
    while (r := post(url)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.status_code == 200


# ------------------------------------------------------------------------------------------ admission


def _limited(up: Any, concurrency: int, buffer: int) -> Any:
    return replace(up.openai.provider_config(), concurrency=ConcurrencyConfig(concurrency, buffer))


def test_full_buffer_is_503_at_once_while_queued_requests_wait(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(_limited(up, 1, 1)))
    up.openai.enqueue(slow(0.6), slow(0.1), path=OPENAI_PATH)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, url)
        up.openai.wait_for(1)
        started = time.monotonic()
        others = [pool.submit(lambda: (post(url), time.monotonic() - started)) for _ in range(2)]
        results = [f.result() for f in others]
        assert first.result().status_code == 200
    refused = [(r, t) for r, t in results if r.status_code == 503]
    served = [(r, t) for r, t in results if r.status_code == 200]
    assert len(refused) == 1 and len(served) == 1
    assert refused[0][1] < 0.4  # at once, not after the slot freed
    assert "queue is full" in refused[0][0].json()["error"]["message"]
    assert len(up.openai.requests) == 2 and gaps(up.openai)[0] >= 0.55  # the queued one waited its turn


def test_drop_excess_requests_refuses_without_queueing(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(_limited(up, 1, 100), drop_excess_requests=True))
    up.openai.enqueue(slow(0.5), path=OPENAI_PATH)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url)
        up.openai.wait_for(1)
        started = time.monotonic()
        body = error_of(post(url), 503)
        assert time.monotonic() - started < 0.3
        assert first.result().status_code == 200
    assert body["error"]["type"] == "service_unavailable" and "drop_excess_requests" in body["error"]["message"]
    assert len(up.openai.requests) == 1
    assert post(url).status_code == 200  # the slot is free again


def test_a_stream_holds_its_slot_until_it_ends(run_gateway: Any, up: Any) -> None:
    url = run_gateway(config_with(_limited(up, 1, 100), drop_excess_requests=True))
    up.openai.event_delay = 0.05
    with httpx.Client(base_url=url, timeout=10) as client:
        files = {"file": ("speech.wav", wav_bytes(), "audio/wav")}
        with client.stream("POST", UNIFIED, data={"model": "openai/gpt-4o-transcribe", "stream": "true"},
                           files=files) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")
            assert post(url).status_code == 503  # the open stream still occupies the only slot
            rest = list(lines)
        assert "data: [DONE]" in rest
    assert post(url).status_code == 200
