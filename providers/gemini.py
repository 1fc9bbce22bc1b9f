"""Google Gemini as a transcriber: ``generateContent`` with the audio inline, streamed as SSE on request.

    canonical TranscriptionRequest --to_wire_parts / to_generation_config--> JSON request body
    audio bytes                    --base64, streamed in 3-byte multiples---> inline_data.data
    generateContent JSON           --to_result---------------------------> TranscriptionResult
    streamGenerateContent SSE      --to_stream_chunk---------------------> StreamDelta ... StreamDone
    {"error": {code, message, status, details}} --to_upstream_error------> UpstreamError

Gemini is a general model, not a speech API, so the request is an instruction plus the audio:
``parts = [{text: prompt or DEFAULT_INSTRUCTION}, {inline_data: {mime_type, data}}]``. Translations:

    prompt        the instruction itself (a Gemini prompt is an instruction, not Whisper's vocabulary hint)
    language      a sentence appended to the instruction (Gemini has no language parameter)
    temperature   generationConfig.temperature
    include[]=logprobs  generationConfig.responseLogprobs; chosen tokens become canonical logprobs
    GEN_CONFIG_EXTRAS   a few generationConfig knobs by their snake_case names (thinking_budget ...)

Refused with a 400 naming them: timestamp_granularities (Gemini returns no timings) and any other extra
field. Gemini's answer has no duration, segments or words; usage comes from ``usageMetadata``.

Size. Inline data is limited to 20 MB per request (Files API beyond that; not used here), so a body
that would exceed ``INLINE_LIMIT_BYTES`` once base64-encoded is a 413 before any network call. The body
itself is never built in memory: prefix, base64 of the file read chunk by chunk, suffix.
"""

from __future__ import annotations

import re
import secrets as _secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from bifrost_stt.kernel.canonical import (
    Logprob,
    StreamDelta,
    StreamDone,
    StreamEvent,
    TranscriptionRequest,
    TranscriptionResult,
    Usage,
)
from bifrost_stt.kernel.languages import language_of
from bifrost_stt.kernel.errors import ClientError, PayloadTooLarge, UpstreamError, UpstreamUnavailable, scrub
from bifrost_stt.kernel.settings import KeyConfig, ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities
from bifrost_stt.providers.http import base64_chunks, base64_length, parse_json, upload_filename
from bifrost_stt.providers.wire import VendorError, event_json, fetch, key_secrets, open_events

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"  # upstream Bifrost's default, version included
API_VERSION = "v1beta"  # added to a base URL that names no version (``https://generativelanguage.googleapis.com``)
_VERSIONED = re.compile(r"/v\d+(?:alpha|beta)?\d*$")  # a base URL ending in /v1beta, /v1, /v1alpha ...
INLINE_LIMIT_BYTES = 20 * 1024 * 1024  # the whole request; Gemini answers "exceeds the limit: 20971520 bytes"
DEFAULT_INSTRUCTION = (
    "Transcribe the speech in this audio verbatim. Answer with the transcript only: no introduction, "
    "no timestamps, no speaker labels, no commentary. If there is no speech, answer with nothing."
)
CAPABILITIES = Capabilities(
    native_formats=frozenset({"json"}),  # text only: no timings, so nothing maps onto verbose_json
    native_stream=True,
    word_timestamps=False,
    segment_timestamps=False,
    diarization=False,
    max_file_mb=INLINE_LIMIT_BYTES * 3 // 4 // (1024 * 1024),  # 15: base64 makes 4 bytes of every 3
)
# Gemini's documented audio types; other sniffed formats go with their usual type and Gemini decides.
MIME_TYPES = {
    "wav": "audio/wav", "mp3": "audio/mp3", "aiff": "audio/aiff", "aac": "audio/aac",
    "ogg": "audio/ogg", "flac": "audio/flac",
}
# Extra form fields taken as generationConfig knobs: form name -> (config path, type).
GEN_CONFIG_EXTRAS: Mapping[str, tuple[tuple[str, ...], type]] = {
    "max_output_tokens": (("maxOutputTokens",), int),
    "top_p": (("topP",), float),
    "top_k": (("topK",), int),
    "seed": (("seed",), int),
    "thinking_budget": (("thinkingConfig", "thinkingBudget"), int),
}
_FINISHED_OK = frozenset({"STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"})

# ------------------------------------------------------------------------------------------ to wire


def to_instruction(request: TranscriptionRequest) -> str:
    """The text part: the client's prompt or our default instruction, plus the language when given."""
    text = request.prompt.strip() if request.prompt and request.prompt.strip() else DEFAULT_INSTRUCTION
    language = language_of(request.language)
    if language is not None:
        text += (f"\n\nThe speech is in {language.name} (language code {language.tag}); "
                 "transcribe it in that language.")
    return text


def to_generation_config(request: TranscriptionRequest) -> dict[str, Any]:
    """``generationConfig`` from temperature, include[]=logprobs and the GEN_CONFIG_EXTRAS fields.

    Raises ClientError (400, naming the fields) for timestamp granularities and for extras Gemini
    cannot take, so nothing the client asked for is dropped silently.
    """
    if request.timestamp_granularities:
        raise ClientError(
            "gemini returns no timestamps; timestamp_granularities "
            f"{list(request.timestamp_granularities)} cannot be honoured (omit them, or use a provider "
            "with word/segment timings)",
            param="timestamp_granularities",
        )
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = float(request.temperature)
    unsupported: list[str] = []
    for name, value in request.extra:
        if name in ("include[]", "include") and value == "logprobs":
            config["responseLogprobs"] = True
            continue
        spec = GEN_CONFIG_EXTRAS.get(name)
        if spec is None:
            unsupported.append(name)
            continue
        path, kind = spec
        try:
            typed = kind(value)
        except ValueError:
            raise ClientError(f"{name} must be a {kind.__name__}, got {value!r}", param=name) from None
        target = config
        for step in path[:-1]:
            target = target.setdefault(step, {})
        target[path[-1]] = typed
    if unsupported:
        names = list(dict.fromkeys(unsupported))
        raise ClientError(
            f"gemini does not take {', '.join(names)}; it accepts include[]=logprobs and "
            f"{', '.join(sorted(GEN_CONFIG_EXTRAS))}",
            param=names[0],
        )
    return config


def to_mime_type(request: TranscriptionRequest) -> str:
    """The inline_data mime_type: Gemini's own name for the sniffed format, else the upload's type."""
    audio = request.audio
    fmt = (audio.format or request.file_format or "").lower()
    return MIME_TYPES.get(fmt) or upload_filename(audio)[1]


def to_wire_body(request: TranscriptionRequest) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` of the JSON body; the base64 audio goes between them, inside a JSON string.

    The body is serialised once with a unique placeholder for the data and split around it, so the
    JSON is always well formed whatever the instruction contains.
    """
    marker = f"@@audio-{_secrets.token_hex(8)}@@"
    body: dict[str, Any] = {
        "contents": [{
            "role": "user",
            "parts": [
                {"text": to_instruction(request)},
                {"inline_data": {"mime_type": to_mime_type(request), "data": marker}},
            ],
        }],
    }
    config = to_generation_config(request)
    if config:
        body["generationConfig"] = config
    prefix, _, suffix = orjson.dumps(body).partition(marker.encode())
    return prefix, suffix


def wire_body(provider: str, request: TranscriptionRequest) -> tuple[int, AsyncIterator[bytes]]:
    """``(content-length, byte stream)`` of the request body; 413 when it exceeds the inline limit."""
    prefix, suffix = to_wire_body(request)
    length = len(prefix) + base64_length(request.audio.size) + len(suffix)
    if length > INLINE_LIMIT_BYTES:
        raise PayloadTooLarge(
            f"{provider} takes audio inline up to {INLINE_LIMIT_BYTES // (1024 * 1024)} MB per request; this "
            f"{request.audio.size / 1e6:.1f} MB file is {length / 1e6:.1f} MB once base64-encoded. Send a "
            "smaller or more compressed file (the Files API for larger uploads is not supported here)",
            param="file", provider=provider,
        )

    async def stream() -> AsyncIterator[bytes]:
        yield prefix
        async for block in base64_chunks(request.audio):
            yield block
        yield suffix

    return length, stream()


# ------------------------------------------------------------------------------------- to canonical


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def to_usage(meta: Any) -> Usage | None:
    """``usageMetadata`` as token usage; thinking tokens count as output (they are billed as such)."""
    if not isinstance(meta, Mapping):
        return None
    by_modality = {
        str(d.get("modality")): int(d.get("tokenCount") or 0)
        for d in meta.get("promptTokensDetails") or () if isinstance(d, Mapping)
    }
    answer, thoughts = meta.get("candidatesTokenCount"), meta.get("thoughtsTokenCount")
    output = None if answer is None and thoughts is None else int(answer or 0) + int(thoughts or 0)
    return Usage(
        type="tokens",
        input_tokens=_int(meta.get("promptTokenCount")),
        output_tokens=output,
        total_tokens=_int(meta.get("totalTokenCount")),
        text_tokens=by_modality.get("TEXT"),
        audio_tokens=by_modality.get("AUDIO"),
    )


def to_logprobs(candidate: Mapping[str, Any]) -> tuple[Logprob, ...]:
    """``logprobsResult.chosenCandidates`` (present when responseLogprobs was set)."""
    chosen = (candidate.get("logprobsResult") or {}).get("chosenCandidates") or ()
    return tuple(
        Logprob(token=str(c.get("token") or ""), logprob=float(c.get("logProbability", 0.0)),
                bytes=tuple(str(c.get("token") or "").encode()))
        for c in chosen if isinstance(c, Mapping)
    )


def _first_candidate(provider: str, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """candidates[0], or None; raises for a prompt Gemini blocked (no candidates, a blockReason)."""
    candidates = body.get("candidates") or ()
    if candidates and isinstance(candidates[0], Mapping):
        return candidates[0]
    reason = (body.get("promptFeedback") or {}).get("blockReason")
    if reason:
        raise UpstreamError(
            f"{provider} refused to process the audio (blockReason {reason})",
            status=400, error_type="invalid_request_error", code=str(reason), provider=provider,
        )
    return None


def to_text(provider: str, candidate: Mapping[str, Any] | None) -> str:
    """The answer's text parts joined (thought summaries left out); raises when the answer was cut off
    for a reason other than length (SAFETY, RECITATION ...) and there is no text at all."""
    if candidate is None:
        return ""
    parts = (candidate.get("content") or {}).get("parts") or ()
    text = "".join(str(p.get("text") or "") for p in parts if isinstance(p, Mapping) and not p.get("thought"))
    reason = candidate.get("finishReason")
    if not text and reason and reason not in _FINISHED_OK:
        raise UpstreamError(
            f"{provider} stopped without a transcript (finishReason {reason})",
            status=400, error_type="invalid_request_error", code=str(reason), provider=provider,
        )
    return text


def to_result(provider: str, body: Any, language: str | None = None) -> TranscriptionResult:
    """A generateContent answer in canonical form (text, usage, logprobs; no timings from Gemini)."""
    if not isinstance(body, Mapping):
        raise UpstreamUnavailable(f"{provider} answered with JSON that is not an object", provider=provider)
    candidate = _first_candidate(provider, body)
    # Extras are rendered into the client's body: only a transcript cut short by the output limit is
    # worth telling (raise max_output_tokens), the rest of Gemini's envelope is not transcription data.
    reason = candidate.get("finishReason") if candidate else None
    extra = {"finishReason": reason} if reason == "MAX_TOKENS" else {}
    return TranscriptionResult(
        text=to_text(provider, candidate).strip(),
        language=language,
        logprobs=to_logprobs(candidate) if candidate else (),
        usage=to_usage(body.get("usageMetadata")),
        extra=extra,
    )


def _retry_after(details: Any) -> str | None:
    """Seconds from a google.rpc.RetryInfo ``retryDelay`` ("17s", "0.5s"), for the Retry-After header."""
    for item in details or ():
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = str(item.get("retryDelay") or "").removesuffix("s")
            try:
                return f"{max(0.0, float(delay)):g}"
            except ValueError:
                return None
    return None


def to_upstream_error(
    provider: str, status: int, data: Any, *, key: KeyConfig | None = None, secrets: Sequence[str] = ()
) -> UpstreamError | None:
    """Gemini's ``{"error": {code, message, status, details}}`` as an UpstreamError; None for other shapes.

    ``error_type`` is Gemini's status word (INVALID_ARGUMENT, RESOURCE_EXHAUSTED ...), ``code`` the
    ErrorInfo reason when there is one (API_KEY_INVALID ...). A rejected key (Gemini answers 400 for a
    wrong key, 403 for none) is named by its configured name, never by its value.
    """
    if isinstance(data, list) and data:  # the JSON-array framing of streamGenerateContent without alt=sse
        data = data[0]
    error = data.get("error") if isinstance(data, Mapping) else None
    if not isinstance(error, Mapping) or not error.get("message"):
        return None
    details = error.get("details")
    reason = next((str(d["reason"]) for d in details or () if isinstance(d, Mapping) and d.get("reason")), None)
    word = str(error.get("status") or "UNKNOWN")
    message = scrub(str(error["message"]), secrets)
    if key is not None and (status in (401, 403) or (reason or "").startswith("API_KEY")):
        message += f" (key {key.name!r})"
    retry_after = _retry_after(details)
    return UpstreamError(
        message,
        status=status,
        error_type=word,
        code=reason or word,
        provider=provider,
        headers={"retry-after": retry_after} if retry_after else None,
    )


# ------------------------------------------------------------------------------------------ adapter


class Gemini:
    """Transcriber and StreamingTranscriber over the Gemini API (see the module docstring)."""

    capabilities = CAPABILITIES

    def __init__(self, name: str, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self.client = client

    def streams(self, model: str) -> bool:
        return True  # every generateContent model also serves streamGenerateContent

    def _url(self, model: str, *, stream: bool) -> str:
        """``{base}/models/{model}:method`` where base names the API version: an upstream config's
        ``base_url: …/v1beta`` is used as it is; a base without a version gets ``/v1beta``."""
        base = (self.config.network.base_url or DEFAULT_BASE_URL).rstrip("/")
        if not _VERSIONED.search(base):
            base = f"{base}/{API_VERSION}"
        name = quote(model.removeprefix("models/"), safe="-._~")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/models/{name}:{method}"

    def _request(self, request: TranscriptionRequest, attempt: Attempt, *, stream: bool) -> httpx.Request:
        """A fresh upstream request (its body iterator is single-use; each attempt builds its own)."""
        length, body = wire_body(self.name, request)
        headers = {
            "content-type": "application/json",
            "content-length": str(length),
            "accept": "text/event-stream" if stream else "application/json",
        }
        if attempt.key is not None and attempt.key.value:
            headers["x-goog-api-key"] = attempt.key.value.reveal()
        read = self.config.network.stream_idle_timeout_in_seconds if stream else attempt.timeout
        timeout = httpx.Timeout(attempt.timeout, connect=self.config.network.connect_timeout_in_seconds, read=read)
        return self.client.build_request(
            "POST", self._url(attempt.model, stream=stream), content=body, headers=headers, timeout=timeout
        )

    def _vendor_error(self, attempt: Attempt) -> VendorError:
        """Gemini's own error object (a wrong key is a 400 there) -> UpstreamError naming the key."""
        secrets = key_secrets(attempt)
        return lambda status, data, _headers: to_upstream_error(
            self.name, status, data, key=attempt.key, secrets=secrets
        )

    def _stream_error(self, data: Mapping[str, Any], attempt: Attempt) -> UpstreamError:
        """An error event mid-stream: Gemini's error object, its ``code`` as the status (502 without one)."""
        inner = data.get("error")
        code = inner.get("code") if isinstance(inner, Mapping) else None
        status = int(code) if isinstance(code, int) and 400 <= code <= 599 else 502
        error = to_upstream_error(self.name, status, data, key=attempt.key, secrets=key_secrets(attempt))
        return error or UpstreamError(f"{self.name} reported an error mid-stream", provider=self.name)

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """One generateContent call within ``attempt.timeout`` seconds, answer in canonical form."""
        upstream = self._request(request, attempt, stream=False)
        response = await fetch(self.name, self.client, upstream, attempt, vendor_error=self._vendor_error(attempt))
        return to_result(self.name, parse_json(self.name, response), request.language)

    async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamEvent]:
        """Relay streamGenerateContent (SSE) as deltas, then one StreamDone with the text and usage.

        Nothing runs until the first ``__anext__``; errors before the first event (a refused body, a
        non-2xx answer) raise from it, so the router can still retry or fall back. Whitespace Gemini
        puts at the very start or end is held back, so the deltas join to exactly the done text.
        """
        events = open_events(
            self.name, self.client, self._request(request, attempt, stream=True), attempt,
            idle_timeout=self.config.network.stream_idle_timeout_in_seconds,
            vendor_error=self._vendor_error(attempt),
        )
        try:
            text, held, finished = "", "", False
            usage: Usage | None = None
            logprobs: list[Logprob] = []
            async for _, payload in events:
                data = event_json(self.name, payload)
                if not isinstance(data, Mapping):
                    continue
                if "error" in data:
                    raise self._stream_error(data, attempt)
                candidate = _first_candidate(self.name, data)
                usage = to_usage(data.get("usageMetadata")) or usage
                finished = finished or bool(candidate and candidate.get("finishReason"))
                piece = held + to_text(self.name, candidate)
                if not text:
                    piece = piece.lstrip()
                kept = piece.rstrip()
                held = piece[len(kept):]
                chunk_logprobs = to_logprobs(candidate) if candidate else ()
                logprobs.extend(chunk_logprobs)
                if kept:
                    text += kept
                    yield StreamDelta(delta=kept, logprobs=chunk_logprobs)
            if not finished:
                raise UpstreamUnavailable(f"{self.name} ended the stream before a finishReason", provider=self.name)
            yield StreamDone(text=text, usage=usage, logprobs=tuple(logprobs))
        finally:
            await events.aclose()


def create(config: ProviderConfig, client: httpx.AsyncClient) -> Gemini:
    return Gemini(config.id, config, client)
