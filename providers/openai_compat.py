"""OpenAI-compatible transcription APIs: one implementation, per-vendor defaults passed in (delegation).

    canonical TranscriptionRequest --to_wire_fields--> multipart (model first, file last)
    JSON / verbose_json body       --to_result-------> TranscriptionResult
    text / srt / vtt body          --to_result-------> TranscriptionResult(text=body, native=body)
    SSE transcript.text.*          --to_event--------> StreamDelta / StreamDone
    JSON answer to stream=true     --to_result-------> TranscriptionResult (the gateway streams it)

For text, srt and vtt the raw body is both ``native`` (rendered unchanged by integration routes) and
``text`` (the unified route answers ``{"text": "<raw srt>"}`` exactly as upstream Bifrost does).

A vendor is a ``Vendor`` value (base URL, URL builder, auth headers, capabilities, streaming models);
``create_openai`` / ``create_azure`` / ``create_groq`` are the factories named in ``providers.registry``.
A new OpenAI-compatible vendor is one more ``Vendor`` and factory, not a subclass.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from bifrost_stt.kernel.canonical import (
    TEXT_FORMATS,
    Logprob,
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
from bifrost_stt.kernel.settings import KeyConfig, ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, ConfigSpec, KeySection, Price, per_hour, per_minute, StreamItem
from bifrost_stt.kernel.fields import Field, string, strings
from bifrost_stt.providers.http import multipart_body, parse_json, upload_filename
from bifrost_stt.providers.wire import Whole, event_json, fetch, open_answer

ALL_FORMATS = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
AZURE_DEFAULT_API_VERSION = "2024-10-21"


@dataclass(frozen=True, slots=True)
class Vendor:
    """What differs between OpenAI-compatible vendors; everything else is shared."""

    default_base_url: str | None
    url_for: Callable[[str | None, Attempt], str]  # (configured base URL or None, attempt) -> full URL
    auth_headers: Callable[[KeyConfig | None], dict[str, str]]
    capabilities: Capabilities
    # Models asked for a stream (``stream=true``); the answer decides: SSE is relayed, JSON streamed by the gateway.
    streams: Callable[[str], bool] = lambda model: False
    # A first guess at a model whose abilities differ from the vendor's (gpt-4o-transcribe: json/text only, no
    # timestamps). Only a guess: a format the upstream refuses is learned by the router (routing/learned.py).
    model_capabilities: Callable[[str], Capabilities | None] = lambda model: None


def bearer(key: KeyConfig | None) -> dict[str, str]:
    """``Authorization: Bearer`` when a key is set (key-less self-hosted servers get nothing)."""
    return {"authorization": f"Bearer {key.value.reveal()}"} if key is not None and key.value else {}


def not_whisper(model: str) -> bool:
    """Every model is asked to stream but those named whisper* (a first guess: whisper-1 ignores ``stream``,
    so asking would cost nothing but a server that refuses the field). The answer decides for the rest."""
    return not model.rsplit("/", 1)[-1].lower().startswith("whisper")


def gpt4o_diarize(model: str) -> bool:
    """gpt-4o-transcribe-diarize (and dated variants): speaker-labelled diarized_json."""
    return gpt4o_transcribe(model) and "diarize" in model.rsplit("/", 1)[-1].lower()


def gpt4o_transcribe(model: str) -> bool:
    """The gpt-4o(-mini)-transcribe family (dated and -diarize variants too): json/text only (a first guess)."""
    name = model.rsplit("/", 1)[-1].lower()
    return name.startswith("gpt-4o") and "transcribe" in name


# ------------------------------------------------------------------------------------------ to wire


def to_wire_fields(request: TranscriptionRequest, model: str, *, stream: bool) -> list[tuple[str, str]]:
    """Multipart text fields in wire order: model first, then the options set, then passthrough extras."""
    fields: list[tuple[str, str]] = [("model", model)]
    language = language_of(request.language)
    if language is not None:
        fields.append(("language", language.code))  # OpenAI takes ISO-639-1 only ("en", not "en-US")
    if request.prompt:
        fields.append(("prompt", request.prompt))
    if request.response_format:
        fields.append(("response_format", request.response_format))
    if request.temperature is not None:
        fields.append(("temperature", repr(float(request.temperature))))
    fields.extend(("timestamp_granularities[]", g) for g in request.timestamp_granularities)
    if stream:
        fields.append(("stream", "true"))
    fields.extend(request.extra)
    return fields


# ------------------------------------------------------------------------------------- to canonical

_KNOWN_KEYS = frozenset({"text", "task", "language", "duration", "segments", "words", "logprobs", "usage"})


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def to_usage(data: Mapping[str, Any] | None) -> Usage | None:
    """OpenAI's usage object: ``tokens`` (with input_token_details) or ``duration`` (seconds)."""
    if not isinstance(data, Mapping):
        return None
    details = data.get("input_token_details") or {}
    kind: Literal["tokens", "duration"] = "duration" if data.get("type") == "duration" else "tokens"
    seconds = data.get("seconds")
    return Usage(
        type=kind,
        input_tokens=_opt_int(data.get("input_tokens")),
        output_tokens=_opt_int(data.get("output_tokens")),
        total_tokens=_opt_int(data.get("total_tokens")),
        text_tokens=_opt_int(details.get("text_tokens")),
        audio_tokens=_opt_int(details.get("audio_tokens")),
        seconds=None if seconds is None else int(round(float(seconds))),
    )


def to_logprobs(items: Any) -> tuple[Logprob, ...]:
    return tuple(
        Logprob(token=str(i.get("token") or ""), logprob=float(i.get("logprob", 0.0)), bytes=tuple(i.get("bytes") or ()))
        for i in items or ()
    )


def _speaker(data: Mapping[str, Any]) -> str | None:
    """OpenAI's diarized models say ``speaker``; Fireworks says ``speaker_id``."""
    value = data.get("speaker", data.get("speaker_id"))
    return None if value is None else str(value)


def _segment_id(i: int, value: Any) -> int:
    """Whisper numbers segments; a diarized answer names them ("seg_0"): those keep their position."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return i


def to_segment(i: int, data: Mapping[str, Any]) -> Segment:
    return Segment(
        id=_segment_id(i, data.get("id", i)),
        start=float(data.get("start", 0.0)),
        end=float(data.get("end", 0.0)),
        text=str(data.get("text") or ""),
        seek=int(data.get("seek", 0)),
        tokens=tuple(int(t) for t in data.get("tokens") or ()),
        temperature=_opt_float(data.get("temperature")),
        avg_logprob=_opt_float(data.get("avg_logprob")),
        compression_ratio=_opt_float(data.get("compression_ratio")),
        no_speech_prob=_opt_float(data.get("no_speech_prob")),
        speaker=_speaker(data),
    )


def to_word(data: Mapping[str, Any]) -> Word:
    return Word(
        word=str(data.get("word") or ""),
        start=float(data.get("start", 0.0)),
        end=float(data.get("end", 0.0)),
        speaker=_speaker(data),
    )


def to_result(body: Any, response_format: str) -> TranscriptionResult:
    """A json / verbose_json object, or a text / srt / vtt string, in canonical form.

    Keys the canonical type does not name (Groq's ``x_groq`` ...) are kept in ``extra``.
    """
    if isinstance(body, str):
        return TranscriptionResult(text=body, native=body, native_format=response_format)
    if not isinstance(body, Mapping) or not isinstance(body.get("text"), str):
        raise UpstreamUnavailable("the upstream transcription has no text")
    return TranscriptionResult(
        text=body["text"],
        language=body.get("language"),
        duration=_opt_float(body.get("duration")),
        task=str(body.get("task") or "transcribe"),
        segments=tuple(to_segment(i, s) for i, s in enumerate(body.get("segments") or ())),
        words=tuple(to_word(w) for w in body.get("words") or ()),
        logprobs=to_logprobs(body.get("logprobs")),
        usage=to_usage(body.get("usage")),
        extra={k: v for k, v in body.items() if k not in _KNOWN_KEYS},
    )


def to_event(provider: str, data: Mapping[str, Any]) -> StreamEvent | None:
    """One SSE payload as a canonical event; None for event types we do not relay."""
    if "error" in data:
        err = data["error"] if isinstance(data["error"], Mapping) else {"message": str(data["error"])}
        raise UpstreamError(
            str(err.get("message") or f"{provider} reported an error mid-stream"),
            error_type=str(err.get("type") or "api_error"),
            code=None if err.get("code") is None else str(err.get("code")),
            param=err.get("param"),
            provider=provider,
        )
    kind = data.get("type")
    if kind == "transcript.text.delta":
        return StreamDelta(delta=str(data.get("delta") or ""), logprobs=to_logprobs(data.get("logprobs")))
    if kind == "transcript.text.done":
        return StreamDone(
            text=str(data.get("text") or ""), usage=to_usage(data.get("usage")), logprobs=to_logprobs(data.get("logprobs"))
        )
    return None


# ------------------------------------------------------------------------------------------ adapter


class OpenAICompatible:
    """Transcriber and StreamingTranscriber for any vendor speaking OpenAI's transcription protocol."""

    def __init__(self, name: str, config: ProviderConfig, client: httpx.AsyncClient, vendor: Vendor) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.vendor = vendor
        self.capabilities = vendor.capabilities

    def streams(self, model: str) -> bool:
        return self.vendor.capabilities.native_stream and self.vendor.streams(model)

    def capabilities_for(self, model: str) -> Capabilities:
        return self.vendor.model_capabilities(model) or self.capabilities

    def _request(self, request: TranscriptionRequest, attempt: Attempt, *, stream: bool) -> httpx.Request:
        """A fresh upstream request (its body iterator is single-use; each attempt builds its own)."""
        filename, file_type = upload_filename(request.audio)
        content_type, length, body = multipart_body(
            to_wire_fields(request, attempt.model, stream=stream), "file", request.audio, filename, file_type
        )
        headers = {
            **self.vendor.auth_headers(attempt.key),
            "content-type": content_type,
            "content-length": str(length),
            "accept": "text/event-stream" if stream else "application/json",
        }
        read = self.config.network.stream_idle_timeout_in_seconds if stream else attempt.timeout
        timeout = httpx.Timeout(attempt.timeout, connect=self.config.network.connect_timeout_in_seconds, read=read)
        return self.client.build_request("POST", self._url(attempt), content=body, headers=headers, timeout=timeout)

    def _url(self, attempt: Attempt) -> str:
        """The vendor's URL, or ``base + custom_provider_config.request_path_overrides["transcription"]``."""
        base = self.config.network.base_url or self.vendor.default_base_url
        override = self.config.request_path_overrides.get("transcription")
        if override and base:
            return base.rstrip("/") + "/" + override.lstrip("/")
        return self.vendor.url_for(base, attempt)

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """One upstream call within ``attempt.timeout`` seconds, answer in canonical form."""
        fmt = request.response_format or "json"
        upstream = self._request(request, attempt, stream=False)
        response = await fetch(self.name, self.client, upstream, attempt, expect_json=fmt not in TEXT_FORMATS)
        if fmt in TEXT_FORMATS:
            return to_result(response.text, fmt)
        try:
            return to_result(parse_json(self.name, response), fmt)
        except GatewayError as exc:
            exc.provider = self.name
            raise

    async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamItem]:
        """Relay the upstream SSE as canonical events, or yield the whole transcript when it answers JSON.

        ``stream=true`` and the request's format go upstream as they are (the router chose the format: one
        the gateway can render a stream from). A model that streams answers SSE; one that does not ignores
        ``stream`` and answers JSON (OpenAI's whisper-1 does), which is yielded as one TranscriptionResult.
        Nothing runs until the first ``__anext__``, which opens the upstream response and raises
        UpstreamError for a non-2xx answer, or one neither SSE nor JSON, before any event. Consumers should
        close the iterator (``contextlib.aclosing``) so an abandoned stream releases its connection at once.
        """
        fmt = request.response_format or "json"
        answer = open_answer(
            self.name, self.client, self._request(request, attempt, stream=True), attempt,
            idle_timeout=self.config.network.stream_idle_timeout_in_seconds,
        )
        try:
            async for item in answer:
                if isinstance(item, Whole):
                    try:
                        yield to_result(parse_json(self.name, item.response), fmt)
                    except GatewayError as exc:
                        exc.provider = self.name
                        raise
                    return
                _, payload = item
                if payload.strip() == "[DONE]":
                    return
                data = event_json(self.name, payload)
                event = to_event(self.name, data) if isinstance(data, Mapping) else None
                if event is not None:
                    yield event
                    if isinstance(event, StreamDone):
                        return
            raise UpstreamUnavailable(f"{self.name} ended the stream before transcript.text.done", provider=self.name)
        finally:
            await answer.aclose()


# ----------------------------------------------------------------------------------------- vendors


def join_url(base: str | None, path: str, provider: str) -> str:
    """``base`` + ``path``; a base in the OpenAI SDK's style (``https://api.openai.com/v1``, what many users
    already export as OPENAI_BASE_URL) does not double the ``/v1``."""
    if not base:
        raise GatewayError(f"{provider}: no base URL configured (network_config.base_url)", provider=provider)
    root = base.rstrip("/")
    if path.startswith("/v1/") and root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + path


# OpenAI's gpt-4o(-mini)-transcribe answer json or text only, with no timings; they stream. They refuse
# audio longer than ~1,400 s (400 naming the duration); Azure's deployments of them ~1,500 s (AUDIO.md §2).
GPT4O_TRANSCRIBE = Capabilities(
    native_formats=frozenset({"json", "text"}), native_stream=True, word_timestamps=False,
    segment_timestamps=False, max_file_mb=25, max_duration_s=1400.0,
)
AZURE_GPT4O_MAX_SECONDS = 1500.0

# gpt-4o-transcribe-diarize: json, text and its own diarized_json (speaker-labelled segments); it streams.
GPT4O_DIARIZE = replace(
    GPT4O_TRANSCRIBE, native_formats=frozenset({"json", "text", "diarized_json"}), diarization=True
)


def _openai_model_capabilities(model: str) -> Capabilities | None:
    if gpt4o_diarize(model):
        return GPT4O_DIARIZE
    return GPT4O_TRANSCRIBE if gpt4o_transcribe(model) else None


def _azure_model_capabilities(model: str) -> Capabilities | None:
    """OpenAI's per model, with Azure's longer audio cap for the gpt-4o family."""
    caps = _openai_model_capabilities(model)
    return replace(caps, max_duration_s=AZURE_GPT4O_MAX_SECONDS) if caps is not None else None


OPENAI = Vendor(
    default_base_url="https://api.openai.com",
    url_for=lambda base, attempt: join_url(base, "/v1/audio/transcriptions", "openai"),
    auth_headers=bearer,
    capabilities=Capabilities(
        native_formats=ALL_FORMATS, native_stream=True, word_timestamps=True, segment_timestamps=True, max_file_mb=25
    ),
    streams=not_whisper,  # gpt-4o(-mini)-transcribe and newer models stream; an answer in JSON is streamed by us
    model_capabilities=_openai_model_capabilities,
)

# List prices (USD, late 2025; each provider's pricing page); governance's price table reads them.
OPENAI_PRICES = {
    "whisper-1": Price(per_second=per_minute(0.006)),
    "gpt-4o-transcribe": Price(per_second=per_minute(0.006), per_audio_token=6.0e-6, per_output_token=10.0e-6),
    "gpt-4o-mini-transcribe": Price(per_second=per_minute(0.003), per_audio_token=3.0e-6, per_output_token=5.0e-6),
}
GROQ_PRICES = {
    "whisper-large-v3": Price(per_second=per_hour(0.111)),
    "whisper-large-v3-turbo": Price(per_second=per_hour(0.04)),
    "distil-whisper-large-v3-en": Price(per_second=per_hour(0.02)),
}

GROQ = Vendor(
    default_base_url="https://api.groq.com/openai",
    url_for=lambda base, attempt: join_url(base, "/v1/audio/transcriptions", "groq"),
    auth_headers=bearer,
    capabilities=Capabilities(
        native_formats=frozenset({"json", "text", "verbose_json"}),
        native_stream=False,
        word_timestamps=True,
        segment_timestamps=True,
        max_file_mb=100,
    ),
)


# Azure deployment names: letters, digits, '-', '_', '.' (anything else would change the upstream URL)
_AZURE_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _azure_url(base: str | None, attempt: Attempt) -> str:
    """``{endpoint}/openai/deployments/{deployment}/audio/transcriptions?api-version=V``.

    The key's own endpoint wins (keys may live in different Azure resources); ``network_config.base_url``
    is the fallback for keys without one. ``attempt.model`` is the deployment (aliases applied).
    """
    azure = attempt.key.section(AZURE_KEY_SECTION) if attempt.key is not None else {}
    endpoint = azure.get("endpoint") or base
    version = azure.get("api_version") or AZURE_DEFAULT_API_VERSION
    deployment = attempt.model
    if not _AZURE_DEPLOYMENT.fullmatch(deployment) or deployment.strip(".") == "":
        raise ClientError(
            f"invalid Azure deployment name {deployment!r}: use letters, digits, '-', '_' and '.'",
            param="model",
        )
    path = f"/openai/deployments/{deployment}/audio/transcriptions"
    return str(httpx.URL(join_url(endpoint, path, "azure"), params={"api-version": version}))


def _azure_auth(key: KeyConfig | None) -> dict[str, str]:
    return {"api-key": key.value.reveal()} if key is not None and key.value else {}


AZURE_KEY_SECTION = "azure_key_config"
AZURE_CONFIG = ConfigSpec(
    key_sections={
        AZURE_KEY_SECTION: KeySection(
            {
                "endpoint": Field(string(env=True, non_empty=True), required=True),
                "api_version": Field(string(non_empty=True)),  # default AZURE_DEFAULT_API_VERSION
                # Entra ID (client credentials): accepted, not implemented; the key's value is sent instead.
                "client_id": Field(string(), use="unsupported"),
                "client_secret": Field(string(), use="unsupported"),
                "tenant_id": Field(string(), use="unsupported"),
                "scopes": Field(strings, use="unsupported"),
            },
            required=True,
            why="its endpoint",
        )
    },
    env_key="AZURE_OPENAI_API_KEY",
    env_sections={
        "AZURE_OPENAI_ENDPOINT": (AZURE_KEY_SECTION, "endpoint"),
        "AZURE_OPENAI_API_VERSION": (AZURE_KEY_SECTION, "api_version"),
    },
    env_required={"AZURE_OPENAI_ENDPOINT": "https://NAME.openai.azure.com"},
)

AZURE = Vendor(
    default_base_url=None,
    url_for=_azure_url,
    auth_headers=_azure_auth,
    capabilities=OPENAI.capabilities,
    streams=not_whisper,  # a deployment is named by its owner: ask each to stream (but whisper*), the answer decides
    # a guess from names like "gpt-4o-transcribe" (learned otherwise), with Azure's 1,500 s audio cap for them
    model_capabilities=_azure_model_capabilities,
)


def create_openai(config: ProviderConfig, client: httpx.AsyncClient) -> OpenAICompatible:
    return OpenAICompatible(config.id, config, client, OPENAI)


def create_azure(config: ProviderConfig, client: httpx.AsyncClient) -> OpenAICompatible:
    return OpenAICompatible(config.id, config, client, AZURE)


def create_groq(config: ProviderConfig, client: httpx.AsyncClient) -> OpenAICompatible:
    return OpenAICompatible(config.id, config, client, GROQ)
