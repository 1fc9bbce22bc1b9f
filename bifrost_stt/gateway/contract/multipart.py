"""One-pass ``multipart/form-data`` request-body validator for Connexion.

Why: Connexion's stock form validator keeps every raw body message, parses the form twice (once to
validate, once for the handler), compiles the JSON schema on every request, joins repeated fields with
commas, lets the SDK's ``name[]`` fields bypass validation, and answers malformed multipart with 500
(BEHAVIOUR.md §6, §8). This validator reads the body once as it arrives, spools large files to an unlinked
temporary file, validates the coerced fields with a ``jsonschema_rs`` validator compiled once per schema,
and hands the result to the handler through the ASGI scope::

    client --multipart--> MultipartFormValidator.wrap_receive --(empty body, scope[extensions])--> handler
                             parse (python_multipart callbacks)        parsed_form(connexion.context.scope)
                             spool files, sniff, coerce, validate

Wiring: ``connexion.AsyncApp(..., validator_map=make_validator_map(limits))``. Every error raised here is a
``bifrost_stt.kernel.errors.GatewayError`` so the one error handler renders it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.validators import VALIDATOR_MAP, AbstractRequestBodyValidator
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope

from bifrost_stt.kernel import counters, sniff
from bifrost_stt.kernel.canonical import AudioSource, BytesAudio, FileAudio
from bifrost_stt.kernel.errors import ClientError, GatewayError, Overloaded, PayloadTooLarge, UnsupportedMediaType
from bifrost_stt.gateway.contract.form_schema import FILE_PLACEHOLDER, Plan, coerce, plan_cache, schema_error
from bifrost_stt.gateway.contract.schema_cache import SchemaCache

log = logging.getLogger("bifrost_stt.upload")

SCOPE_KEY = "bifrost.form"
"""Key under ``scope["extensions"]`` where the validator leaves the ``ParsedForm``."""

PARSED_CONTENT_TYPE = b"application/x-bifrost-parsed-form"
"""What the downstream scope says instead of multipart: Starlette's ``Request.form()`` ignores it."""

HEAD_BYTES = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """Bounds on one upload. ``max_text_part_bytes`` and ``max_parts`` guard against form bombs."""

    max_body_bytes: int
    spool_threshold_bytes: int
    reject_non_audio: bool
    max_text_part_bytes: int = 1 << 20
    max_parts: int = 1000
    spool_dir: str | None = None  # None: the platform's temporary directory
    # File parts are hashed as they arrive (no second read) with a new ``hasher()`` (hashlib-like: update,
    # digest) when the request has ``hash_header``, or always when ``hash_header`` is None. The cache's key.
    hasher: Callable[[], Any] | None = None
    hash_header: bytes | None = None


@dataclass(eq=False)
class ParsedForm:
    """The validated form. ``close()`` releases the files; it also runs when the form is garbage collected.

    Close files through ``close()`` only: closing one ``FileAudio`` twice could close a reused descriptor.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    extra: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, AudioSource] = field(default_factory=dict)
    digests: dict[str, bytes] = field(default_factory=dict)  # file part -> digest, when hashed (UploadLimits)

    def __post_init__(self) -> None:
        self._finalizer = weakref.finalize(self, _close_all, self.files)

    def close(self) -> None:
        self._finalizer()


def _close_all(files: dict[str, AudioSource]) -> None:
    """Close every file and let go of them: uvicorn keeps a keep-alive connection's last scope (and the
    form in it) until the connection's next request, which must not keep an in-memory upload alive."""
    for source in files.values():
        source.close()
    files.clear()


def parsed_form(scope: Scope) -> ParsedForm | None:
    """The form the validator stored for this request (``connexion.context.scope`` or ``request.scope``)."""
    form = scope.get("extensions", {}).get(SCOPE_KEY)
    return form if isinstance(form, ParsedForm) else None


def make_validator_map(limits: UploadLimits) -> dict[str, Any]:
    """Connexion's default validator map with ``multipart/form-data`` bodies handled by this module.

    Connexion instantiates validators itself with fixed keyword arguments, so the limits (and the compiled
    schema cache, shared by every request of the app) are bound on a subclass made here.
    """
    bound = type(
        "BoundMultipartFormValidator",
        (MultipartFormValidator,),
        {"limits": limits, "plans": plan_cache()},
    )
    validator_map = dict(VALIDATOR_MAP)
    body = MediaTypeDict(VALIDATOR_MAP["body"])
    body["multipart/form-data"] = bound
    validator_map["body"] = body
    return validator_map


# --- the streaming reader ------------------------------------------------------------------------------


class _Spool:
    """A file part being received: in memory up to the threshold, then in an unlinked temporary file.

    In memory it is a list of the received pieces joined once at the end: a growing ``bytearray`` copied
    itself on growth and once more into ``bytes``, which cost CPU and fragmented the heap under load.
    """

    def __init__(self, threshold: int, spool_dir: str | None, hasher: Any = None) -> None:
        self._threshold = threshold
        self._dir = spool_dir
        self.hasher = hasher
        self._pieces: list[bytes] = []
        self.fd = -1
        self.size = 0
        self.head = b""

    def write(self, chunk: memoryview) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += bytes(chunk[: HEAD_BYTES - len(self.head)])
        if self.hasher is not None:
            self.hasher.update(chunk)
        if self.fd < 0 and self.size + len(chunk) > self._threshold:
            fd, path = tempfile.mkstemp(prefix="bifrost-upload-", dir=self._dir)
            os.unlink(path)  # nothing to clean up on disk, whatever happens next
            self.fd = fd
            for piece in self._pieces:
                _write_all(fd, memoryview(piece))
            self._pieces = []
        if self.fd >= 0:
            _write_all(self.fd, chunk)
        else:
            self._pieces.append(bytes(chunk))
        self.size += len(chunk)

    def finish(self, filename: str, content_type: str, fmt: str | None) -> AudioSource:
        if self.fd < 0:
            data, self._pieces = b"".join(self._pieces), []  # a single piece is taken as is, not copied
            return BytesAudio(data, filename, content_type, fmt)
        fd, self.fd = self.fd, -1
        return FileAudio(fd=fd, size=self.size, filename=filename, content_type=content_type,
                         format=fmt, head=self.head)

    def discard(self) -> None:
        self._pieces = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def check_room(declared: int, limits: UploadLimits) -> None:
    """Refuse, before reading it, a body that would not fit in the spool directory's free space."""
    if declared <= limits.spool_threshold_bytes:
        return  # kept in memory
    where = limits.spool_dir or tempfile.gettempdir()
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        raise spool_full(limits.spool_dir, exc) from None
    if declared > free:
        log.error("upload refused: %d bytes would not fit in the spool directory %s (%d free)", declared, where, free)
        counters.count("spool_full")
        raise Overloaded(
            f"the upload ({declared} bytes) would not fit in the spool directory {where} ({free} bytes free); "
            "retry later", code="spool_full", headers={"Retry-After": "30"},
        )


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


@dataclass(slots=True)
class _Part:
    name: str  # as sent
    filename: str | None = None  # None: a text part
    content_type: str = "application/octet-stream"
    text: bytearray | None = None
    spool: _Spool | None = None  # None for a text part, or a file part nobody asked for (discarded)


class _FormReader:
    """Feeds body chunks to python_multipart's ``MultipartParser`` and builds the ``ParsedForm``.

    The parser's callbacks run synchronously inside ``feed``; a ``GatewayError`` raised in one propagates
    out of ``feed`` unchanged. ``abort`` must be called on any failure to release spooled files.
    """

    def __init__(self, boundary: bytes, plan: Plan, limits: UploadLimits, *, hash_files: bool = False) -> None:
        self._plan = plan
        self._limits = limits
        self._hasher = limits.hasher if hash_files else None
        self.form = ParsedForm()
        self._texts: dict[str, list[str]] = {}
        self._parts = 0
        self._part: _Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        try:
            self._parser = MultipartParser(boundary, callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            })
        except FormParserError as exc:
            raise ClientError(f"invalid multipart boundary: {exc}") from exc

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise ClientError(f"malformed multipart body: {exc}") from exc

    def finish(self, received: int) -> ParsedForm:
        """Check the body ended properly, coerce the text fields and validate them with the files.

        No body at all is an empty form, so the schema names what is missing ("model is required").
        """
        if received and self._parser.state != MultipartState.END:
            raise ClientError("malformed multipart body: it ends before the closing boundary")
        fields = self.form.fields
        for name, values in self._texts.items():
            fields[name] = coerce(name, values, self._plan.props[name])
        instance = dict(fields)
        instance.update({name: FILE_PLACEHOLDER for name in self.form.files})
        error = next(iter(self._plan.validator.iter_errors(instance)), None)
        if error is not None:
            raise schema_error(error)
        return self.form

    def release(self) -> None:
        """Drop the parser once the body is read.

        Its callbacks are this reader's bound methods: reader -> parser -> callbacks -> reader is a reference
        cycle, and the reader holds the form. Left to the cyclic garbage collector, finished requests (their
        in-memory uploads included) piled up in the old generation: under 16 concurrent 1 MB uploads the
        gateway reached 200-280 MB and stayed there; without the cycle it stays under 100 MB.
        """
        self._parser = None  # type: ignore[assignment]

    def abort(self) -> None:
        if self._part is not None and self._part.spool is not None:
            self._part.spool.discard()
        self.form.close()

    # python_multipart callbacks

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._limits.max_parts:
            raise ClientError(f"too many form parts (more than {self._limits.max_parts})")
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).strip().lower()] = bytes(self._header_value).strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise ClientError("malformed multipart body: a part has no form-data name")
        name = _decode(options[b"name"])
        if _CONTROL.search(name):
            # Unknown fields are passed on to the provider: a NUL or newline in a name must not travel there.
            raise ClientError(f"malformed multipart body: the form field name {name!r} holds control characters")
        raw_filename = options.get(b"filename")
        part = _Part(name)
        prop = self._plan.props.get(_normalise(name))
        if raw_filename is None:
            if prop is not None and prop.kind == "binary":
                raise ClientError(f"{_normalise(name)} must be sent as a file upload", param=_normalise(name))
            part.text = bytearray()
        else:
            part.filename = _decode(raw_filename).replace("\\", "/").rsplit("/", 1)[-1]
            ctype = self._headers.get(b"content-type")
            part.content_type = ctype.decode("latin-1") if ctype else "application/octet-stream"
            if prop is not None:
                field_name = _normalise(name)
                if prop.kind != "binary":
                    raise ClientError(f"{field_name} must be a text field, not a file upload", param=field_name)
                if field_name in self.form.files:
                    raise ClientError(f"{field_name} must be sent only once", param=field_name)
                part.name = field_name
                part.spool = _Spool(self._limits.spool_threshold_bytes, self._limits.spool_dir,
                                    self._hasher() if self._hasher is not None else None)
        self._part = part

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        if part.text is not None:
            if len(part.text) + end - start > self._limits.max_text_part_bytes:
                raise PayloadTooLarge(
                    f"form field {part.name} is larger than {self._limits.max_text_part_bytes} bytes",
                    param=part.name,
                )
            part.text += memoryview(data)[start:end]
        elif part.spool is not None:
            spool = part.spool
            had_head = len(spool.head) >= HEAD_BYTES
            spool.write(memoryview(data)[start:end])
            if not had_head and len(spool.head) >= HEAD_BYTES:
                self._check_audio(part.name, spool.head)  # refuse early, before the rest arrives

    def _on_part_end(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        if part.text is not None:
            try:
                value = part.text.decode("utf-8")
            except UnicodeDecodeError:
                raise ClientError(f"form field {part.name} is not valid UTF-8", param=part.name) from None
            field_name = _normalise(part.name)
            if field_name in self._plan.props:
                self._texts.setdefault(field_name, []).append(value)
            else:
                self.form.extra.append((part.name, value))
        elif part.spool is not None:
            self._finish_file(part, part.spool)

    def _finish_file(self, part: _Part, spool: _Spool) -> None:
        if spool.size == 0:
            spool.discard()
            if part.filename == "":  # a browser's empty file input: as if the field were absent
                return
            raise ClientError(f"{part.name} is empty", param=part.name)
        if len(spool.head) < HEAD_BYTES:
            try:
                self._check_audio(part.name, spool.head)
            except ClientError:
                spool.discard()  # no longer reachable through self._part: abort() would miss it
                raise
        fmt = sniff.sniff(spool.head)
        if spool.hasher is not None:
            self.form.digests[part.name] = spool.hasher.digest()
        self.form.files[part.name] = spool.finish(part.filename or "", part.content_type, fmt)

    def _check_audio(self, name: str, head: bytes) -> None:
        if self._limits.reject_non_audio and sniff.is_clearly_not_audio(head):
            raise ClientError(
                f"{name} does not look like audio; supported formats: {', '.join(sniff.SUPPORTED)}",
                param=name,
            )


def _normalise(name: str) -> str:
    """``timestamp_granularities[]`` → ``timestamp_granularities`` (the OpenAI SDK's array naming)."""
    return name[:-2] if name.endswith("[]") else name


def _decode(raw: bytes) -> str:
    """Header parameters arrive as raw bytes; clients send UTF-8, a few still send Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --- the Connexion validator ---------------------------------------------------------------------------


class MultipartFormValidator(AbstractRequestBodyValidator):
    """Connexion request-body validator for ``multipart/form-data``; use ``make_validator_map``.

    Connexion creates one instance per request with fixed keyword arguments; ``limits`` and ``plans``
    are class attributes bound by ``make_validator_map``.
    """

    limits: UploadLimits
    plans: SchemaCache[Plan]

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        """Read, parse and validate the whole body, then pass on an empty body and the parsed form."""
        limits = self.limits
        headers = Headers(scope=scope)
        if _declared_length(headers.get("content-length")) > limits.max_body_bytes:
            raise _too_large(limits.max_body_bytes)  # before reading anything
        check_room(_declared_length(headers.get("content-length")), limits)
        hash_files = limits.hasher is not None and (
            limits.hash_header is None or any(name == limits.hash_header for name, _ in scope["headers"])
        )
        reader = _FormReader(_boundary(headers.get("content-type")), self.plans.get(self._schema), limits,
                             hash_files=hash_files)
        try:
            received = 0
            async for chunk in _body(receive):
                received += len(chunk)
                if received > limits.max_body_bytes:
                    raise _too_large(limits.max_body_bytes)
                reader.feed(chunk)
            form = reader.finish(received) if received or self._required else reader.form
            if self._strict_validation and form.extra:
                names = ", ".join(sorted({name for name, _ in form.extra}))
                raise ClientError(f"unknown form fields: {names}", param=form.extra[0][0])
        except BaseException as exc:
            reader.abort()  # closes the (already unlinked) spool file: a full disk gets its space back
            if isinstance(exc, GatewayError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
                raise spool_full(limits.spool_dir, exc) from None
            raise GatewayError(f"failed to read the upload: {type(exc).__name__}") from exc
        finally:
            reader.release()
        scope.setdefault("extensions", {})[SCOPE_KEY] = form
        return _empty_body(receive), _without_body(scope)


_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def spool_full(spool_dir: str | None, exc: OSError) -> Overloaded:
    """A 503 naming the spool directory, logged and counted (a full disk is the operator's to fix)."""
    where = spool_dir or tempfile.gettempdir()
    log.error("upload refused: the spool directory %s is full (%s)", where, exc.strerror or exc)
    counters.count("spool_full")
    return Overloaded(
        f"the gateway has no room to store this upload: the spool directory {where} is full; retry later",
        code="spool_full", headers={"Retry-After": "30"},
    )


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body chunks as they arrive; none are kept."""
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientError("the client disconnected before the upload was complete")
        more_body = message.get("more_body", False)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk


def _declared_length(value: str | None) -> int:
    """The Content-Length, or 0 when absent (chunked transfer: counted as it arrives)."""
    try:
        return int(value or 0)
    except ValueError:
        raise ClientError("invalid Content-Length header") from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


def _boundary(content_type: str | None) -> bytes:
    if not content_type:
        # Connexion hands a body without Content-Type to the operation's only media type: say what to send.
        raise UnsupportedMediaType("the request body must be multipart/form-data (no Content-Type was sent)")
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ClientError("multipart/form-data request without a boundary in its Content-Type")
    return boundary


def _empty_body(receive: Receive) -> Receive:
    """A receive channel whose body is already over; later calls (disconnect detection) go to the client."""
    sent = False

    async def receive_() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return receive_


def _without_body(scope: Scope) -> Scope:
    """A copy of ``scope`` announcing an empty, non-form body, so ``Request.form()`` reads nothing."""
    dropped = (b"content-type", b"content-length", b"transfer-encoding")
    new_scope = dict(scope)
    new_scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in dropped]
    new_scope["headers"] += [(b"content-type", PARSED_CONTENT_TYPE), (b"content-length", b"0")]
    return new_scope
