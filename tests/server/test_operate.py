"""Operating the gateway end to end: real requests through fake upstreams, then what /metrics, the request-log
store and the admin access rules show. Metric values are read as differences: the registry is per process."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bifrost_stt.kernel.settings import AuthConfig, ClientConfig, KeyConfig, LogsStoreConfig, Secret
from tests.audio import wav_bytes
from tests.fakes.faults import FaultyGroq, FaultyOpenAI, status
from tests.fakes.openai import TRANSCRIPT
from tests.fakes.server import Reply
from tests.support import config_with

UNIFIED = "/v1/audio/transcriptions"
OPENAI_PATH = "/v1/audio/transcriptions"
ADMIN = ("admin", "pa55-w0rd-Secret")
FAST = {"retry_backoff_initial": 20, "retry_backoff_max": 50}


@pytest.fixture(scope="module")
def up() -> Any:
    with FaultyOpenAI() as openai, FaultyGroq() as groq:
        yield openai, groq


@pytest.fixture
def fakes(up: Any) -> Any:
    for server in up:
        server.reset()
    return up


def post(url: str, model: str = "openai/whisper-1", *, auth: Any = None, headers: dict[str, str] | None = None,
         **data: Any) -> httpx.Response:
    files = {"file": ("speech.wav", wav_bytes(), "audio/wav")}
    with httpx.Client(base_url=url, timeout=10, auth=auth) as client:
        return client.post(UNIFIED, data={"model": model, **data}, files=files, headers=headers or {})


def scrape(url: str, auth: Any = None) -> str:
    r = httpx.get(f"{url}/metrics", auth=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def logs_config(tmp_path: Path, **client: Any) -> Any:
    return LogsStoreConfig(enabled=True, path=str(tmp_path / "logs.db")), replace(ClientConfig(), **client)


def gateway(run_gateway: Any, *providers: Any, tmp_path: Path, auth: AuthConfig | None = None, **client: Any) -> str:
    store, client_config = logs_config(tmp_path, **client)
    config = replace(config_with(*providers), logs_store=store, client=client_config, auth=auth or AuthConfig())
    return str(run_gateway(config))


def entries(url: str, auth: Any = None, *, expect: int, **params: Any) -> list[dict[str, Any]]:
    """The log entries once ``expect`` of them are written (the writer is asynchronous)."""
    deadline = time.monotonic() + 5
    while True:
        r = httpx.get(f"{url}/api/logs", params=params, auth=auth)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["logs"]
        if len(found) >= expect or time.monotonic() > deadline:
            assert len(found) == expect, found
            return found
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------- metrics


def test_metrics_count_success_error_retries_and_fallbacks(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, groq = fakes
    keys = (KeyConfig(name="first", value=Secret(openai.key().value.reveal())),)
    url = gateway(run_gateway, replace(openai.provider_config(max_retries=1, **FAST), keys=keys),
                  groq.provider_config(), tmp_path=tmp_path)
    before = scrape(url)
    base = {"provider": "openai", "model": "whisper-1", "method": "transcription"}

    assert post(url).status_code == 200  # plain success
    openai.enqueue(status(503, "overloaded"), path=OPENAI_PATH)  # one retry, then success
    assert post(url).status_code == 200
    openai.enqueue(status(400, "Invalid file format"), path=OPENAI_PATH)  # the provider's 400: no retry
    assert post(url).status_code == 400
    openai.enqueue(status(500), status(500), path=OPENAI_PATH)  # both calls fail: the fallback serves it
    r = post(url, fallbacks='["groq/whisper-large-v3"]')
    assert r.status_code == 200 and r.headers["x-bifrost-fallback-index"] == "1"

    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("bifrost_success_requests_total", **base, fallback_index="0", selected_key_name="first") == 2
    assert delta("bifrost_success_requests_total", provider="groq", fallback_index="1") == 1
    assert delta("bifrost_error_requests_total", **base, status_code="400", error_type="caller_invalid_request",
                 selected_key_name="") == 1
    # calls made: 1 + 2 + 1 + 2 to openai, 1 to groq
    assert delta("bifrost_upstream_requests_total", provider="openai") == 6
    assert delta("bifrost_upstream_requests_total", provider="groq") == 1
    assert delta("bifrost_upstream_latency_seconds_count", provider="openai", is_success="false") == 4
    assert delta("bifrost_request_retries_sum") == 2  # the 503 retry and the first 500's retry
    assert delta("bifrost_audio_seconds_total", **base) == 2 * 5.0  # the fake reports 5 s of usage
    assert delta("bifrost_audio_duration_seconds_count", provider="groq") == 1
    assert delta("http_requests_total", path=UNIFIED, method="POST", status="200") == 3
    assert delta("http_requests_total", path=UNIFIED, method="POST", status="400") == 1
    assert value(after, "bifrost_active_requests", method="transcription") == 0
    assert value(after, "bifrost_provider_key_up", provider="openai", key_name="first") == 1
    assert delta("bifrost_overhead_latency_microseconds_count", **base) >= 3


def test_route_template_not_raw_path_and_no_secret_in_metrics(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, _ = fakes
    url = gateway(run_gateway, openai.provider_config(), tmp_path=tmp_path)
    httpx.get(f"{url}/api/logs/some-id-123")
    httpx.get(f"{url}/no/such/path/abc")
    text = scrape(url)
    assert 'path="/api/logs/{id}"' in text and "some-id-123" not in text
    assert 'path="unmatched"' in text and "/no/such" not in text
    for secret in openai.keys:
        assert secret not in text


def test_a_rotated_key_and_a_refused_key_show_in_metrics(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, _ = fakes
    values = {name: f"sk-{name}-rotation-0123456789" for name in ("ka", "kb")}
    openai.keys |= set(values.values())
    keys = tuple(KeyConfig(name=n, value=Secret(v)) for n, v in values.items())
    url = gateway(run_gateway, replace(openai.provider_config(max_retries=1, **FAST), keys=keys), tmp_path=tmp_path)
    before = scrape(url)
    openai.enqueue(status(429, "Rate limit reached"), path=OPENAI_PATH)
    assert post(url).status_code == 200
    openai.enqueue(status(401, "Incorrect API key provided"), path=OPENAI_PATH)
    assert post(url).status_code == 401
    after = scrape(url)
    rotations = value(after, "bifrost_key_rotation_events_total", fail_reason="rate_limited") - value(
        before, "bifrost_key_rotation_events_total", fail_reason="rate_limited")
    assert rotations == 1
    downs = [line for line in after.splitlines() if line.startswith("bifrost_provider_key_up")
             and line.endswith(" 0.0") and ('key_name="ka"' in line or 'key_name="kb"' in line)]
    assert len(downs) == 1 and ('key_name="ka"' in downs[0] or 'key_name="kb"' in downs[0])
    for secret in values.values():
        assert secret not in after


def test_stream_metrics_and_record(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, _ = fakes
    url = gateway(run_gateway, openai.provider_config(), tmp_path=tmp_path)
    before = scrape(url)
    r = post(url, "openai/gpt-4o-mini-transcribe", stream="true")
    assert r.status_code == 200 and "transcript.text.done" in r.text
    after = scrape(url)
    first = "bifrost_stream_first_token_latency_seconds_count"
    assert value(after, first, model="gpt-4o-mini-transcribe") - value(before, first, model="gpt-4o-mini-transcribe") == 1
    (entry,) = entries(url, expect=1)
    assert entry["stream"] is True and entry["object"] == "transcription_stream"
    assert entry["transcription_output"]["text"] == TRANSCRIPT
    assert entry["metadata"]["audio_seconds"] > 0


# ------------------------------------------------------------------------------------------ request logs


def test_one_record_per_request_with_fallback_attempts(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, groq = fakes
    url = gateway(run_gateway, openai.provider_config(), groq.provider_config(), tmp_path=tmp_path)
    openai.enqueue(status(500, "boom"), path=OPENAI_PATH)
    r = post(url, fallbacks='["groq/whisper-large-v3"]', response_format="text", language="en")
    assert r.status_code == 200
    (entry,) = entries(url, expect=1)
    assert entry["provider"] == "groq" and entry["fallback_index"] == 1 and entry["status"] == "success"
    assert [a["status"] for a in entry["metadata"]["attempts"]] == [500, 200]
    assert entry["params"] == {"response_format": "text", "language": "en", "fallbacks": ["groq/whisper-large-v3"]}
    assert entry["transcription_input"] == {"filename": "speech.wav", "size_bytes": len(wav_bytes())}
    assert entry["transcription_output"]["text"].strip() == TRANSCRIPT
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("logs.db*"))
    assert stored and not any(key.encode() in stored for key in openai.keys | groq.keys)
    assert wav_bytes()[44:140] not in stored  # the audio itself is never stored
    assert httpx.get(f"{url}/api/logs/{entry['id']}").json() == entry
    stats = httpx.get(f"{url}/api/logs/stats").json()
    assert stats["total_requests"] == 1 and stats["success_rate"] == 100.0
    assert httpx.get(f"{url}/api/logs", params={"providers": "openai"}).json()["logs"] == []
    deleted = httpx.request("DELETE", f"{url}/api/logs", json={"ids": [entry["id"]]})
    assert deleted.status_code == 200 and "1" in deleted.json()["message"]
    assert httpx.get(f"{url}/api/logs/{entry['id']}").status_code == 404


def test_errors_async_jobs_and_content_logging_off(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, _ = fakes
    url = gateway(run_gateway, openai.provider_config(), tmp_path=tmp_path, disable_content_logging=True,
                  job_store_path=str(tmp_path / "jobs.db"))
    openai.enqueue(status(400, "Invalid file format"), path=OPENAI_PATH)
    assert post(url).status_code == 400
    files = {"file": ("speech.wav", wav_bytes(), "audio/wav")}
    job = httpx.post(f"{url}/v1/async/audio/transcriptions", data={"model": "openai/whisper-1", "prompt": "Zoë"},
                     files=files).json()
    found = entries(url, expect=2, order="asc")
    error, done = found
    assert error["status"] == "error" and error["error_details"]["status_code"] == 400
    assert error["error_details"]["is_bifrost_error"] is False
    assert done["id"] == job["id"] and done["status"] == "success"
    assert done["metadata"]["operation"] == "createAsyncTranscription"
    assert "text" not in done.get("transcription_output", {}) and "prompt" not in done["params"]
    assert done["transcription_output"]["usage"]["seconds"] == 5.0
    assert httpx.get(f"{url}/api/logs", params={"content_search": "quick"}).json()["logs"] == []


def test_a_failing_store_never_fails_a_transcription(run_gateway: Any, fakes: Any, caplog: Any) -> None:
    openai, _ = fakes
    store = LogsStoreConfig(enabled=True, type="postgres", host="127.0.0.1", port=9, user="u",
                            password=Secret("store-pa55word"), db_name="nothing")
    url = run_gateway(replace(config_with(openai.provider_config()), logs_store=store))
    before = scrape(url)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            r = post(url)
            assert r.status_code == 200 and r.json()["text"] == TRANSCRIPT
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if value(scrape(url), "bifrost_log_records_dropped_total") - value(before, "bifrost_log_records_dropped_total") >= 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the dropped records were not counted")
        r = httpx.get(f"{url}/api/logs")
        assert r.status_code == 503 and r.json()["error"]["code"] == "logs_store_unavailable"
    assert "store-pa55word" not in caplog.text


def test_a_stream_that_fails_midway_is_an_error_record(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    openai, _ = fakes
    url = gateway(run_gateway, openai.provider_config(), tmp_path=tmp_path)
    before = scrape(url)
    openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "The"},
                                 {"error": {"message": "the model crashed", "type": "server_error"}}]),
                   path=OPENAI_PATH)
    r = post(url, "openai/gpt-4o-mini-transcribe", stream="true")
    assert r.status_code == 200 and '"is_bifrost_error"' in r.text  # the error event ends the stream
    (entry,) = entries(url, expect=1)
    assert entry["status"] == "error" and entry["stream"] is True
    code = str(entry["error_details"]["status_code"])
    assert code == "502" and entry["error_details"]["error"]["message"] == "the model crashed"
    after = scrape(url)
    errors = "bifrost_error_requests_total"
    assert value(after, errors, status_code=code) - value(before, errors, status_code=code) == 1


def test_logs_off_answers_503(run_gateway: Any, fakes: Any) -> None:
    url = run_gateway(config_with(fakes[0].provider_config()))
    r = httpx.get(f"{url}/api/logs")
    assert r.status_code == 503 and r.json()["error"]["code"] == "logs_store_disabled"


def test_bad_paging_is_a_400(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    url = gateway(run_gateway, fakes[0].provider_config(), tmp_path=tmp_path)
    for params in ({"limit": 1001}, {"start_time": "yesterday"}, {"start_time": ""}, {"sort_by": "size"}):
        r = httpx.get(f"{url}/api/logs", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["is_bifrost_error"] is True
    page = httpx.get(f"{url}/api/logs", params={"limit": 0, "offset": -3}).json()["pagination"]
    assert (page["limit"], page["offset"]) == (50, 0)  # as upstream: the default page
    r = httpx.request("DELETE", f"{url}/api/logs", content=b"\xb1_(", headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    r = httpx.post(f"{url}/api/logs")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, HEAD"


# ------------------------------------------------------------------------------------------ admin access


def test_admin_auth_guards_management_and_inference(run_gateway: Any, fakes: Any, tmp_path: Path, caplog: Any) -> None:
    auth = AuthConfig(is_enabled=True, admin_username=ADMIN[0], admin_password=Secret(ADMIN[1]))
    with caplog.at_level(logging.DEBUG):
        url = gateway(run_gateway, fakes[0].provider_config(), tmp_path=tmp_path, auth=auth)
        for path in ("/metrics", "/api/logs", "/api/logs/stats", "/api/logs/x", "/api/anything-new"):
            r = httpx.get(f"{url}{path}")
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Basic")
            assert r.json()["error"]["type"] == "authentication_error"
            assert httpx.get(f"{url}{path}", auth=("admin", "wrong")).status_code == 401
        assert httpx.get(f"{url}/metrics", auth=ADMIN).status_code == 200
        assert httpx.get(f"{url}/api/logs", auth=ADMIN).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/openapi.json").status_code == 200
        r = post(url)
        assert r.status_code == 401 and r.json()["extra_fields"]["request_type"] == "transcription"
        assert post(url, auth=ADMIN).status_code == 200
        entries(url, ADMIN, expect=1)
    text = caplog.text + scrape(url, ADMIN)
    assert ADMIN[1] not in text and base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode() not in text


def test_inference_open_with_disable_auth_on_inference(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    auth = AuthConfig(is_enabled=True, admin_username=ADMIN[0], admin_password=Secret(ADMIN[1]),
                      disable_auth_on_inference=True)
    url = gateway(run_gateway, fakes[0].provider_config(), tmp_path=tmp_path, auth=auth)
    assert post(url).status_code == 200
    assert httpx.get(f"{url}/api/logs").status_code == 401


def test_no_admin_credential_means_open(run_gateway: Any, fakes: Any, tmp_path: Path) -> None:
    url = gateway(run_gateway, fakes[0].provider_config(), tmp_path=tmp_path)
    assert httpx.get(f"{url}/api/logs").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200
    assert post(url).status_code == 200


# ------------------------------------------------------------------------------------- workers and logs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_workers_one_scrape_sees_every_request(fakes: Any, tmp_path: Path) -> None:
    openai, _ = fakes
    config = {"providers": {"openai": {
        "keys": [{"name": "main", "value": openai.key().value.reveal(), "models": ["*"]}],
        "network_config": {"base_url": openai.base_url}}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    port = _free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: removed at start
    proc = subprocess.Popen(
        [sys.executable, "-m", "bifrost_stt.server.cli", "serve", "--config", str(tmp_path / "config.json"),
         "--port", str(port), "--workers", "2", "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.2)
        with ThreadPoolExecutor(4) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda _: post(url), range(12)))
        for _ in range(4):  # whichever worker answers the scrape sees all twelve
            text = scrape(url)
            assert value(text, "bifrost_success_requests_total", provider="openai") == 12
            assert value(text, "http_requests_total", path=UNIFIED, status="200") == 12
            assert value(text, "bifrost_active_requests") == 0
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("route") == UNIFIED]
    assert len(requests) == 12, output[-2000:]
    assert all(r["provider"] == "openai" and r["status"] == 200 and r["audio_seconds"] == 5.0 for r in requests)
    assert openai.key().value.reveal() not in output
