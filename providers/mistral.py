"""Mistral (Voxtral) transcription: ``POST {base}/v1/audio/transcriptions``, Bearer key, multipart; SSE streams.

    canonical TranscriptionRequest --to_wire_fields--> multipart (model first, file last)
    JSON {model, text, language, segments[], usage}  --to_result--> TranscriptionResult
    SSE transcription.text.delta / .segment / .done  --to_event---> StreamDelta / (nothing) / StreamDone
    error JSON {object: error, message, type, code}  --to_error_body--> OpenAI-style error for http.raise_for_upstream

Decisions, and why:
- Formats. Mistral has one JSON answer and no ``response_format`` field. ``json``, ``text`` and
  ``verbose_json`` are mapped from it (``native_formats``); srt/vtt come from ``bifrost_stt.gateway.render.formats`` after
  ``render.plan.ask_provider`` asks for verbose_json with segment timings.
- Timings. ``timestamp_granularities`` is sent only for verbose_json (``segment`` by default). Mistral documents
  ``word`` but answers with one ``segments`` list; when ``word`` is asked we send ``word`` alone and read the
  chunks as words if every chunk is a single token (else as segments, so nothing is lost either way).
- Mistral refuses ``language`` together with timestamps. Timings are needed for verbose_json/srt/vtt, so such a
  request is a 400 naming ``language`` (dropping either would change the answer silently); json/text keep it.
- Refused with a 400 naming the field: ``prompt`` (Mistral's vocabulary hint is ``context_bias``, a list of
  single terms; free text cannot be translated faithfully) and any extra form field other than ``diarize`` and
  ``context_bias`` (``context_bias[]`` is accepted as the same field), e.g. ``include[]=logprobs``.
- Language. The contract's ``language`` is ISO-639-1, as in the request field: Mistral already answers a
  code ("en"), or null; null falls back to the language the client named. (OpenAI's verbose_json says "english".)
- Usage. Tokens (prompt/completion/total) and the audio seconds Mistral bills, in one ``Usage``; the
  duration is ``prompt_audio_seconds`` when numeric, else the last segment's end.
- Streaming. Every voxtral model but the realtime (WebSocket) ones streams over SSE. Events carry ``type`` in
  their JSON and an ``event:`` line; either names them. Segment events repeat text already sent as deltas, so
  they are not relayed; a stream that sent no delta gets the final text as one delta before done.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import orjson

from bifrost_stt.kernel.canonical import (
    Segment,
    StreamDelta,
    StreamDone,
    StreamEvent,
    TranscriptionRequest,
    TranscriptionResult,
    Usage,
    Word,
)
from bifrost_stt.kernel.languages import language_of
from bifrost_stt.kernel.errors import ClientError, GatewayError, UpstreamError, UpstreamUnavailable
from bifrost_stt.kernel.settings import ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, Price, per_minute
from bifrost_stt.providers.http import multipart_body, parse_json, upload_filename
from bifrost_stt.providers.wire import event_json, fetch, open_events

DEFAULT_BASE_URL = "https://api.mistral.ai"
PATH = "/v1/audio/transcriptions"
MISTRAL_PRICES = {  # USD, late 2025
    "voxtral-mini-latest": Price(per_second=per_minute(0.001)),
    "voxtral-mini-2507": Price(per_second=per_minute(0.001)),
}

MISTRAL = Capabilities(
    native_formats=frozenset({"json", "text", "verbose_json"}),
    native_stream=True,
    word_timestamps=True,
    segment_timestamps=True,
    diarization=True,
    max_file_mb=512,  # Mistral's documented upload limit
)
PASSTHROUGH = {"diarize": "diarize", "context_bias": "context_bias", "context_bias[]": "context_bias"}
TIMED_FORMATS = frozenset({"verbose_json"})

# ------------------------------------------------------------------------------------------ to wire


def to_wire_fields(request: TranscriptionRequest, model: str, *, stream: bool) -> list[tuple[str, str]]:
    """Multipart text fields in wire order; ClientError (400, naming the field) for what Mistral cannot take."""
    if request.prompt:
        raise ClientError(
            "mistral takes no prompt; send vocabulary hints as repeated context_bias form fields instead",
            param="prompt",
        )
    unknown = [name for name, _ in request.extra if name not in PASSTHROUGH]
    if unknown:
        raise ClientError(
            f"mistral does not accept the form field(s) {', '.join(dict.fromkeys(unknown))}; "
            f"it accepts {', '.join(sorted(set(PASSTHROUGH.values())))} besides the contract's fields",
            param=unknown[0],
        )
    granularities = () if stream else wire_granularities(request)
    if granularities and request.language:
        raise ClientError(
            f"mistral cannot return timestamps when language is set, and response_format="
            f"{request.response_format} needs them; omit language (Voxtral detects it) or ask for json or text",
            param="language",
        )
    fields: list[tuple[str, str]] = [("model", model)]
    language = language_of(request.language)
    if language is not None:
        fields.append(("language", language.code))
    if request.temperature is not None:
        fields.append(("temperature", repr(float(request.temperature))))
    fields.extend(("timestamp_granularities", g) for g in granularities)
    if stream:
        fields.append(("stream", "true"))
    fields.extend((PASSTHROUGH[name], value) for name, value in request.extra)
    return fields


def wire_granularities(request: TranscriptionRequest) -> tuple[str, ...]:
    """What to ask Mistral for: nothing unless verbose_json; ``word`` alone when words are asked, else segment."""
    if request.response_format not in TIMED_FORMATS:
        return ()
    return ("word",) if "word" in request.timestamp_granularities else ("segment",)


# ------------------------------------------------------------------------------------- to canonical


def _number(value: Any) -> float | None:
    """A JSON number, else None (Mistral has sent ``{}`` for absent audio seconds)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def to_usage(data: Any) -> Usage | None:
    """Mistral's usage: token counts plus the audio seconds billed (rounded up to whole seconds)."""
    if not isinstance(data, Mapping):
        return None
    seconds = _number(data.get("prompt_audio_seconds"))
    return Usage(
        type="tokens",
        input_tokens=_int(data.get("prompt_tokens")),
        output_tokens=_int(data.get("completion_tokens")),
        total_tokens=_int(data.get("total_tokens")),
        seconds=None if seconds is None else math.ceil(seconds),
    )


def to_timings(chunks: Any, *, words: bool) -> tuple[tuple[Segment, ...], tuple[Word, ...]]:
    """``segments`` chunks as canonical segments, or as words when words were asked and each chunk is one."""
    items = [c for c in chunks or () if isinstance(c, Mapping)]
    if words and items and all(len(str(c.get("text") or "").split()) == 1 for c in items):
        return (), tuple(
            Word(word=str(c["text"]).strip(), start=float(c.get("start", 0.0)), end=float(c.get("end", 0.0)),
                 speaker=c.get("speaker_id"))
            for c in items
        )
    return tuple(
        Segment(id=i, start=float(c.get("start", 0.0)), end=float(c.get("end", 0.0)), text=str(c.get("text") or ""),
                speaker=c.get("speaker_id"))
        for i, c in enumerate(items)
    ), ()


def to_result(body: Any, request: TranscriptionRequest) -> TranscriptionResult:
    """Mistral's transcription object in canonical form; ``model`` and unknown keys go to ``extra``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("text"), str):
        raise UpstreamUnavailable("mistral answered without a transcription text")
    segments, words = to_timings(body.get("segments"), words="word" in wire_granularities(request))
    usage = to_usage(body.get("usage"))
    ends = [s.end for s in segments] + [w.end for w in words]
    audio_seconds = _number((body.get("usage") or {}).get("prompt_audio_seconds"))
    return TranscriptionResult(
        text=body["text"],
        language=body.get("language") or request.language,
        duration=audio_seconds if audio_seconds is not None else (max(ends) if ends else None),
        segments=segments,
        words=words,
        usage=usage,
        extra={k: v for k, v in body.items() if k not in ("text", "language", "segments", "usage")},
    )


def to_event(kind: str | None, data: Mapping[str, Any]) -> StreamEvent | None:
    """One SSE payload as a canonical event; None for events not relayed (language, segment, unknown)."""
    if kind == "error" or data.get("type") == "error" or "error" in data or data.get("object") == "error":
        inner: Any = data.get("error", data)
        err: Mapping[str, Any] = inner if isinstance(inner, Mapping) else {"message": str(inner)}
        raise UpstreamError(
            str(err.get("message") or "mistral reported an error mid-stream"),
            error_type=str(err.get("type") or "api_error"),
            code=None if err.get("code") is None else str(err.get("code")),
        )
    kind = str(data.get("type") or kind or "")
    if kind == "transcription.text.delta":
        return StreamDelta(delta=str(data.get("text") or ""))
    if kind == "transcription.done":
        return StreamDone(text=str(data.get("text") or ""), usage=to_usage(data.get("usage")))
    return None


def to_error_body(status: int, body: bytes) -> bytes | None:
    """Mistral's error JSON rewritten OpenAI-style for ``raise_for_upstream``; None when it needs no help.

    Validation errors nest FastAPI's ``{"detail": [...]}`` inside ``message``; those become one readable
    message with ``param`` naming the first field. A missing ``type`` is derived from the status.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, Mapping) or isinstance(data.get("error"), Mapping):
        return None
    message, param = data.get("message", data.get("detail")), data.get("param")
    if isinstance(message, Mapping):
        message = message.get("detail", message)
    if isinstance(message, list):
        message, param = _flatten_detail(message, param)
    if message is None:
        return None
    return orjson.dumps({"error": {
        "message": str(message), "type": data.get("type") or _type_for(status), "code": data.get("code"), "param": param,
    }})


def _flatten_detail(items: Sequence[Any], param: Any) -> tuple[str, Any]:
    parts, first = [], param
    for item in items:
        if not isinstance(item, Mapping):
            parts.append(str(item))
            continue
        loc = [str(p) for p in item.get("loc") or () if p != "body"]
        first = first or (loc[-1] if loc else None)
        parts.append(f"{'.'.join(loc) or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts), first


def _type_for(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "api_error"
    )


# ------------------------------------------------------------------------------------------ adapter


class Mistral:
    """Transcriber and StreamingTranscriber for Mistral's Voxtral models."""

    capabilities = MISTRAL

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = config.id
        self.config = config
        self.client = client

    def streams(self, model: str) -> bool:
        return "realtime" not in model.lower()

    def _url(self) -> str:
        base = (self.config.network.base_url or DEFAULT_BASE_URL).rstrip("/")
        return base + "/" + self.config.request_path_overrides.get("transcription", PATH).lstrip("/")

    def _request(self, request: TranscriptionRequest, attempt: Attempt, *, stream: bool) -> httpx.Request:
        """A fresh upstream request (its body iterator is single-use; each attempt builds its own)."""
        fields = to_wire_fields(request, attempt.model, stream=stream)
        filename, file_type = upload_filename(request.audio)
        content_type, length, body = multipart_body(fields, "file", request.audio, filename, file_type)
        headers = {
            "content-type": content_type,
            "content-length": str(length),
            "accept": "text/event-stream" if stream else "application/json",
        }
        if attempt.key is not None and attempt.key.value:
            headers["authorization"] = f"Bearer {attempt.key.value.reveal()}"
        read = self.config.network.stream_idle_timeout_in_seconds if stream else attempt.timeout
        timeout = httpx.Timeout(attempt.timeout, connect=self.config.network.connect_timeout_in_seconds, read=read)
        return self.client.build_request("POST", self._url(), content=body, headers=headers, timeout=timeout)

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """One upstream call within ``attempt.timeout`` seconds, answer in canonical form.

        Mistral's error bodies are made OpenAI-style first; the router names a rejected key (never its value).
        """
        upstream = self._request(request, attempt, stream=False)
        response = await fetch(self.name, self.client, upstream, attempt, rewrite_error=to_error_body)
        try:
            return to_result(parse_json(self.name, response), request)
        except GatewayError as exc:
            exc.provider = self.name
            raise

    async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamEvent]:
        """Relay Mistral's SSE as canonical events; errors before the first event raise from its ``__anext__``."""
        events = open_events(
            self.name, self.client, self._request(request, attempt, stream=True), attempt,
            idle_timeout=self.config.network.stream_idle_timeout_in_seconds, rewrite_error=to_error_body,
        )
        try:
            sent_delta = False
            async for kind, payload in events:
                if payload.strip() == "[DONE]":
                    break
                data = event_json(self.name, payload)
                event = to_event(kind, data) if isinstance(data, Mapping) else None
                if isinstance(event, StreamDone):
                    if not sent_delta and event.text:
                        yield StreamDelta(delta=event.text)
                    yield event
                    return
                if event is not None:
                    sent_delta = True
                    yield event
            raise UpstreamUnavailable(f"{self.name} ended the stream before transcription.done", provider=self.name)
        except GatewayError as exc:
            exc.provider = exc.provider or self.name
            raise
        finally:
            await events.aclose()


def create(config: ProviderConfig, client: httpx.AsyncClient) -> Mistral:
    return Mistral(config, client)
