"""What a client can send that no SDK would: each is served, or refused with a Bifrost envelope and the right
status. Never a 500, never a stack trace (in the body or in the server's log), never a hang beyond a bound.

Requests go to a real gateway on loopback (uvicorn + httptools, as in production) through httpx or a raw
socket when the bytes on the wire are the point; the upstreams are the session's fakes.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bifrost_stt.server.app import create_app
from tests.audio import wav_bytes
from tests.support import config_with, serve

WAV = wav_bytes(0.1)
B = "b0undary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={B}"}
OPENAI = "/openai/v1/audio/transcriptions"
UNIFIED = "/v1/audio/transcriptions"
AZURE = "/openai/openai/deployments/{}/audio/transcriptions"


# ------------------------------------------------------------------------------ helpers


def multipart(parts: list[tuple[bytes, bytes]], boundary: str = B) -> bytes:
    """Hand-built multipart: each part is (its header lines, its data)."""
    out = b""
    for headers, data in parts:
        out += b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def text(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name + b'"', value


def upload(data: bytes = WAV, filename: bytes = b"speech.wav", name: bytes = b"file") -> tuple[bytes, bytes]:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename + b'"'
    return disposition + b"\r\nContent-Type: audio/wav", data


def form(*extra: tuple[bytes, bytes], model: bytes = b"whisper-1") -> bytes:
    return multipart([text(b"model", model), *extra, upload()])


def raw_request(url: str, data: bytes, *, timeout: float = 5.0) -> tuple[int | None, dict[str, str], bytes]:
    """Send bytes as they are; read until the server closes. Status None: nothing came within ``timeout``."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            if not received:
                return None, {}, b""
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post_line(path: bytes, body: bytes, *, length: int | None = None, extra: bytes = b"") -> bytes:
    size = len(body) if length is None else length
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: gateway\r\nContent-Type: multipart/form-data; boundary=" + B.encode()
        + b"\r\nContent-Length: " + str(size).encode() + b"\r\nConnection: close\r\n" + extra + b"\r\n" + body
    )


def assert_envelope(status: int | None, headers: Any, body: bytes | str, expected: int) -> dict[str, Any]:
    import json

    raw = body if isinstance(body, str) else body.decode("utf-8", "replace")
    assert status == expected, raw[:500]
    assert headers["content-type"].startswith("application/json")
    assert "Traceback" not in raw
    parsed = json.loads(raw)
    assert parsed["status_code"] == expected
    assert isinstance(parsed["is_bifrost_error"], bool)
    assert parsed["error"]["message"]
    return parsed


def envelope(r: httpx.Response, expected: int) -> dict[str, Any]:
    return assert_envelope(r.status_code, r.headers, r.text, expected)


# ------------------------------------------------------------------------------ fixtures


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_traceback_in_the_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """The server's log (ours, uvicorn's, Connexion's) holds no traceback for anything a client sent."""
    collect = _Collect()
    # uvicorn's loggers do not propagate to the root once uvicorn has configured logging.
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(collect)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
    if request.node.get_closest_marker("xfail"):
        return
    traces = [r for r in collect.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not traces, "\n".join(f"{r.name}: {r.getMessage()}" for r in traces)


@pytest.fixture
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=10) as client:
        yield client


# ------------------------------------------------------------------------------ the body on the wire


def test_chunked_upload_without_content_length_is_served(http: httpx.Client, fake_openai: Any) -> None:
    def chunks() -> Iterator[bytes]:
        body = form()
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    request = http.build_request("POST", OPENAI, content=chunks(), headers=MULTIPART)
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    r = http.send(request)
    assert r.status_code == 200, r.text
    assert fake_openai.last.file.data == WAV


def test_content_length_shorter_than_the_body_is_a_400(gateway_url: str, fake_openai: Any) -> None:
    body = form()
    status, headers, answer = raw_request(gateway_url, post_line(OPENAI.encode(), body, length=len(body) - 20))
    parsed = assert_envelope(status, headers, answer, 400)
    assert "closing boundary" in parsed["error"]["message"]
    assert fake_openai.requests == []


def test_content_length_longer_than_the_body_waits_for_it_and_lets_go(
    gateway_url: str, http: httpx.Client, fake_openai: Any
) -> None:
    body = form()
    started = time.monotonic()
    status, _, _ = raw_request(gateway_url, post_line(OPENAI.encode(), body, length=len(body) + 100), timeout=1.0)
    assert status is None  # HTTP says the rest is still coming: the server waits, the client's timeout bounds it
    assert time.monotonic() - started < 5
    time.sleep(0.2)  # the server sees the disconnect and drops the half upload
    assert fake_openai.requests == []
    assert http.post(OPENAI, content=form(), headers=MULTIPART).status_code == 200  # and serves the next one


def test_huge_header_is_served(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post(OPENAI, content=form(), headers={**MULTIPART, "x-padding": "a" * 100_000})
    assert r.status_code == 200, r.text


def test_empty_body(http: httpx.Client) -> None:
    body = envelope(http.post(OPENAI, content=b"", headers=MULTIPART), 400)
    assert body["error"]["message"] == "model is required"
    body = envelope(http.post(UNIFIED, content=b""), 415)
    assert "multipart/form-data" in body["error"]["message"]


# ------------------------------------------------------------------------------ multipart framing


def test_multipart_without_boundary_is_400(http: httpx.Client) -> None:
    body = envelope(http.post(OPENAI, content=form(), headers={"content-type": "multipart/form-data"}), 400)
    assert "boundary" in body["error"]["message"]


@pytest.mark.parametrize("content_type", [
    f"multipart/form-data; charset=utf-8; boundary={B}",
    f'multipart/form-data; boundary="{B}"; charset=UTF-8',
    f"Multipart/Form-Data; BOUNDARY={B}",
])
def test_content_type_parameters_are_served(http: httpx.Client, fake_openai: Any, content_type: str) -> None:
    r = http.post(OPENAI, content=form(), headers={"content-type": content_type})
    assert r.status_code == 200, r.text


def test_a_70_character_boundary_is_served(http: httpx.Client, fake_openai: Any) -> None:
    boundary = "-" * 20 + "x" * 50
    assert len(boundary) == 70  # RFC 2046's maximum
    body = multipart([text(b"model", b"whisper-1"), upload()], boundary=boundary)
    r = http.post(OPENAI, content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text


def test_a_part_without_a_name_is_400(http: httpx.Client, fake_openai: Any) -> None:
    body = form((b"Content-Disposition: form-data", b"value"))
    assert "no form-data name" in envelope(http.post(OPENAI, content=body, headers=MULTIPART), 400)["error"]["message"]
    assert fake_openai.requests == []


def test_ten_thousand_tiny_parts_are_refused(http: httpx.Client, fake_openai: Any) -> None:
    body = form(*[text(b"x", b"1")] * 10_000)
    assert "too many form parts" in envelope(http.post(OPENAI, content=body, headers=MULTIPART), 400)["error"]["message"]
    assert fake_openai.requests == []


def test_nested_multipart(http: httpx.Client, fake_openai: Any) -> None:
    inner = multipart([text(b"model", b"whisper-2")], boundary="inner")
    nested = b'Content-Disposition: form-data; name="prompt"\r\nContent-Type: multipart/mixed; boundary=inner'
    r = http.post(OPENAI, content=form((nested, inner)), headers=MULTIPART)
    assert r.status_code == 200, r.text  # a text field whose text happens to be multipart: passed on as text
    assert fake_openai.last.field("prompt") == inner.decode()
    assert fake_openai.last.field("model") == "whisper-1"
    as_file = b'Content-Disposition: form-data; name="file"; filename="f"\r\nContent-Type: multipart/mixed; boundary=inner'
    body = multipart([text(b"model", b"whisper-1"), (as_file, inner)])
    assert envelope(http.post(OPENAI, content=body, headers=MULTIPART), 400)["error"]["param"] == "file"


# ------------------------------------------------------------------------------ field names and values


def test_non_utf8_field_values_are_400(http: httpx.Client, fake_openai: Any) -> None:
    for name in (b"language", b"x-unknown-field"):
        body = envelope(http.post(OPENAI, content=form(text(name, b"\xff\xfeen")), headers=MULTIPART), 400)
        assert body["error"]["param"] == name.decode()
    assert fake_openai.requests == []


@pytest.mark.parametrize("name", [b"mo\x00del", b"x\x00", b"a\x1bb", b"tab\tname"])
def test_control_characters_in_field_names_are_400(http: httpx.Client, fake_openai: Any, name: bytes) -> None:
    body = envelope(http.post(OPENAI, content=form(text(name, b"v")), headers=MULTIPART), 400)
    assert "control characters" in body["error"]["message"]
    assert fake_openai.requests == []  # never forwarded to the provider


def test_file_part_with_zero_bytes(http: httpx.Client, fake_openai: Any) -> None:
    body = multipart([text(b"model", b"whisper-1"), upload(b"")])
    assert envelope(http.post(OPENAI, content=body, headers=MULTIPART), 400)["error"]["message"] == "file is empty"
    body = multipart([text(b"model", b"whisper-1"), upload(b"", filename=b"")])  # a browser's empty file input
    assert envelope(http.post(OPENAI, content=body, headers=MULTIPART), 400)["error"]["message"] == "file is required"
    assert fake_openai.requests == []


@pytest.mark.parametrize("value", [b"NaN", b"1e309", b"inf", b"-Infinity", b"1_0", b"0x1", b""])
def test_temperature_that_is_not_a_finite_number_is_400(http: httpx.Client, fake_openai: Any, value: bytes) -> None:
    body = envelope(http.post(OPENAI, content=form(text(b"temperature", value)), headers=MULTIPART), 400)
    assert body["error"]["param"] == "temperature"
    assert fake_openai.requests == []


@pytest.mark.parametrize("value", [b"-0", b" 0.5 ", b"1", b"0e0"])
def test_temperature_in_range_is_served(http: httpx.Client, fake_openai: Any, value: bytes) -> None:
    r = http.post(OPENAI, content=form(text(b"temperature", value)), headers=MULTIPART)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", [b"TRUE", b"True", b"true"])
def test_boolean_spellings_are_read(http: httpx.Client, fake_openai: Any, value: bytes) -> None:
    r = http.post(OPENAI, content=form(text(b"stream", value)), headers=MULTIPART)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize("value", [b"yes", b"on", b"truee", b"1", b"0", b"Y"])
def test_other_boolean_spellings_are_400(http: httpx.Client, fake_openai: Any, value: bytes) -> None:
    # upstream streams only on "true": stream=1 would mean something else there, so it is refused here
    body = envelope(http.post(OPENAI, content=form(text(b"stream", value)), headers=MULTIPART), 400)
    assert body["error"]["param"] == "stream"
    assert "stream" in body["error"]["message"]
    assert fake_openai.requests == []


def test_response_format_with_trailing_space_is_400(http: httpx.Client) -> None:
    body = envelope(http.post(OPENAI, content=form(text(b"response_format", b"json ")), headers=MULTIPART), 400)
    assert body["error"]["param"] == "response_format"


def test_model_with_surrounding_whitespace_is_trimmed(http: httpx.Client, fake_openai: Any) -> None:
    assert http.post(OPENAI, content=form(model=b"  whisper-1 \t"), headers=MULTIPART).status_code == 200
    assert fake_openai.last.field("model") == "whisper-1"


@pytest.mark.parametrize("model", ["whisper-1\u00e9", "\u200bwhisper-1", "w" * 4000, "\u0645\u0648\u062f\u0644"])
def test_model_nobody_serves_is_the_providers_404(http: httpx.Client, fake_openai: Any, model: str) -> None:
    body = envelope(http.post(OPENAI, content=form(model=model.encode()), headers=MULTIPART), 404)
    assert body["error"]["code"] == "model_not_found"
    assert fake_openai.last.field("model") == model  # unicode travels intact


def test_blank_model_is_400(http: httpx.Client) -> None:
    body = envelope(http.post(OPENAI, content=form(model=b"   "), headers=MULTIPART), 400)
    assert body["error"]["message"] == "model is required"


@pytest.mark.parametrize("field", ["model", "fallbacks"])
def test_azure_model_with_control_characters_is_refused(http: httpx.Client, field: str) -> None:
    parts = [text(b"model", b"azure/\x18x" if field == "model" else b"openai/no-such-model")]
    if field == "fallbacks":
        parts.append(text(b"fallbacks", b"azure/\x18x"))
    r = http.post(UNIFIED, content=multipart([*parts, upload()]), headers=MULTIPART)
    assert r.status_code in (400, 404), r.text


# ------------------------------------------------------------------------------ methods and paths


POST_PATHS = [UNIFIED, OPENAI, "/openai/audio/transcriptions", AZURE.format("whisper"), "/litellm/v1/audio/transcriptions",
              "/langchain/v1/audio/transcriptions", "/pydanticai/v1/audio/transcriptions", "/v1/async/audio/transcriptions"]


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", POST_PATHS)
def test_other_methods_on_post_routes_are_405_with_allow(http: httpx.Client, path: str, method: str) -> None:
    r = http.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    if method == "HEAD":
        assert r.headers["content-type"] == "application/json" and r.content == b""
    else:
        envelope(r, 405)


@pytest.mark.parametrize("path", ["/health", "/v1/async/audio/transcriptions/job-1"])
@pytest.mark.parametrize("method", ["OPTIONS", "POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_get_routes_are_405_with_allow(http: httpx.Client, path: str, method: str) -> None:
    r = http.request(method, path)
    envelope(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}


def test_head_on_get_routes_answers_like_get(http: httpx.Client) -> None:
    r = http.head("/health")
    assert r.status_code == 200 and r.content == b""
    assert http.head("/v1/async/audio/transcriptions/job-1").status_code == 404  # no such job


def test_trailing_slash_redirects_to_the_route_keeping_the_method(http: httpx.Client, fake_openai: Any) -> None:
    r = http.post(OPENAI + "/", content=form(), headers=MULTIPART)
    assert r.status_code == 307  # 307: the client sends the same POST again, body included
    assert httpx.URL(r.headers["location"]).path == OPENAI
    followed = http.post(OPENAI + "/", content=form(), headers=MULTIPART, follow_redirects=True)
    assert followed.status_code == 200, followed.text


@pytest.mark.parametrize("path", [
    b"/v1/audio/transcriptions%2F..",
    b"/v1/audio/transcriptions%2f%2e%2e",
    b"/v1/audio/../audio/transcriptions",
    b"/v1/audio/transcriptions%00",
    b"//v1/audio/transcriptions",
    b"/v1/audio/%74ranscriptions%3B",
])
def test_encoded_path_tricks_are_404(gateway_url: str, fake_openai: Any, path: bytes) -> None:
    status, headers, body = raw_request(gateway_url, post_line(path, form(model=b"openai/whisper-1")))
    assert_envelope(status, headers, body, 404)
    assert fake_openai.requests == []


@pytest.mark.parametrize("deployment", [b"%18x", b"%2E%2E", b"..", b"a%3Fb", b"a%23b", b"a%20b", b"%C3%A9", b"x" * 65])
def test_azure_deployment_with_odd_characters_is_400(gateway_url: str, fake_azure: Any, deployment: bytes) -> None:
    path = AZURE.format(deployment.decode()).encode() + b"?api-version=2024-10-21"
    status, headers, body = raw_request(gateway_url, post_line(path, form()))
    assert "does not match" in assert_envelope(status, headers, body, 400)["error"]["message"]
    assert fake_azure.requests == []


@pytest.mark.parametrize("deployment", ["a%2Fb", "a%0D%0Ab", "a%0Ab"])
def test_azure_deployment_that_is_no_path_segment_is_404(gateway_url: str, fake_azure: Any, deployment: str) -> None:
    status, headers, body = raw_request(gateway_url, post_line(AZURE.format(deployment).encode(), form()))
    assert_envelope(status, headers, body, 404)
    assert fake_azure.requests == []


@pytest.mark.parametrize("deployment", ["whisper", "gpt-4o-mini-transcribe"])
def test_azure_deployment_names_are_served(http: httpx.Client, fake_azure: Any, deployment: str) -> None:
    r = http.post(AZURE.format(deployment), params={"api-version": "2024-10-21"}, content=form(), headers=MULTIPART)
    assert r.status_code == 200, r.text
    assert fake_azure.last.path == f"/openai/deployments/{deployment}/audio/transcriptions"


def test_repeated_api_version_is_served_with_the_keys_own(http: httpx.Client, fake_azure: Any) -> None:
    r = http.post(AZURE.format("whisper") + "?api-version=2024-10-21&api-version=1999-01-01&api-version=",
                  content=form(), headers=MULTIPART)
    assert r.status_code == 200, r.text
    assert [v for k, v in fake_azure.last.query if k == "api-version"] == ["2024-10-21"]


# ------------------------------------------------------------------------------ header parameters


@pytest.mark.parametrize("ttl", ["3600", "60", "0"])
def test_integer_header_parameter_is_read_as_an_integer(http: httpx.Client, ttl: str) -> None:
    r = http.post("/v1/async/audio/transcriptions", content=form(model=b"openai/whisper-1"),
                  headers={**MULTIPART, "x-bf-async-job-result-ttl": ttl})
    assert r.status_code == 202, r.text  # past validation: the job is accepted


@pytest.mark.parametrize("ttl", ["soon", "1.5", "1e3", ""])
def test_header_parameter_of_the_wrong_type_is_400(http: httpx.Client, ttl: str) -> None:
    r = http.post("/v1/async/audio/transcriptions", content=form(model=b"openai/whisper-1"),
                  headers={**MULTIPART, "x-bf-async-job-result-ttl": ttl})
    body = envelope(r, 400)
    assert "Failed validating" not in body["error"]["message"]  # the first line of jsonschema's dump only


def test_job_poll_is_404_for_unknown_ids(http: httpx.Client) -> None:
    envelope(http.get("/v1/async/audio/transcriptions/job-1"), 404)
    envelope(http.get("/v1/async/audio/transcriptions/%20%E2%9C%93"), 404)
