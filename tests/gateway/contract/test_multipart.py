"""The one-pass multipart validator, driven through a real Connexion AsyncApp."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import connexion
import httpx
import pytest
from connexion.lifecycle import ConnexionResponse
from connexion.resolver import Resolver
from starlette.types import Message, Receive, Scope

from bifrost_stt.kernel.canonical import BytesAudio, FileAudio
from bifrost_stt.kernel.errors import GatewayError
from bifrost_stt.gateway.contract.multipart import ParsedForm, UploadLimits, make_validator_map, parsed_form

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 200

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/v1/{tenant}/transcriptions": {
            "post": {
                "operationId": "transcribe",
                "parameters": [
                    {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "api-version", "in": "query", "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/Req"}}},
                },
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
    "components": {
        "schemas": {
            "Req": {
                "type": "object",
                "required": ["model", "file"],
                "properties": {
                    "model": {"type": "string"},
                    "file": {"type": "string", "format": "binary"},
                    "fallbacks": {"type": "array", "items": {"type": "string"}},
                    "timestamp_granularities": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["word", "segment"]},
                    },
                    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                    "stream": {"type": "boolean"},
                },
            }
        }
    },
}

SEEN: list[dict[str, Any]] = []
HOOKS: list[Any] = []  # async callables given the ParsedForm before the handler closes it


async def transcribe(tenant: str, **kwargs: Any) -> dict[str, Any]:
    """Echo what the handler received: path/query params, the parsed form, the file's facts."""
    form = parsed_form(connexion.context.scope)
    assert form is not None
    assert parsed_form(connexion.request.scope) is form
    SEEN.append({"form": form})
    for hook in HOOKS:
        await hook(form)
    files = {
        name: {
            "type": type(f).__name__, "filename": f.filename, "content_type": f.content_type,
            "size": f.size, "format": f.format, "head": f.head.hex(),
        }
        for name, f in form.files.items()
    }
    body = {"tenant": tenant, "query": kwargs.get("apiversion"), "fields": form.fields,
            "extra": form.extra, "files": files}
    form.close()
    return body


def render(request: Any, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, GatewayError)
    body = {"status": exc.status, "message": exc.message, "param": exc.param, "type": exc.error_type}
    return ConnexionResponse(status_code=exc.status, body=json.dumps(body), content_type="application/json")


def make_app(**limits: Any) -> connexion.AsyncApp:
    settings = {"max_body_bytes": 1 << 20, "spool_threshold_bytes": 4096, "reject_non_audio": True} | limits
    app = connexion.AsyncApp(__name__, validator_map=make_validator_map(UploadLimits(**settings)))
    resolver = Resolver(function_resolver=lambda _: transcribe)
    app.add_api(json.loads(json.dumps(SPEC)), resolver=resolver)
    app.add_error_handler(GatewayError, render)
    return app


@pytest.fixture
def app() -> connexion.AsyncApp:
    SEEN.clear()
    return make_app()


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


URL = "/v1/acme/transcriptions?api-version=2024-10-21"


def encode(data: Any = None, files: Any = None) -> bytes:
    """A multipart body, text parts first then files, as the SDKs send it (lists keep repeats and order)."""
    parts = []
    items = list(data.items()) if isinstance(data, dict) else list(data or [])
    for name, value in items:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + value.encode() + b"\r\n")
    for name, spec in (files or {}).items():
        filename, content, *ctype = spec
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        head += f"Content-Type: {ctype[0] if ctype else 'application/octet-stream'}\r\n\r\n"
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


BOUNDARY = "bOuNdArY"


async def post(app: Any, data: Any = None, files: Any = None, **kw: Any) -> httpx.Response:
    if data is not None or files is not None:
        kw["content"] = encode(data, files)
        kw["headers"] = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with client(app) as c:
        return await c.post(URL, **kw)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_fields_coerced_and_params_reach_handler(app: Any) -> None:
    data = [
        ("model", "openai/whisper-1"), ("timestamp_granularities[]", "word"),
        ("timestamp_granularities[]", "segment"), ("temperature", "0.5"), ("stream", "TRUE"),
        ("include[]", "logprobs"), ("chunking_strategy[type]", "server_vad"),
    ]
    r = await post(app, data=data, files={"file": ("a.wav", WAV, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"] == "acme" and body["query"] == "2024-10-21"
    assert body["fields"] == {"model": "openai/whisper-1", "timestamp_granularities": ["word", "segment"],
                              "temperature": 0.5, "stream": True}
    assert body["extra"] == [["include[]", "logprobs"], ["chunking_strategy[type]", "server_vad"]]
    assert body["files"]["file"]["format"] == "wav"
    assert body["files"]["file"]["type"] == "BytesAudio"


@pytest.mark.parametrize("value,expected", [("true", True), ("False", False), ("TRUE", True), ("false", False)])
async def test_booleans(app: Any, value: str, expected: bool) -> None:
    r = await post(app, data={"model": "m", "stream": value}, files={"file": ("a.wav", WAV)})
    assert r.json()["fields"]["stream"] is expected


@pytest.mark.parametrize("value", ["yes", "1", "0", "on"])
async def test_bad_boolean_names_field(app: Any, value: str) -> None:
    r = await post(app, data={"model": "m", "stream": value}, files={"file": ("a.wav", WAV)})
    assert r.status_code == 400 and r.json()["param"] == "stream"


@pytest.mark.parametrize("data", [
    [("fallbacks", "groq/whisper-large-v3"), ("fallbacks", "openai/whisper-1")],
    [("fallbacks[]", "groq/whisper-large-v3"), ("fallbacks[]", "openai/whisper-1")],
    [("fallbacks", '["groq/whisper-large-v3","openai/whisper-1"]')],
])
async def test_fallbacks_every_spelling(app: Any, data: list[tuple[str, str]]) -> None:
    r = await post(app, data=[("model", "m"), *data], files={"file": ("a.wav", WAV)})
    assert r.json()["fields"]["fallbacks"] == ["groq/whisper-large-v3", "openai/whisper-1"]


async def test_comma_in_value_kept_whole(app: Any) -> None:
    data = [("model", "m"), ("fallbacks", "custom/a,b"), ("fallbacks", "x/y")]
    r = await post(app, data=data, files={"file": ("a.wav", WAV)})
    assert r.json()["fields"]["fallbacks"] == ["custom/a,b", "x/y"]
    r = await post(app, data=[("model", "m"), ("fallbacks", "custom/a,b")], files={"file": ("a.wav", WAV)})
    assert r.json()["fields"]["fallbacks"] == ["custom/a,b"]


async def test_bad_json_array_is_400(app: Any) -> None:
    r = await post(app, data={"model": "m", "fallbacks": '["a",'}, files={"file": ("a.wav", WAV)})
    assert r.status_code == 400 and r.json()["param"] == "fallbacks"


async def test_bad_enum_names_field_and_values(app: Any) -> None:
    data = [("model", "m"), ("timestamp_granularities[]", "sentence")]
    r = await post(app, data=data, files={"file": ("a.wav", WAV)})
    assert r.status_code == 400
    assert r.json()["param"] == "timestamp_granularities"
    assert "word" in r.json()["message"] and "segment" in r.json()["message"]


async def test_out_of_range_and_wrong_type(app: Any) -> None:
    for value in ("2", "hot"):
        r = await post(app, data={"model": "m", "temperature": value}, files={"file": ("a.wav", WAV)})
        assert r.status_code == 400 and r.json()["param"] == "temperature", r.text


async def test_missing_model(app: Any) -> None:
    r = await post(app, data={"language": "en"}, files={"file": ("a.wav", WAV)})
    assert r.status_code == 400
    assert r.json()["message"] == "model is required" and r.json()["param"] == "model"


async def test_missing_file(app: Any) -> None:
    r = await post(app, data={"model": "m"}, files={"other": ("x.bin", b"\x00\x01")})
    assert r.status_code == 400
    assert r.json()["message"] == "file is required" and r.json()["param"] == "file"


async def test_file_as_text_part(app: Any) -> None:
    r = await post(app, data={"model": "m", "file": "not a file"}, files={"x": ("x", b"\x00")})
    assert r.status_code == 400 and r.json()["param"] == "file"
    assert "file must be sent as a file upload" in r.json()["message"]


async def test_file_part_for_text_property(app: Any) -> None:
    r = await post(app, files={"model": ("m.txt", b"\x00"), "file": ("a.wav", WAV)})
    assert r.status_code == 400 and r.json()["param"] == "model"


async def test_repeated_scalar_is_400(app: Any) -> None:
    r = await post(app, data=[("model", "a"), ("model", "b")], files={"file": ("a.wav", WAV)})
    assert r.status_code == 400 and r.json()["param"] == "model"


@pytest.mark.parametrize("content_type,body", [
    ("multipart/form-data", b"--x\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--x--\r\n"),
    ("multipart/form-data; boundary=x", b"garbage without any boundary"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=model\r\n\r\nm"),
    ("multipart/form-data; boundary=x", b"--x\r\nbroken header line\r\n\r\nm\r\n--x--\r\n"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: attachment\r\n\r\nm\r\n--x--\r\n"),
])
async def test_malformed_multipart_is_400(app: Any, content_type: str, body: bytes) -> None:
    r = await post(app, content=body, headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "invalid_request_error"


async def test_text_part_over_one_mib(app: Any) -> None:
    app = make_app(max_body_bytes=8 << 20)
    r = await post(app, data={"model": "m", "prompt": "x" * ((1 << 20) + 1)}, files={"file": ("a.wav", WAV)})
    assert r.status_code == 413 and r.json()["param"] == "prompt"


async def test_empty_body_names_first_missing_field(app: Any) -> None:
    r = await post(app, content=b"", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and r.json()["message"] == "model is required"


async def call_raw(app: Any, headers: list[tuple[bytes, bytes]], receive: Receive) -> int:
    """Drive the ASGI app directly with a hand-made receive channel; return the response status."""
    status: list[int] = []
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/acme/transcriptions", "raw_path": b"/v1/acme/transcriptions",
        "query_string": b"", "root_path": "", "headers": [(b"host", b"t"), *headers],
        "client": ("127.0.0.1", 1), "server": ("t", 80),
    }

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def test_declared_length_over_limit_is_413_without_reading(app: Any) -> None:
    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    headers = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", str(2 << 20).encode())]
    assert await call_raw(app, headers, receive) == 413


async def test_chunked_over_limit_is_413_as_soon_as_it_passes(app: Any) -> None:
    reads = 0
    before = open_fds()

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        if reads == 1:
            head = b"--x\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n\r\n" + WAV[:64]
            return {"type": "http.request", "body": head, "more_body": True}
        if reads > 40:
            raise AssertionError("read past the limit")
        return {"type": "http.request", "body": b"\x00" * 65536, "more_body": True}

    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    assert await call_raw(app, headers, receive) == 413
    assert reads == 17  # 1 MiB limit: the 17th 64 KiB message passes it
    assert open_fds() == before  # the spooled file was closed


async def test_chunked_body_within_limit_is_accepted(app: Any) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"--x\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n"
        yield b"--x\r\nContent-Disposition: form-data; name=file; filename=upload\r\n\r\n"
        yield WAV + b"\r\n--x--\r\n"

    async with client(app) as c:
        r = await c.post(URL, content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 200, r.text
    assert r.json()["files"]["file"]["filename"] == "upload"


async def test_large_file_spools_to_disk(app: Any) -> None:
    data = WAV + os.urandom(100_000)
    r = await post(app, data={"model": "m"}, files={"file": ("upload", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    f = r.json()["files"]["file"]
    assert f["type"] == "FileAudio" and f["size"] == len(data) and f["format"] == "wav"
    assert f["filename"] == "upload" and f["content_type"] == "application/octet-stream"
    assert bytes.fromhex(f["head"]) == data[:64]


async def test_spooled_content_round_trips() -> None:
    """The spooled file replays exactly, by read() and by chunks(), as many times as asked."""
    captured: dict[str, Any] = {}
    data = MP3 + os.urandom(30_000)

    async def probe(form: ParsedForm) -> None:
        audio = form.files["file"]
        captured["kind"] = type(audio)
        captured["read"] = await audio.read()
        captured["chunks"] = b"".join([c async for c in audio.chunks(7000)])

    app = make_app(spool_threshold_bytes=1000)
    HOOKS.append(probe)
    try:
        r = await post(app, data={"model": "m"}, files={"file": ("x.mp3", data, "audio/mpeg")})
    finally:
        HOOKS.clear()
    assert r.status_code == 200, r.text
    assert r.json()["files"]["file"]["format"] == "mp3"
    assert captured == {"kind": FileAudio, "read": data, "chunks": data}


async def test_small_file_stays_in_memory(app: Any) -> None:
    r = await post(app, data={"model": "m"}, files={"file": ("a.wav", WAV)})
    assert r.json()["files"]["file"]["type"] == "BytesAudio"
    assert r.json()["files"]["file"]["size"] == len(WAV)


async def test_in_memory_file_arriving_in_pieces_round_trips() -> None:
    """A file under the threshold sent in many body messages is joined once, byte for byte."""
    captured: dict[str, Any] = {}
    data = MP3 + os.urandom(50_000)

    async def probe(form: ParsedForm) -> None:
        audio = form.files["file"]
        captured["kind"] = type(audio)
        captured["read"] = await audio.read()
        captured["chunks"] = b"".join([c async for c in audio.chunks(7000)])

    app = make_app(spool_threshold_bytes=1 << 20)
    HOOKS.append(probe)
    try:
        body = encode({"model": "m"}, {"file": ("x.mp3", data, "audio/mpeg")})

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        async with client(app) as c:
            r = await c.post(URL, content=pieces(),
                             headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    finally:
        HOOKS.clear()
    assert r.status_code == 200, r.text
    assert captured == {"kind": BytesAudio, "read": data, "chunks": data}


def test_a_released_reader_is_freed_without_the_cycle_collector() -> None:
    """The parser's callbacks are the reader's bound methods; once released, plain reference counting
    frees the reader (and the form and in-memory upload it holds) without waiting for a full GC."""
    import gc
    import weakref

    from bifrost_stt.gateway.contract.form_schema import compile_plan
    from bifrost_stt.gateway.contract.multipart import _FormReader

    schema = {"type": "object", "properties": {"model": {"type": "string"},
                                               "file": {"type": "string", "format": "binary"}}}
    limits = UploadLimits(max_body_bytes=1 << 20, spool_threshold_bytes=1 << 20, reject_non_audio=True)
    body = encode({"model": "m"}, {"file": ("a.wav", WAV)})
    gc.collect()
    gc.disable()
    try:
        reader = _FormReader(BOUNDARY.encode(), compile_plan(schema), limits)
        reader.feed(body)
        form = reader.finish(len(body))
        assert isinstance(form.files["file"], BytesAudio)
        reader.release()
        gone, form_gone = weakref.ref(reader), weakref.ref(form)
        del reader, form
        assert gone() is None and form_gone() is None
    finally:
        gc.enable()


def test_closing_a_form_lets_go_of_its_files() -> None:
    form = ParsedForm(files={"file": BytesAudio(WAV)})
    form.close()
    assert form.files == {}


@pytest.mark.parametrize("content", [
    b'{"text": "this is json, not audio"}', b"<html><body>hello</body></html>",
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, b"%PDF-1.7\n" + b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 100,
])
async def test_non_audio_rejected(app: Any, content: bytes) -> None:
    r = await post(app, data={"model": "m"}, files={"file": ("upload", content)})
    assert r.status_code == 400 and r.json()["type"] == "invalid_request_error"
    assert "wav" in r.json()["message"] and r.json()["param"] == "file"


async def test_non_audio_allowed_when_not_rejecting() -> None:
    app = make_app(reject_non_audio=False)
    r = await post(app, data={"model": "m"}, files={"file": ("upload", b"{}")})
    assert r.status_code == 200


async def test_unknown_binary_allowed(app: Any) -> None:
    r = await post(app, data={"model": "m"}, files={"file": ("x.raw", bytes(range(256)))})
    assert r.status_code == 200 and r.json()["files"]["file"]["format"] is None


async def test_empty_file_is_400(app: Any) -> None:
    r = await post(app, data={"model": "m"}, files={"file": ("a.wav", b"")})
    assert r.status_code == 400 and r.json()["param"] == "file"


async def test_no_files_left_after_errors(tmp_path: Any) -> None:
    app = make_app(spool_threshold_bytes=100, spool_dir=str(tmp_path))
    before = open_fds()
    big = WAV + os.urandom(20_000)
    cases = [
        ({"model": "m", "temperature": "5"}, {"file": ("a.wav", big)}),  # schema error after spooling
        ({"model": "m", "stream": "maybe"}, {"file": ("a.wav", big)}),
        ({}, {"file": ("a.wav", big)}),  # missing model
    ]
    for data, files in cases:
        r = await post(app, data=data, files=files)
        assert r.status_code == 400
    r = await post(app, content=b"--x\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\n" + big,
                   headers={"content-type": "multipart/form-data; boundary=x"})  # truncated
    assert r.status_code == 400
    assert open_fds() == before
    assert list(tmp_path.iterdir()) == []


async def test_no_second_parse(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import starlette.formparsers

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Starlette parsed the form again")

    monkeypatch.setattr(starlette.formparsers.MultiPartParser, "__init__", boom)
    r = await post(app, data={"model": "m"}, files={"file": ("a.wav", WAV)})
    assert r.status_code == 200, r.text


async def test_validator_map_keeps_connexion_defaults() -> None:
    from connexion.validators import VALIDATOR_MAP

    limits = UploadLimits(max_body_bytes=1, spool_threshold_bytes=1, reject_non_audio=True)
    vmap = make_validator_map(limits)
    assert vmap["parameter"] is VALIDATOR_MAP["parameter"]
    assert vmap["response"] is VALIDATOR_MAP["response"]
    assert vmap["body"]["application/json"] is VALIDATOR_MAP["body"]["application/json"]
    assert vmap["body"]["application/x-www-form-urlencoded"] is VALIDATOR_MAP["body"][
        "application/x-www-form-urlencoded"]
    assert vmap["body"]["multipart/form-data"].limits is limits
    assert VALIDATOR_MAP["body"]["multipart/form-data"].__name__ == "MultiPartFormDataValidator"


async def test_schema_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import bifrost_stt.gateway.contract.form_schema as fs

    calls = 0
    real = fs.compile_plan

    def counting(schema: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        return real(schema)

    monkeypatch.setattr(fs, "compile_plan", counting)
    SEEN.clear()
    app = make_app()  # the app's plan cache is made with the counting compiler
    for _ in range(3):
        r = await post(app, data={"model": "m"}, files={"file": ("a.wav", WAV)})
        assert r.status_code == 200
    assert calls == 1


def test_parsed_form_close_is_once_and_runs_on_collection(tmp_path: Any) -> None:
    import gc

    def spooled() -> FileAudio:
        fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR)
        return FileAudio(fd=fd, size=0)

    before = open_fds()
    form = ParsedForm(files={"file": spooled()})
    form.close()
    form.close()  # idempotent: a second close must not hit a reused descriptor
    assert open_fds() == before
    ParsedForm(files={"file": spooled()})  # dropped without close()
    gc.collect()
    assert open_fds() == before


async def test_a_short_non_audio_file_spooled_to_disk_is_closed_when_refused() -> None:
    app = make_app(spool_threshold_bytes=0)
    before = open_fds()
    for _ in range(3):
        r = await post(app, data={"model": "whisper-1"}, files={"file": ("a.txt", b"hello text", "text/plain")})
        assert r.status_code == 400
    assert open_fds() == before


@pytest.mark.parametrize("size", [1000, 20_000], ids=["in-memory", "spooled"])
async def test_file_parts_are_hashed_as_they_arrive_only_when_the_header_asks(size: int) -> None:
    import xxhash

    app = make_app(hasher=xxhash.xxh3_128, hash_header=b"x-bf-cache-key")
    SEEN.clear()
    audio = WAV[:44] + os.urandom(size)
    async with client(app) as c:
        for headers in ({}, {"x-bf-cache-key": "p"}):
            sent = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", **headers}
            response = await c.post(URL, content=encode({"model": "whisper-1"}, {"file": ("a.wav", audio)}),
                                    headers=sent)
            assert response.status_code == 200, response.text
    without, with_header = (entry["form"] for entry in SEEN)
    assert without.digests == {}
    assert with_header.digests == {"file": xxhash.xxh3_128(audio).digest()}
