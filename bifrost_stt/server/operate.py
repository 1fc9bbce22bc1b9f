"""The operating middleware: admin access, the request record, HTTP metrics, in one pass per request.

It sits just inside the outermost error guard, so it sees every answer (validation errors, Bifrost errors
rendered by the exception layer, streams until their last byte):

    access      a refused credential is a 401 Bifrost envelope with WWW-Authenticate, before anything else
    record      inference requests get a RequestRecord bound to their context (routing, handlers, governance
                and the cache fill it); when the last byte is sent it is finished and handed to the gateway
                (metrics, request-log store, request line), unless the work outlives the response (async
                jobs, ``record.detached``), whose runner finishes it
    http        http_requests_total and friends, labelled with the route template, never the raw path
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bifrost_stt.gateway.access import REALM
from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.gateway.observe import metrics
from bifrost_stt.kernel.errors import AuthenticationError, MethodNotAllowed, envelope
from bifrost_stt.kernel.record import RequestRecord, bind

# Operations that run a transcription: each gets a record. The job poll is an inference route (auth) only.
RECORDED = frozenset({
    "createTranscription", "createAsyncTranscription", "openaiCreateTranscription",
    "openaiCreateTranscriptionAlias", "azureCreateTranscription", "litellmOpenAITranscriptions",
    "langchainOpenAITranscriptions", "pydanticaiOpenAITranscriptions",
})
INFERENCE = RECORDED | {"getAsyncTranscriptionJob"}
UNMATCHED = "unmatched"  # the path label of a request no route template matches (bounded cardinality)
MAX_ERROR_BODY = 64 * 1024


class RouteTable:
    """(method, raw path) -> (route template, operationId), from the served contract."""

    def __init__(self, operations: list[tuple[str, str, str]]) -> None:
        self._static: dict[str, dict[str, str]] = {}
        self._dynamic: list[tuple[re.Pattern[str], str, dict[str, str]]] = []
        templates: dict[str, dict[str, str]] = {}
        for method, path, operation_id in operations:
            templates.setdefault(path, {})[method.upper()] = operation_id
        for path, methods in templates.items():
            if "{" not in path:
                self._static[path] = methods
            else:
                pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
                self._dynamic.append((re.compile(f"^{pattern}$"), path, methods))
        # static routes win over templates (/api/logs/stats is not /api/logs/{id})

    def match(self, method: str, path: str) -> tuple[str, str | None]:
        template, methods = self.methods(path)
        return template, methods.get("GET" if method == "HEAD" else method)

    def methods(self, path: str) -> tuple[str, dict[str, str]]:
        """The route template ``path`` falls under and its method -> operationId map."""
        methods = self._static.get(path)
        if methods is not None:
            return path, methods
        for pattern, template, methods in self._dynamic:
            if pattern.match(path):
                return template, methods
        return UNMATCHED, {}


def allowed(methods: dict[str, str]) -> str:
    names = set(methods) | ({"HEAD"} if "GET" in methods else set())
    return ", ".join(sorted(names))


class Operate:
    def __init__(self, app: ASGIApp, *, gateway: Gateway, routes: RouteTable) -> None:
        self.app = app
        self.gateway = gateway
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        template, methods = self.routes.methods(path)
        operation = methods.get("GET" if method == "HEAD" else method)
        if operation is None and methods:
            # Several operations on one path (GET and DELETE /api/logs): the router would name only the
            # first one's methods in Allow; the route table knows them all.
            await _method_not_allowed(send, allowed(methods))
            metrics.http(template, method, 405, time.perf_counter() - started, None, 0)
            return
        access = self.gateway.access
        if access.active:
            headers = _headers(scope)
            why = access.refusal(path, operation in INFERENCE, headers)
            if why is not None:
                await _unauthorized(send, why, inference=operation in INFERENCE)
                metrics.http(template, method, 401, time.perf_counter() - started, None, 0)
                return
        record = (RequestRecord(operation=operation, route=template)
                  if operation is not None and operation in RECORDED else None)
        state: dict[str, Any] = {"status": 0, "size": 0, "error": None}

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["status"] = message["status"]
                if record is not None and message["status"] >= 400:
                    state["error"] = []
            elif kind == "http.response.body":
                body = message.get("body", b"")
                state["size"] += len(body)
                chunks = state["error"]
                if chunks is not None and state["size"] <= MAX_ERROR_BODY:
                    chunks.append(body)
            await send(message)

        if record is None:
            try:
                await self.app(scope, receive, sending)
            finally:
                metrics.http(template, method, state["status"] or 500, time.perf_counter() - started,
                             _length(scope), state["size"])
            return
        metrics.active(1)
        try:
            with bind(record):
                await self.app(scope, receive, sending)
        except BaseException as exc:  # escaped every handler: the outer guard answers 500, or we were cancelled
            if not state["status"]:
                state["status"] = 500 if isinstance(exc, Exception) else 499
            raise
        finally:
            metrics.active(-1)
            status = state["status"] or 499  # nothing was sent: the client went away (or we were cancelled)
            metrics.http(template, method, status, time.perf_counter() - started, _length(scope), state["size"])
            if not (record.detached and status < 400):
                error = record.error or _envelope(state["error"])
                # a stream that failed after its 200 went out: the error event's status is the outcome
                code = error.get("status_code") if error else None
                record.finish(code if isinstance(code, int) else status, error)
                self.gateway.finish(record, method)


def _headers(scope: Scope) -> Mapping[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _envelope(chunks: list[bytes] | None) -> dict[str, Any] | None:
    """The Bifrost error body an error response carried (already scrubbed of keys where it was made)."""
    if not chunks:
        return None
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


async def _method_not_allowed(send: Send, allow: str) -> None:
    err = MethodNotAllowed(f"method not allowed; this path accepts {allow}", headers={"Allow": allow})
    body = orjson.dumps(envelope(err, request_type=None))
    await send({"type": "http.response.start", "status": 405, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"allow", allow.encode()),
    ]})
    await send({"type": "http.response.body", "body": body})


async def _unauthorized(send: Send, why: str, *, inference: bool) -> None:
    err = AuthenticationError(why, code="unauthorized")
    body = orjson.dumps(envelope(err, request_type="transcription" if inference else None))
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", REALM.encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
