"""Response validation that is cheap enough to leave on in production.

Connexion's stock response validators compile a draft-4 validator per response (about 140 ms for a large
verbose_json), ``json.loads`` text/plain bodies (a transcript "42" fails) and skip SSE. These compile each
schema once with jsonschema-rs, treat text/plain as the string it is, and check every SSE event as it
passes without holding the stream back.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import jsonschema_rs
import orjson
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import NonConformingResponseBody
from connexion.validators import VALIDATOR_MAP, AbstractResponseBodyValidator
from starlette.types import Send

log = logging.getLogger("bifrost_stt.validation")

_compiled: dict[int, tuple[Any, Any]] = {}


def compiled(schema: dict[str, Any]) -> Any:
    """One compiled validator per schema object for the life of the process."""
    hit = _compiled.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    validator = jsonschema_rs.Draft4Validator(schema)
    _compiled[id(schema)] = (schema, validator)
    return validator


def _first_error(validator: Any, instance: Any) -> str | None:
    for error in validator.iter_errors(instance):
        path = "/".join(str(p) for p in error.instance_path)
        return f"{error.message} (at /{path})" if path else error.message
    return None


class JSONResponseValidator(AbstractResponseBodyValidator):
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
        problem = _first_error(compiled(self._schema), body)
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


class SSEResponseValidator(AbstractResponseBodyValidator):
    """Checks each ``data:`` event against the event schema while forwarding it at once."""

    def wrap_send(self, send: Send) -> Send:
        validator = compiled(self._schema) if self._schema else None
        pending = bytearray()

        async def send_(message: MutableMapping[str, Any]) -> None:
            if validator is not None and message["type"] == "http.response.body":
                pending.extend(message.get("body", b""))
                while (cut := pending.find(b"\n\n")) >= 0:
                    event = bytes(pending[:cut])
                    del pending[: cut + 2]
                    self._check(validator, event)
            await send(message)

        return send_

    @staticmethod
    def _check(validator: Any, event: bytes) -> None:
        data = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.error("SSE event is not JSON: %r", data[:200])
            return
        if isinstance(payload, dict) and "error" in payload and "type" not in payload:
            return  # a mid-stream BifrostError event, checked where it is built
        problem = _first_error(validator, payload)
        if problem:
            log.error("SSE event does not conform to the contract: %s", problem)


def response_validators() -> MediaTypeDict:
    return MediaTypeDict(
        {
            "*/*json": JSONResponseValidator,
            "text/plain": TextResponseValidator,
            "text/event-stream": SSEResponseValidator,
        }
    )


def validator_map(body: MediaTypeDict | None = None) -> dict[str, Any]:
    """Connexion's map with our response validators (and, when given, our body validators)."""
    merged = dict(VALIDATOR_MAP)
    if body is not None:
        merged["body"] = body
    merged["response"] = response_validators()
    return merged
