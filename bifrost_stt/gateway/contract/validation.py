"""Response validation that is cheap enough to leave on in production.

Connexion's stock response validators compile a draft-4 validator per response (about 140 ms for a large
verbose_json), ``json.loads`` text/plain bodies (a transcript "42" fails) and skip SSE. These compile each
schema once with jsonschema-rs, treat text/plain as the string it is, and check every SSE event as it
passes without holding the stream back (``SSEResponseValidator``).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, ClassVar

import jsonschema_rs
import orjson
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import NonConformingResponseBody
from connexion.validators import VALIDATOR_MAP, AbstractResponseBodyValidator
from starlette.types import Send

from bifrost_stt.gateway.contract.schema_cache import SchemaCache

log = logging.getLogger("bifrost_stt.validation")



def compiled_validators() -> SchemaCache[Any]:
    """Compiled jsonschema-rs validators by schema identity, for one app."""
    return SchemaCache(jsonschema_rs.Draft4Validator)


def _first_error(validator: Any, instance: Any) -> str | None:
    for error in validator.iter_errors(instance):
        path = "/".join(str(p) for p in error.instance_path)
        return f"{error.message} (at /{path})" if path else error.message
    return None


class JSONResponseValidator(AbstractResponseBodyValidator):
    schemas: ClassVar[SchemaCache[Any]]  # bound per app by ``response_validators``
    def _parse(self, stream: Any) -> Any:
        body = b"".join(stream)
        if not self._schema:
            return None  # an undeclared status (a client that went away): nothing to check
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise NonConformingResponseBody(detail=f"response body is not JSON: {exc}") from exc

    def _validate(self, body: Any) -> None:
        if not self._schema:
            return None
        problem = _first_error(self.schemas.get(self._schema), body)
        if problem:
            log.error("response does not conform to the contract: %s", problem)
            raise NonConformingResponseBody(detail=problem)
        return None


class TextResponseValidator(AbstractResponseBodyValidator):
    def _parse(self, stream: Any) -> Any:
        body = b"".join(stream)
        try:
            return body.decode(self._encoding or "utf-8")
        except UnicodeDecodeError as exc:
            raise NonConformingResponseBody(detail="text/plain response is not valid text") from exc

    def _validate(self, body: Any) -> None:
        if self._schema and self._schema.get("type") not in (None, "string"):
            raise NonConformingResponseBody(detail="text/plain response for a non-string schema")
        return None


class EventSplitter:
    """Cuts a byte stream into SSE events (``\n\n``-terminated) however the chunks fall."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending.extend(chunk)
        events: list[bytes] = []
        while (cut := self._pending.find(b"\n\n")) >= 0:
            events.append(bytes(self._pending[:cut]))
            del self._pending[: cut + 2]
        return events


def event_data(event: bytes) -> bytes:
    """The ``data`` of one event, multi-line data joined by newlines as the SSE standard says."""
    return b"\n".join(
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    )


def _operation_error_schema() -> dict[str, Any] | None:
    """The operation's JSON error schema (BifrostError), for the one error event a failed stream sends."""
    from connexion.context import operation  # bound by Connexion's ContextMiddleware while serving

    try:
        schema: dict[str, Any] | None = operation.response_schema("500", "application/json") or None
        return schema
    except (LookupError, RuntimeError):  # outside a request (unit tests of the validator)
        return None


class SSEResponseValidator(AbstractResponseBodyValidator):
    """Checks each ``data:`` event against the contract while forwarding every chunk at once.

    Connexion's stock validators hold the whole body back until the last message, which would turn a
    stream into one late answer; this one keeps only a partial event between chunks. Deltas and the done
    event are checked against the operation's event schema (TranscriptionStreamResponse); the error event
    a failed stream ends with (a BifrostError: top-level ``error``) against the operation's JSON error
    schema; ``[DONE]`` is the end marker. The headers are already out, so a breaking event cannot become
    a 500: it is logged and forwarded, unless the validator is ``strict`` (tests), which raises
    NonConformingResponseBody before the event leaves, breaking the stream so no test can miss it.
    """

    strict: ClassVar[bool] = False
    schemas: ClassVar[SchemaCache[Any]]  # bound per app by ``response_validators``

    def wrap_send(self, send: Send) -> Send:
        events = self.schemas.get(self._schema) if self._schema else None
        error_schema = _operation_error_schema()
        errors = self.schemas.get(error_schema) if error_schema else None
        splitter = EventSplitter()

        async def send_(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                for event in splitter.feed(message.get("body", b"")):
                    self._check(events, errors, event)
            await send(message)

        return send_

    def _check(self, events: Any, errors: Any, event: bytes) -> None:
        data = event_data(event)
        if data == b"[DONE]" or not any(line.startswith(b"data:") for line in event.split(b"\n")):
            return  # the end marker, a comment or a keep-alive
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail(f"SSE event is not JSON: {data[:200]!r}")
            return
        is_error = isinstance(payload, dict) and "error" in payload
        validator = errors if is_error else events
        if validator is None:
            return
        problem = _first_error(validator, payload)
        if problem:
            self._fail(f"SSE {'error ' if is_error else ''}event does not conform to the contract: {problem}")

    def _fail(self, problem: str) -> None:
        log.error("%s", problem)
        if self.strict:
            raise NonConformingResponseBody(detail=problem)


class StrictSSEResponseValidator(SSEResponseValidator):
    """Raises on the first event that breaks the contract (see ``validator_map(strict_sse=True)``)."""

    strict = True


def response_validators(*, strict_sse: bool = False) -> MediaTypeDict:
    """Our response validators, bound to one compiled-schema cache (Connexion instantiates them itself)."""
    schemas = compiled_validators()
    sse = StrictSSEResponseValidator if strict_sse else SSEResponseValidator
    return MediaTypeDict(
        {
            "*/*json": type("BoundJSONResponseValidator", (JSONResponseValidator,), {"schemas": schemas}),
            "text/plain": TextResponseValidator,
            "text/event-stream": type("BoundSSEResponseValidator", (sse,), {"schemas": schemas}),
        }
    )


def validator_map(body: MediaTypeDict | None = None, *, strict_sse: bool = False) -> dict[str, Any]:
    """Connexion's map with our response validators (and, when given, our body validators).

    ``strict_sse`` makes a stream event that breaks the contract break the stream instead of only
    being logged: for tests and staging, where a broken contract must not pass unnoticed.
    """
    merged = dict(VALIDATOR_MAP)
    if body is not None:
        merged["body"] = body
    merged["response"] = response_validators(strict_sse=strict_sse)
    return merged
