"""End to end: httpx -> a real gateway on loopback -> the fake upstreams, through the async job pair.

POST /v1/async/audio/transcriptions answers 202 with a pending job; GET .../{job_id} answers 202 until the job
is done, then 200 with the unified route's own answer (or its error) inside. The OpenAI SDK has no call for
these routes, so raw httpx it is. Each test asserts what the client got and what reached the upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bifrost_stt.kernel.settings import MAX_RESULT_TTL
from tests.audio import wav_bytes
from tests.fakes.faults import slow, status
from tests.fakes.openai import TRANSCRIPT
from tests.support import config_with, serve, strict_app

JOBS = "/v1/async/audio/transcriptions"
WAV = wav_bytes(0.1)


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def submit(http: httpx.Client, *, headers: dict[str, str] | None = None, file: bool = True, **fields: str) -> httpx.Response:
    data = {"model": "openai/whisper-1", **fields}
    # without a file part, one text part sent as a part keeps the body multipart
    files = {"file": ("speech.wav", WAV, "audio/wav")} if file else {"prompt": (None, "no file here")}
    return http.post(JOBS, data=data, files=files, headers=headers)


def wait(http: httpx.Client, job_id: str, timeout: float = 10.0) -> httpx.Response:
    """Poll as a client would until the job is done (200)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http.get(f"{JOBS}/{job_id}")
        if r.status_code != 202:
            return r
        assert r.json()["status"] in ("pending", "processing")
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.sqlite3")


@pytest.fixture
def http(run_gateway: Callable[..., str], fake_openai: Any, store_path: str) -> Iterator[httpx.Client]:
    url = run_gateway(config_with(fake_openai.provider_config(), job_store_path=store_path))
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


# ------------------------------------------------------------------------------------------------ the happy path


def test_submit_answers_202_with_a_pending_job_then_the_poll_gives_the_transcription(
    http: httpx.Client, fake_openai: Any
) -> None:
    before = time.time()
    r = submit(http, language="en", prompt="a fox")
    assert r.status_code == 202, r.text
    job = r.json()
    assert set(job) == {"id", "status", "created_at"} and job["status"] == "pending"
    assert before - 1 <= stamp(job["created_at"]) <= time.time() + 1
    assert r.headers["location"] == f"{JOBS}/{job['id']}"

    done = wait(http, job["id"])
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["id"] == job["id"] and body["status"] == "completed" and body["status_code"] == 200
    assert body["created_at"] == job["created_at"]
    assert stamp(body["expires_at"]) - stamp(body["completed_at"]) == pytest.approx(3600, abs=0.01)
    result = body["result"]
    assert result["text"] == TRANSCRIPT
    extra = result["extra_fields"]
    assert (extra["request_type"], extra["provider"], extra["model_requested"]) == ("transcription", "openai", "whisper-1")
    assert isinstance(extra["latency"], int) and "error" not in body

    upstream = fake_openai.last
    assert len(fake_openai.requests) == 1
    assert upstream.path == "/v1/audio/transcriptions"
    assert upstream.headers["authorization"] == f"Bearer {fake_openai.key().value.reveal()}"
    assert (upstream.field("model"), upstream.field("language"), upstream.field("prompt")) == ("whisper-1", "en", "a fox")
    assert upstream.file is not None and upstream.file.data == WAV and upstream.file.filename == "speech.wav"


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "srt", "text"])
def test_the_result_is_what_the_unified_route_answers(http: httpx.Client, fake_openai: Any, fmt: str) -> None:
    unified = http.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1", "response_format": fmt},
                        files={"file": ("speech.wav", WAV, "audio/wav")})
    assert unified.status_code == 200, unified.text
    job = submit(http, response_format=fmt).json()
    result = wait(http, job["id"]).json()["result"]
    expected = unified.json()
    for body in (result, expected):
        body["extra_fields"].pop("latency")
    assert result == expected
    assert fake_openai.requests[0].form == fake_openai.requests[1].form


def test_a_job_is_pending_or_processing_while_the_upstream_works(http: httpx.Client, fake_openai: Any) -> None:
    fake_openai.enqueue(slow(0.5))
    job = submit(http).json()
    polled = http.get(f"{JOBS}/{job['id']}")
    assert polled.status_code == 202
    assert polled.json()["status"] in ("pending", "processing")
    assert "result" not in polled.json() and "completed_at" not in polled.json()
    assert wait(http, job["id"]).json()["status"] == "completed"


# ------------------------------------------------------------------------------------------------ failures


def test_an_upstream_error_fails_the_job_with_the_bifrost_error(http: httpx.Client, fake_openai: Any) -> None:
    fake_openai.enqueue(status(400, "Invalid file format.", param="file"))
    job = submit(http).json()
    done = wait(http, job["id"])
    assert done.status_code == 200  # the poll succeeded; the job did not
    body = done.json()
    assert body["status"] == "failed" and body["status_code"] == 400 and "result" not in body
    error = body["error"]
    assert error["is_bifrost_error"] is False and error["status_code"] == 400
    assert error["error"]["message"] == "Invalid file format." and error["error"]["param"] == "file"
    assert error["extra_fields"]["provider"] == "openai" and error["extra_fields"]["model_requested"] == "whisper-1"
    assert len(fake_openai.requests) == 1


def test_what_only_the_call_can_show_fails_the_job_as_the_unified_route_fails(
    run_gateway: Callable[..., str], fake_openai: Any, store_path: str
) -> None:
    only_whisper = replace(fake_openai.provider_config(), keys=(fake_openai.key(models=("whisper-1",)),))
    url = run_gateway(config_with(only_whisper, job_store_path=store_path))
    with httpx.Client(base_url=url, timeout=10) as http:
        unified = http.post("/v1/audio/transcriptions", data={"model": "openai/gpt-4o-transcribe"},
                            files={"file": ("speech.wav", WAV, "audio/wav")})
        job = submit(http, model="openai/gpt-4o-transcribe").json()
        body = wait(http, job["id"]).json()
    assert unified.status_code == 400
    assert body["status"] == "failed" and body["status_code"] == 400
    assert body["error"] == unified.json()
    assert fake_openai.requests == []


def test_the_form_is_checked_before_any_job_exists(http: httpx.Client, fake_openai: Any) -> None:
    no_file = submit(http, file=False)
    assert no_file.status_code == 400 and no_file.json()["error"]["message"] == "file is required"
    unprefixed = submit(http, model="whisper-1")
    assert unprefixed.status_code == 400 and unprefixed.json()["error"]["param"] == "model"
    unconfigured = submit(http, model="groq/whisper-large-v3")
    assert unconfigured.status_code == 400 and unconfigured.json()["error"]["code"] == "provider_not_configured"
    streaming = submit(http, stream="true")
    assert streaming.status_code == 400 and streaming.json()["error"]["param"] == "stream"
    assert "stream is not supported for async transcriptions" in streaming.json()["error"]["message"]
    assert fake_openai.requests == []


@pytest.mark.parametrize("job_id", ["no-such-job", "00000000-0000-4000-8000-000000000000", "x" * 5000])
def test_unknown_ids_are_404_with_the_envelope(http: httpx.Client, job_id: str) -> None:
    r = http.get(f"{JOBS}/{job_id}")
    assert r.status_code == 404
    body = r.json()
    assert body["status_code"] == 404 and body["error"]["message"] == "async job not found or expired"
    assert body["error"]["type"] == "not_found_error"


# ------------------------------------------------------------------------------------------------ TTL


def test_a_result_expires_after_its_ttl_and_is_then_404(http: httpx.Client) -> None:
    job = submit(http, headers={"x-bf-async-job-result-ttl": "1"}).json()
    done = wait(http, job["id"]).json()
    assert stamp(done["expires_at"]) - stamp(done["completed_at"]) == pytest.approx(1, abs=0.01)
    assert http.get(f"{JOBS}/{job['id']}").status_code == 200
    time.sleep(max(0.0, stamp(done["expires_at"]) - time.time()) + 0.1)
    gone = http.get(f"{JOBS}/{job['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize(("header", "granted"), [("0", 3600), ("-1", 3600), ("90", 90), (str(10**9), MAX_RESULT_TTL)])
def test_the_ttl_header_as_upstream_reads_it(http: httpx.Client, header: str, granted: int) -> None:
    job = submit(http, headers={"x-bf-async-job-result-ttl": header}).json()
    done = wait(http, job["id"]).json()
    assert stamp(done["expires_at"]) - stamp(done["completed_at"]) == pytest.approx(granted, abs=0.01)


def test_the_configured_ttl_is_the_default(run_gateway: Callable[..., str], fake_openai: Any, store_path: str) -> None:
    url = run_gateway(config_with(fake_openai.provider_config(), job_store_path=store_path, async_job_result_ttl=42))
    with httpx.Client(base_url=url, timeout=10) as http:
        done = wait(http, submit(http).json()["id"]).json()
    assert stamp(done["expires_at"]) - stamp(done["completed_at"]) == pytest.approx(42, abs=0.01)


# ------------------------------------------------------------------------------------------------ limits, workers, shutdown


def test_a_full_backlog_is_503_until_a_job_finishes(run_gateway: Callable[..., str], fake_openai: Any,
                                                      store_path: str) -> None:
    fake_openai.enqueue(slow(0.5))
    url = run_gateway(config_with(fake_openai.provider_config(), job_store_path=store_path, max_pending_jobs=1))
    with httpx.Client(base_url=url, timeout=10) as http:
        first = submit(http).json()
        refused = submit(http)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "too_many_jobs"
        wait(http, first["id"])
        assert submit(http).status_code == 202
    assert len(fake_openai.requests) <= 2  # the refused job never reached the upstream


def test_a_job_submitted_to_one_process_is_polled_from_another(
    run_gateway: Callable[..., str], fake_openai: Any, store_path: str
) -> None:
    """What `serve --workers N` needs: two gateways on one store file stand in for two worker processes."""
    config = config_with(fake_openai.provider_config(), job_store_path=store_path)
    one, other = run_gateway(config), run_gateway(config)
    with httpx.Client(base_url=one, timeout=10) as a, httpx.Client(base_url=other, timeout=10) as b:
        job = submit(a).json()
        done = wait(b, job["id"])
        assert done.json()["status"] == "completed" and done.json()["result"]["text"] == TRANSCRIPT
        assert a.get(f"{JOBS}/{job['id']}").json() == done.json()


def test_shutdown_fails_the_running_job_and_another_process_reports_it(fake_openai: Any, store_path: str) -> None:
    fake_openai.enqueue(slow(30))
    config = config_with(fake_openai.provider_config(), job_store_path=store_path)
    with serve(strict_app(config)) as url, httpx.Client(base_url=url, timeout=10) as http:
        job = submit(http).json()
        deadline = time.monotonic() + 5
        while not fake_openai.requests and time.monotonic() < deadline:
            time.sleep(0.01)  # the upstream call is under way
        assert http.get(f"{JOBS}/{job['id']}").json()["status"] == "processing"
    with serve(strict_app(config)) as url, httpx.Client(base_url=url, timeout=10) as http:
        body = http.get(f"{JOBS}/{job['id']}").json()
    assert body["status"] == "failed" and body["status_code"] == 503
    assert body["error"]["error"]["code"] == "gateway_shutdown"
    assert fake_openai.last.disconnected or len(fake_openai.requests) == 1
