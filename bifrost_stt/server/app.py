"""The app factory: contract + config -> a Connexion AsyncApp whose every operationId has a handler.

    create_app(config)                         app_factory()  (uvicorn --factory; reads the environment)
      ├── spec.load_contract()                 the 3.1 document + our overlay: the served contract
      ├── spec.to_connexion(contract)          what Connexion 3.3 can validate
      ├── handlers.operations(gateway)                     operationId -> function; a missing one stops the start
      ├── multipart.make_validator_map(...)    one-pass multipart validation with size limits
      ├── validation.validator_map(...)        compiled response validators (JSON, text, SSE)
      ├── middleware_stack()                   Connexion's stack minus what costs without serving us
      └── error handlers                       every error -> the Bifrost envelope
"""

from __future__ import annotations

import functools
import logging
import os
import re
from contextvars import ContextVar
from pathlib import Path
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.context import receive as context_receive
from connexion.context import scope as context_scope
from connexion.decorators import StarletteDecorator
from connexion.exceptions import NonConformingResponse, ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import ConnexionMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.exceptions import BadRequestProblem
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response as StarletteResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bifrost_stt import handlers
from bifrost_stt.gateway.cache import key as cache_key
from bifrost_stt.gateway.contract import loading as spec
from bifrost_stt.kernel.errors import (
    ClientError,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
    envelope,
)
from bifrost_stt.gateway.contract.multipart import UploadLimits, make_validator_map
from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.kernel.settings import GatewayConfig
from bifrost_stt.server.memory import TrimWhenIdle
from bifrost_stt.gateway.contract.validation import validator_map
from bifrost_stt.server.operate import Operate, RouteTable

log = logging.getLogger("bifrost_stt")
DOCS_PATH = "/docs"


class ContractEndpoint:
    """Serves the merged 3.1 contract at /openapi.json from bytes computed once."""

    def __init__(self, app: ASGIApp, *, body: bytes) -> None:
        self.app = app
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/openapi.json" and scope["method"] in ("GET", "HEAD"):
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())],
            })
            await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})
            return
        await self.app(scope, receive, send)


class DocsOnlySwaggerUI(SwaggerUIMiddleware):
    """Swagger UI entered only for its own paths.

    The stock middleware copies the scope, sets a context variable and runs a Starlette router over
    every request before handing it on; only ``/docs`` can match it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(DOCS_PATH):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class BifrostCORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the Bifrost envelope like every other error."""

    def preflight_response(self, request_headers: Any) -> StarletteResponse:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        err = ClientError(bytes(response.body).decode("utf-8", "replace"), code="cors_refused")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return StarletteResponse(orjson.dumps(envelope(err)), status_code=response.status_code,
                                 media_type="application/json", headers=headers)


ROUTE_HEADERS = ("x-bifrost-provider", "x-bifrost-original-model", "x-bifrost-resolved-model",
                 "x-bifrost-fallback-index", "location", "retry-after")


def middleware_stack(contract_body: bytes, allowed_origins: tuple[str, ...] = (), operate: Any = None) -> list[Any]:
    """Connexion's default middlewares, with ours inserted, minus what costs without serving us.

    Dropped: ``SecurityMiddleware``. The gateway enforces no authentication (the overlay gives every
    operation an anonymous ``{}`` alternative, so the middleware only ever called a pass-through) and
    provider keys are checked upstream. Swagger UI is entered only for ``/docs``. With
    ``client.allowed_origins``, CORS wraps everything but the outermost error guard, so error envelopes
    carry CORS headers too and a browser can read them.
    """
    stack: list[Any] = [
        DocsOnlySwaggerUI if middleware is SwaggerUIMiddleware else middleware
        for middleware in ConnexionMiddleware.default_middlewares
        if middleware is not SecurityMiddleware
    ]
    # The outermost guard: Connexion's default handler there is an async wrapper Starlette calls without
    # awaiting, so an exception escaping every other layer got no answer of ours. Ours renders the envelope.
    stack[0] = functools.partial(ServerErrorMiddleware, handler=render_error)
    stack.insert(2, functools.partial(ContractEndpoint, body=contract_body))
    stack.insert(3, LowerCaseMediaType)
    if operate is not None:  # access, request records, HTTP metrics: inside the guard, outside everything else
        stack.insert(1, operate)
    if allowed_origins:
        stack.insert(1, functools.partial(
            BifrostCORS, allow_origins=list(allowed_origins), allow_methods=["GET", "POST"],
            allow_headers=["*"], expose_headers=list(ROUTE_HEADERS),
        ))
    stack.insert(1, TrimWhenIdle)  # memory back to the OS once idle (bifrost_stt.server.memory)
    return stack


class _DecorateOnce(StarletteDecorator):
    """Connexion's Starlette decorator, with the handler decorated once instead of on every request.

    The stock ``ASGIDecorator`` rebuilds the parameter and response decorators per call (an
    ``inspect.signature`` and several ``functools.wraps``); nothing in them depends on the request,
    which the decorators read from Connexion's context variables when they run.
    """

    def __call__(self, function: Any) -> Any:
        decorated = self.decorate(function)

        @functools.wraps(function)
        async def wrapper(*_args: Any, **_kwargs: Any) -> Any:
            request = self.framework.get_request(
                uri_parser=self.uri_parser, scope=context_scope, receive=context_receive
            )
            return await decorated(request)

        return wrapper


class _DecoratedOnceOperation(AsyncOperation):
    @functools.cached_property
    def fn(self) -> Any:  # a cached property where Connexion has a property
        return _DecorateOnce(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class _DecoratedOnceApi(AsyncApi):
    def make_operation(self, operation: Any) -> AsyncOperation:
        return _DecoratedOnceOperation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


class LowerCaseMediaType:
    """Lower-cases the media type of the request's Content-Type, keeping its parameters as sent.

    Media types are case-insensitive (RFC 9110 §8.3.1). Connexion checks ``Multipart/Form-Data`` against
    the operation case-insensitively, but looks up the body schema and the body validator as sent, finds
    neither, and the handler got no parsed form (a 400 "file is required" for a correct upload). The
    boundary is case-sensitive, so only the part before the first ``;`` changes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            for index, (name, value) in enumerate(headers):
                if name.lower() == b"content-type":
                    media, sep, params = value.partition(b";")
                    if media != media.lower() or media != media.strip():
                        headers = list(headers)
                        headers[index] = (name, media.strip().lower() + sep + params)
                        scope = {**scope, "headers": headers}
                    break
        await self.app(scope, receive, send)


class Utf8JSONBodyValidator(JSONRequestBodyValidator):
    """Connexion's JSON body validator decodes the body before parsing it: bytes that are not UTF-8 raised a
    UnicodeDecodeError (a 500) instead of the 400 any other unreadable JSON gets."""

    async def _parse(self, stream: Any, scope: Scope) -> Any:
        try:
            return await super()._parse(stream, scope)
        except UnicodeDecodeError:
            raise BadRequestProblem(detail="the request body is not UTF-8 JSON") from None


class HeaderCoercingParameterValidator(ParameterValidator):
    """Connexion 3.3 checks header parameters as raw strings against their schema, so every integer,
    number or boolean header (``x-bf-async-job-result-ttl: 3600``) fails as "'3600' is not of type
    'integer'". Query and path values are coerced by the URI parser; headers are coerced here."""

    def validate_header_parameter(self, param: dict[str, Any], request: Any) -> str | None:
        value = request.headers.get(param["name"])
        problem: str | None = self.validate_parameter("header", _coerce_header(value, param.get("schema", {})), param)
        return problem


def _coerce_header(value: str | None, schema: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    kind, text = schema.get("type"), value.strip()
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            number = float(text)
            return number if number == number and abs(number) != float("inf") else value
    except ValueError:
        return value
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return value


def missing_handlers(contract: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    """operationIds in the contract that no handler serves."""
    return sorted({op for _, _, op in spec.operations(dict(contract))} - set(table))


def _as_gateway_error(exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, NonConformingResponse):
        log.error("response broke the contract: %s", exc.detail)
        return GatewayError(f"the gateway produced a response that breaks the contract: {exc.detail}")
    if isinstance(exc, ProblemException):
        # Connexion's parameter errors are jsonschema dumps ("... Failed validating ... On instance ..."):
        # the first paragraph says it all.
        message = str(exc.detail or exc.title or "bad request").split("\n\n", 1)[0].strip() or "bad request"
        headers = dict(exc.headers or {})
        if exc.status == 415:
            return UnsupportedMediaType(message, headers=headers)
        if exc.status == 404:
            return NotFound(message, headers=headers)
        if 400 <= exc.status < 500:
            return ClientError(message, status=exc.status, headers=headers)
        return GatewayError(message, status=exc.status, headers=headers)
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return NotFound("no operation at this path; see /openapi.json for the contract")
        if exc.status_code == 405:
            allow = headers.get("Allow") or headers.get("allow") or ""
            allow = _ALLOW.get(_request_path.get(), allow)
            return MethodNotAllowed(f"method not allowed; this path accepts {allow or 'other methods'}",
                                    headers={"Allow": allow} if allow else None)
        if 400 <= exc.status_code < 500:
            return ClientError(str(exc.detail), status=exc.status_code, headers=headers)
        return GatewayError(str(exc.detail), status=exc.status_code)
    if isinstance(exc, UnicodeDecodeError):  # Connexion decodes a JSON body before validating it
        return ClientError("the request body is not UTF-8 JSON", code="invalid_json")
    log.error("unhandled error", exc_info=exc)
    return GatewayError("internal error in the gateway; the details are in its log")


class _Allow:
    """Every method the contract serves on a path, for the Allow header of a 405.

    Starlette answers a 405 from the first route matching the path, which knows only its own method: a path
    with GET and POST operations said ``Allow: GET`` on a PUT.
    """

    def __init__(self) -> None:
        self._paths: list[tuple[re.Pattern[str], str]] = []

    def load(self, contract: Mapping[str, Any]) -> None:
        methods: dict[str, set[str]] = {}
        for method, path, _ in spec.operations(dict(contract)):
            methods.setdefault(path, set()).add(method.upper())
        self._paths = []
        for path, found in methods.items():
            if "GET" in found:
                found.add("HEAD")
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
            self._paths.append((pattern, ", ".join(sorted(found))))

    def get(self, path: str | None, default: str) -> str:
        if path:
            for pattern, allow in self._paths:
                if pattern.match(path):
                    return allow
        return default


_ALLOW = _Allow()
_request_path: ContextVar[str | None] = ContextVar("bifrost_stt_request_path", default=None)


def render_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """The one place an error becomes an HTTP response."""
    token = _request_path.set(getattr(getattr(_request, "url", None), "path", None))
    try:
        err = _as_gateway_error(exc)
    finally:
        _request_path.reset(token)
    return ConnexionResponse(
        status_code=err.status,
        mimetype="application/json",
        content_type="application/json",
        body=orjson.dumps(envelope(err)),
        headers=err.headers_for_client(),
    )


def _static_paths_first(document: dict[str, Any]) -> dict[str, Any]:
    """Routes are matched in document order: ``/api/logs/stats`` must come before ``/api/logs/{id}``."""
    paths = document.get("paths", {})
    ordered = sorted(paths, key=lambda path: "{" in path)  # stable: the document's order otherwise
    return {**document, "paths": {path: paths[path] for path in ordered}}


def create_app(
    config: GatewayConfig,
    *,
    contract: dict[str, Any] | None = None,
    strict_responses: bool = False,
) -> AsyncApp:
    """``strict_responses``: a stream event that breaks the contract breaks the stream (tests, staging)
    instead of only being logged; non-stream responses are always checked strictly."""
    if contract is None:
        contract = spec.served_contract(config.server.spec_dir)
    gateway = Gateway(config, provider_ids=spec.provider_ids(contract))
    _ALLOW.load(contract)
    table = handlers.operations(gateway)
    missing = missing_handlers(contract, table)
    if missing:
        raise RuntimeError(f"operations in the contract without a handler: {', '.join(missing)}")

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    limits = UploadLimits(
        max_body_bytes=config.client.max_request_body_size_mb * 1024 * 1024,
        spool_threshold_bytes=config.client.spool_threshold_kb * 1024,
        reject_non_audio=config.client.reject_non_audio,
        spool_dir=config.client.spool_dir,
        # the cache's audio digest, taken while the upload is spooled (only for requests that use the cache)
        hasher=cache_key.audio_hasher if gateway.cache.enabled else None,
        hash_header=None if gateway.cache.hashes_every_upload() else cache_key.KEY_HEADER.encode("latin-1"),
    )
    swagger = SwaggerUIOptions(serve_spec=False, swagger_ui=True, swagger_ui_path=DOCS_PATH, spec_path="/openapi.json")
    operate = functools.partial(Operate, gateway=gateway, routes=RouteTable(spec.operations(contract)))
    app = AsyncApp(__name__, lifespan=lifespan,
                   middlewares=middleware_stack(orjson.dumps(contract), config.client.allowed_origins, operate),
                   swagger_ui_options=swagger)
    # Operations decorate their handler once (_DecorateOnce); set before add_api creates them.
    app._middleware_app.api_cls = _DecoratedOnceApi
    bodies = make_validator_map(limits)["body"]
    bodies["application/json"] = Utf8JSONBodyValidator
    app.add_api(
        _static_paths_first(spec.to_connexion(contract)),
        resolver=Resolver(function_resolver=table.__getitem__),
        validate_responses=True,
        strict_validation=False,
        validator_map={**validator_map(bodies, strict_sse=strict_responses),
                       "parameter": HeaderCoercingParameterValidator},
        swagger_ui_options=swagger,
    )
    for exc_class in (GatewayError, ProblemException, HTTPException, Exception):
        app.add_error_handler(exc_class, render_error)
    app.gateway = gateway  # for tests and embedding
    return app


def app_factory() -> AsyncApp:
    """Entry point for ``uvicorn --factory`` and the CLI's workers: config from the environment."""
    from bifrost_stt.gateway.config.load import config_from_environ
    from bifrost_stt.server.cli import configure_logging

    config = config_from_environ(os.environ)
    configure_logging(config.server.log_level, config.server.log_format)  # a spawned worker starts bare
    return create_app(config)
