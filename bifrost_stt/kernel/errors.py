"""The gateway's one error tree, rendered into the Bifrost error envelope in one place (``envelope``).

    GatewayError                       500 server_error         (our own failure; never a stack trace)
    ├── ClientError                    400 invalid_request_error
    │   ├── AuthenticationError        401
    │   ├── NotFound                   404
    │   ├── MethodNotAllowed           405 (keeps the Allow header)
    │   ├── PayloadTooLarge            413
    │   └── UnsupportedMediaType       415
    ├── Overloaded                     503 (queue full with drop_excess_requests, no eligible key)
    └── UpstreamError                  the provider's own status, type, code, message, param
        ├── UpstreamUnavailable        502 (connection refused/reset, empty or non-JSON body)
        └── UpstreamTimeout            504

``is_bifrost_error`` is true for errors the gateway raised itself and false for errors relayed from a
provider, as upstream Bifrost does.

Secrets. ``scrub`` is the one function that masks keys in text leaving the gateway; ``scrub_error`` applies it
to every string an error carries (type, code, param, message, headers, extra fields). Providers scrub what an
upstream sent (bodies, stream lines, headers) with the attempt's key; the router scrubs every error again
with every key of the provider and a client's own key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_CLIENT_HEADERS = frozenset({"allow", "retry-after"})

MASK = "**********"
MIN_SECRET = 4  # shorter values are not masked: they would shred ordinary text
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s*]\S*")
# A vendor's masked echo of a key: "sk-ab***...***e0b3" or "sk-...e0b3" (OpenAI, Azure and others).
_MASKED_ECHO = re.compile(r"[^\s*]*\*{3,}[^\s.,;:)'\"]*|\b[\w-]{2,}(?:\.{3}|…)[\w-]{3,}\b")
_RATE_LIMIT = re.compile(r"rate[ _-]?limit|too many requests|throttl", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str] = (), *, echoes: bool = True) -> str:
    """``text`` without any of ``secrets`` (key values), a bearer token, or a vendor's masked echo of a key.

    The one place that decides what a secret looks like in text; every string that leaves the gateway
    from an upstream passes through it. ``echoes=False`` (transcripts, stream events) masks only the exact
    key values: a transcript may well say "bearer" or "f***".
    """
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET and secret in text:
            text = text.replace(secret, MASK)
    if echoes:
        text = _MASKED_ECHO.sub(MASK, _BEARER.sub(r"\1" + MASK, text))
    return text


def scrub_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """``scrub(..., echoes=False)`` on raw bytes (an upstream body or stream line before it is parsed)."""
    for secret in secrets:
        raw = secret.encode() if secret and len(secret) >= MIN_SECRET else b""
        if raw and raw in data:
            data = data.replace(raw, MASK.encode())
    return data


def _scrub_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {k: _scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, secrets) for v in value]
    return value


def scrub_error(err: GatewayError, secrets: Iterable[str] = ()) -> GatewayError:
    """``scrub`` every string ``err`` carries, in place: message, type, code, param, headers (Retry-After ...)
    and extra fields. Returns ``err``."""
    keys = tuple(secrets)
    err.message = scrub(err.message, keys)
    err.args = (err.message,)
    err.error_type = scrub(err.error_type, keys)
    err.code = None if err.code is None else scrub(err.code, keys)
    err.param = None if err.param is None else scrub(err.param, keys)
    err.headers = {k: scrub(v, keys) for k, v in err.headers.items()}
    err.extra = {k: _scrub_value(v, keys) for k, v in err.extra.items()}
    return err


class GatewayError(Exception):
    status: int = 500
    error_type: str = "server_error"
    bifrost_error: bool = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        self.code = code
        self.param = param
        self.provider = provider
        self.model = model
        self.headers: dict[str, str] = dict(headers or {})
        self.extra: dict[str, Any] = dict(extra or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"

    def headers_for_client(self) -> dict[str, str]:
        """The headers worth passing on: Allow on 405, Retry-After on 429/503."""
        return {k: v for k, v in self.headers.items() if k.lower() in _CLIENT_HEADERS}


class ClientError(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationError(ClientError):
    status = 401
    error_type = "authentication_error"


class NotFound(ClientError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(ClientError):
    status = 405


class PayloadTooLarge(ClientError):
    status = 413


class UnsupportedMediaType(ClientError):
    status = 415


class Overloaded(GatewayError):
    """503. Carries ``Retry-After`` (1 s unless the raiser says otherwise): back-pressure is temporary."""

    status = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if not any(k.lower() == "retry-after" for k in self.headers):
            self.headers["Retry-After"] = "1"


class UpstreamError(GatewayError):
    """An error that came from (or on the way to) a provider. Keeps the provider's own fields."""

    status = 502
    error_type = "api_error"
    bifrost_error = False

    @property
    def rate_limited(self) -> bool:
        """A 429, or an error whose wording says rate limit (some vendors answer 400/403 for it)."""
        if self.status == 429 or self.extra.get("upstream_status") == 429:
            return True
        return any(_RATE_LIMIT.search(s) for s in (self.message, self.code or "", self.error_type) if s)

    @property
    def retryable(self) -> bool:
        """429/500/502/503/504 (the upstream's own status when a non-JSON body hid it), network, rate limits."""
        status = self.extra.get("upstream_status", self.status)
        return status in RETRYABLE_STATUSES or self.rate_limited


class UpstreamUnavailable(UpstreamError):
    status = 502
    error_type = "upstream_unavailable"
    bifrost_error = True


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "upstream_timeout"
    bifrost_error = True


def envelope(err: GatewayError, *, request_type: str | None = "transcription") -> dict[str, Any]:
    """The Bifrost error body for ``err`` (BifrostError in the contract)."""
    error: dict[str, Any] = {"type": err.error_type, "message": err.message}
    if err.code is not None:
        error["code"] = err.code
    if err.param is not None:
        error["param"] = err.param
    extra: dict[str, Any] = {}
    if err.provider is not None:
        extra["provider"] = err.provider
    if err.model is not None:
        extra["model_requested"] = err.model
    if request_type is not None:
        extra["request_type"] = request_type
    extra.update(err.extra)
    body: dict[str, Any] = {
        "is_bifrost_error": err.bifrost_error,
        "status_code": err.status,
        "error": error,
    }
    if extra:
        body["extra_fields"] = extra
    return body
