"""HTTP in: the validated form of a request -> a canonical TranscriptionRequest."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connexion import context

from bifrost_stt.kernel.canonical import AudioSource, TranscriptionRequest
from bifrost_stt.kernel.errors import ClientError
from bifrost_stt.kernel.governance import VK_PREFIX
from bifrost_stt.kernel.languages import parse_language
from bifrost_stt.kernel.settings import Secret
from bifrost_stt.gateway.routing.models import resolve_model, split_model
from bifrost_stt.gateway.contract.multipart import ParsedForm, parsed_form
from bifrost_stt.gateway.contract.operations import READ_FIELDS
from bifrost_stt.gateway.compose import Gateway


@dataclass(frozen=True, slots=True)
class Route:
    """How one operation reads its request."""

    default_provider: str | None  # provider for a bare model; None: "provider/model" is required
    text_as_plain: bool  # text/srt/vtt answered as text/plain (integration routes) or wrapped in JSON
    direct_key_header: str = "authorization"


UNIFIED = Route(default_provider=None, text_as_plain=False)
INTEGRATION = Route(default_provider="openai", text_as_plain=True)
AZURE = Route(default_provider="azure", text_as_plain=True, direct_key_header="api-key")


def current_form() -> tuple[ParsedForm, dict[str, str]]:
    """This request's validated form and its headers (lower-cased names), from Connexion's context."""
    scope = context.scope
    form = parsed_form(scope)
    if form is None:
        raise ClientError("the request body must be multipart/form-data with a file part")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return form, headers


def _direct_key(headers: Mapping[str, str], route: Route) -> Secret | None:
    value = headers.get(route.direct_key_header)
    if value is None and route.direct_key_header != "authorization":
        value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if token and scheme.lower() == "bearer":
        raw: str | None = token.strip() or None
    else:
        raw = value.strip() if route.direct_key_header != "authorization" else None
    # an sk-bf- value is a virtual key (bifrost_stt.gateway.governance), never a provider's key
    return Secret(raw) if raw and not raw.startswith(VK_PREFIX) else None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _plain(value: str, param: str) -> str:
    """``value`` unless it holds a control character (CR, LF, NUL ...): such a name is no model and must never
    reach an upstream request line or a response header. Surrounding spaces and tabs are trimmed first."""
    value = value.strip(" \t")
    if _CONTROL.search(value):
        raise ClientError(f"{param} must not contain control characters (CR, LF, NUL ...)", param=param,
                          code="invalid_value")
    return value


def _temperature(fields: Mapping[str, Any], extra: Sequence[tuple[str, str]]) -> float | None:
    """A finite number from 0 to 1, from the declared field or (unified route) an extra one; else a 400."""
    value: Any = fields.get("temperature")
    if value is None:
        value = next((v for k, v in extra if k == "temperature"), None)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and 0 <= number <= 1) or isinstance(value, bool):
        raise ClientError(f"temperature must be a number from 0 to 1, got {str(value)[:40]!r}",
                          param="temperature", code="invalid_value")
    return number


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[-1] if value else None
    return None if value is None else str(value)


def _declared_extras(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Fields the contract declares that no canonical field holds: validated, then passed on as sent."""
    out: list[tuple[str, str]] = []
    for name, value in fields.items():
        if name in READ_FIELDS or value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                text = "true" if item else "false"
            else:
                text = json.dumps(item) if isinstance(item, (dict, list)) else str(item)
            out.append((f"{name}[]" if isinstance(value, list) else name, text))
    return out


def _language(fields: Mapping[str, Any]) -> str | None:
    """The client's language as a normalised tag ("en", "en-US"); an unknown code is a 400 naming it."""
    value = _text(fields, "language")
    return parse_language(value).tag if value and value.strip() else None


def build_request(
    gateway: Gateway,
    form: ParsedForm,
    headers: Mapping[str, str],
    route: Route,
    *,
    deployment: str | None = None,
) -> tuple[TranscriptionRequest, str]:
    """Return the canonical request and the model as the client named it (for x-bifrost-original-model)."""
    fields = form.fields
    audio: AudioSource | None = form.files.get("file")
    if audio is None:
        raise ClientError("file is required", param="file")
    model = _plain(_text(fields, "model") or "", "model")
    if deployment is not None:
        _plain(deployment, "model")
    known, configured = gateway.known_providers, gateway.configured
    if deployment is not None:
        # Azure route: the deployment in the path wins over the form's model.
        original = deployment
        default, deployment = gateway.bare_model(deployment, "azure")  # zero config: the local engine
        provider, name = resolve_model(
            f"{default}/{deployment}", known=known, configured=configured, default_provider=default
        )
    else:
        original = model
        default = route.default_provider
        if model.strip() and split_model(model.strip(), known)[0] is None:
            default, model = gateway.bare_model(model.strip(), default)  # zero config: the local engine
        provider, name = resolve_model(model, known=known, configured=configured, default_provider=default)
    fallbacks = []
    for raw in fields.get("fallbacks") or []:
        fb_provider, fb_model = resolve_model(
            _plain(str(raw), "fallbacks"), known=known, configured=known, default_provider=route.default_provider, param="fallbacks"
        )
        target = f"{fb_provider}/{fb_model}"
        if target not in fallbacks and target != f"{provider}/{name}":  # the same target twice adds nothing
            fallbacks.append(target)
    temperature = _temperature(fields, form.extra)
    granularities = fields.get("timestamp_granularities") or []
    request = TranscriptionRequest(
        provider=provider,
        model=name,
        audio=audio,
        language=_language(fields),
        prompt=_text(fields, "prompt"),
        response_format=_text(fields, "response_format") or "json",
        temperature=temperature,
        timestamp_granularities=tuple(dict.fromkeys(str(g) for g in granularities)),
        stream=bool(fields.get("stream") or False),
        file_format=_text(fields, "file_format"),
        fallbacks=tuple(fallbacks),
        extra=(*form.extra, *_declared_extras(fields)),
        direct_key=_direct_key(headers, route),
    )
    return request, original
