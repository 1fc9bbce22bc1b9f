"""ElevenLabs Scribe: ``POST {base}/v1/speech-to-text``, ``xi-api-key`` header, multipart in, one JSON answer out.

    canonical TranscriptionRequest --to_wire_fields--> multipart (model_id first, file last) + query
    JSON {language_code, text, words[], audio_duration_secs} --to_result--> TranscriptionResult
    JSON {detail: {status, message}} | {detail: [...]}       --to_error_body--> OpenAI-style error

Decisions, and why:
- Formats. One JSON answer with word timings, no segments: ``json``, ``text`` and ``verbose_json`` are mapped
  from it (``native_formats``); srt/vtt and verbose_json's segments are built by ``bifrost_stt.gateway.render.formats`` from the
  words (``render.plan.ask_provider`` asks for verbose_json with word timings). No native streaming: the gateway
  synthesizes streams from the result.
- Words. ``words[]`` mixes ``word``, ``spacing`` and ``audio_event`` items; only ``word`` items become canonical
  words (speaker from ``speaker_id``). ``text`` is kept as ElevenLabs wrote it (audio events such as
  "(laughter)" included unless ``tag_audio_events=false``). Multichannel answers (``transcripts[]``) are joined:
  texts line by line, words in time order, a word's speaker falling back to ``channel_<n>``.
- Language. The contract's ``language`` is ISO-639-1, as in the request field; ElevenLabs answers ISO-639-3
  ("eng"), mapped back with ``bifrost_stt.kernel.languages`` (codes it does not list pass through unchanged).
  OpenAI's verbose_json says "english" instead. The request's ``language`` goes out as ``language_code`` in
  ElevenLabs' own ISO-639-3 form ("en" -> "eng").
- Usage. ElevenLabs bills audio duration: ``Usage(type="duration", seconds=ceil(audio_duration_secs))`` when
  the answer carries it. Logprobs: ``include[]=logprobs`` (OpenAI's switch) is translated, not refused: the
  word and spacing items' ``logprob`` become canonical logprobs whose tokens concatenate to the text.
- Passed through as form fields: ``PASSTHROUGH`` (diarize, num_speakers, tag_audio_events, keyterms ...);
  ``enable_logging`` goes to the query string as ElevenLabs expects. ``prompt`` and every other extra field
  (webhooks, cloud_storage_url, additional_formats ...) are refused with a 400 naming them: their effect would
  be lost on the way back, or they would make the call asynchronous.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from bifrost_stt.kernel.canonical import Logprob, TranscriptionRequest, TranscriptionResult, Usage, Word
from bifrost_stt.kernel.languages import language_of, to_iso_639_1
from bifrost_stt.kernel.errors import ClientError, GatewayError, UpstreamUnavailable
from bifrost_stt.kernel.settings import ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities
from bifrost_stt.providers.http import multipart_body, parse_json, upload_filename
from bifrost_stt.providers.wire import fetch

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
PATH = "/v1/speech-to-text"
ELEVENLABS = Capabilities(
    native_formats=frozenset({"json", "text", "verbose_json"}),
    native_stream=False,
    word_timestamps=True,
    segment_timestamps=False,
    diarization=True,
    max_file_mb=3072,  # ElevenLabs: files up to 3 GB
)
PASSTHROUGH = frozenset({
    "diarize", "num_speakers", "tag_audio_events", "diarization_threshold", "timestamps_granularity",
    "keyterms", "seed", "use_multi_channel", "file_format",
})
QUERY_FIELDS = frozenset({"enable_logging"})
FILE_FORMATS = frozenset({"pcm_s16le_16", "other"})  # ElevenLabs' own file_format values


# ------------------------------------------------------------------------------------------ to wire


def wants_logprobs(request: TranscriptionRequest) -> bool:
    return any(name in ("include[]", "include") and value == "logprobs" for name, value in request.extra)


def to_wire_fields(request: TranscriptionRequest, model: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``(multipart text fields in wire order, query parameters)``; ClientError (400) naming what cannot go."""
    if request.prompt:
        raise ClientError(
            "elevenlabs takes no prompt; send vocabulary hints as repeated keyterms form fields instead",
            param="prompt",
        )
    extra = [(name.removesuffix("[]"), value) for name, value in request.extra]
    unknown = [n for n, v in extra if n not in PASSTHROUGH | QUERY_FIELDS and not (n == "include" and v == "logprobs")]
    if unknown:
        raise ClientError(
            f"elevenlabs does not take the form field(s) {', '.join(dict.fromkeys(unknown))} through this gateway; "
            f"it passes through {', '.join(sorted(PASSTHROUGH | QUERY_FIELDS))}",
            param=unknown[0],
        )
    fields: list[tuple[str, str]] = [("model_id", model)]
    language = language_of(request.language)
    if language is not None:
        fields.append(("language_code", language.alpha_3))  # ElevenLabs' own code form: "eng"
    if request.temperature is not None:
        fields.append(("temperature", repr(float(request.temperature))))
    names = {n for n, _ in extra}
    if request.response_format == "verbose_json" and "timestamps_granularity" not in names:
        fields.append(("timestamps_granularity", "word"))
    if request.file_format in FILE_FORMATS and "file_format" not in names:
        fields.append(("file_format", request.file_format))
    fields.extend((n, v) for n, v in extra if n in PASSTHROUGH)
    return fields, {n: v for n, v in extra if n in QUERY_FIELDS}


# ------------------------------------------------------------------------------------- to canonical


def to_language(code: Any) -> str | None:
    """ISO-639-1 for ElevenLabs' ISO-639-3 code; unknown codes unchanged; None for none."""
    return to_iso_639_1(code)


def to_words(items: Sequence[Any], channel: int | None = None) -> tuple[Word, ...]:
    """The ``word`` items only (spacing and audio events dropped), speaker from ``speaker_id``."""
    words = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("type", "word") != "word":
            continue
        start = item.get("start")
        end = item.get("end")
        speaker = item.get("speaker_id")
        if speaker is None and channel is not None:
            speaker = f"channel_{item.get('channel_index', channel)}"
        words.append(Word(
            word=str(item.get("text") or ""),
            start=float(start) if start is not None else 0.0,
            end=float(end) if end is not None else float(start or 0.0),
            speaker=speaker,
        ))
    return tuple(words)


def to_logprobs(items: Sequence[Any]) -> tuple[Logprob, ...]:
    """Word and spacing items with a ``logprob``, in order (their texts concatenate to the transcript)."""
    return tuple(
        Logprob(token=str(i.get("text") or ""), logprob=float(i["logprob"]), bytes=tuple(str(i.get("text") or "").encode()))
        for i in items
        if isinstance(i, Mapping) and i.get("type") in ("word", "spacing") and isinstance(i.get("logprob"), (int, float))
    )


def to_result(body: Any, *, logprobs: bool = False) -> TranscriptionResult:
    """ElevenLabs' answer (single or multichannel) in canonical form; other keys go to ``extra``."""
    if isinstance(body, Mapping) and isinstance(body.get("transcripts"), list):
        chunks = [c for c in body["transcripts"] if isinstance(c, Mapping)]
        channels: list[int | None] = [c.get("channel_index", i) for i, c in enumerate(chunks)]
    else:
        chunks, channels = [body], [None]
    if not chunks or not all(isinstance(c, Mapping) and isinstance(c.get("text"), str) for c in chunks):
        raise UpstreamUnavailable("elevenlabs answered without a transcription text")
    items = [w for c in chunks for w in c.get("words") or ()]
    words = tuple(sorted((w for c, ch in zip(chunks, channels) for w in to_words(c.get("words") or (), ch)),
                         key=lambda w: w.start))
    first = chunks[0]
    seconds = body.get("audio_duration_secs", first.get("audio_duration_secs"))
    duration = float(seconds) if isinstance(seconds, (int, float)) else (max(w.end for w in words) if words else None)
    known = {"text", "words", "language_code", "audio_duration_secs", "transcripts"}
    return TranscriptionResult(
        text="\n".join(c["text"] for c in chunks),
        language=to_language(first.get("language_code")),
        duration=duration,
        words=words,
        logprobs=to_logprobs(items) if logprobs else (),
        usage=Usage(type="duration", seconds=math.ceil(seconds)) if isinstance(seconds, (int, float)) else None,
        extra={k: v for k, v in body.items() if k not in known},
    )


def to_error_body(status: int, body: bytes) -> bytes | None:
    """ElevenLabs' ``{"detail": {status, message}}`` / FastAPI ``{"detail": [...]}`` as an OpenAI-style error."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    detail = data.get("detail") if isinstance(data, Mapping) else None
    code = param = None
    if isinstance(detail, Mapping):
        message, code = detail.get("message") or detail.get("status"), detail.get("status")
        param = detail.get("param")
    elif isinstance(detail, list):
        parts = []
        for item in detail:
            loc = [str(p) for p in (item.get("loc") or ()) if p != "body"] if isinstance(item, Mapping) else []
            param = param or (loc[-1] if loc else None)
            parts.append(f"{'.'.join(loc) or 'request'}: {item.get('msg', 'invalid') if isinstance(item, Mapping) else item}")
        message = "; ".join(parts)
    else:
        return None
    kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "api_error"
    )
    return orjson.dumps({"error": {"message": str(message), "type": kind, "code": code, "param": param}})


# ------------------------------------------------------------------------------------------ adapter


class ElevenLabs:
    """Transcriber for ElevenLabs Scribe (no native streaming: the router synthesizes streams)."""

    capabilities = ELEVENLABS

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = config.id
        self.config = config
        self.client = client

    def _url(self) -> str:
        base = (self.config.network.base_url or DEFAULT_BASE_URL).rstrip("/")
        return base + "/" + self.config.request_path_overrides.get("transcription", PATH).lstrip("/")

    def _request(self, request: TranscriptionRequest, attempt: Attempt) -> httpx.Request:
        """A fresh upstream request (its body iterator is single-use; each attempt builds its own)."""
        fields, query = to_wire_fields(request, attempt.model)
        filename, file_type = upload_filename(request.audio)
        content_type, length, body = multipart_body(fields, "file", request.audio, filename, file_type)
        headers = {"content-type": content_type, "content-length": str(length), "accept": "application/json"}
        if attempt.key is not None and attempt.key.value:
            headers["xi-api-key"] = attempt.key.value.reveal()
        timeout = httpx.Timeout(attempt.timeout, connect=self.config.network.connect_timeout_in_seconds)
        return self.client.build_request(
            "POST", self._url(), params=query or None, content=body, headers=headers, timeout=timeout
        )

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """One upstream call within ``attempt.timeout`` seconds, answer in canonical form.

        ElevenLabs' error bodies are made OpenAI-style first; the router names a rejected key.
        """
        upstream = self._request(request, attempt)
        response = await fetch(self.name, self.client, upstream, attempt, rewrite_error=to_error_body)
        try:
            return to_result(parse_json(self.name, response), logprobs=wants_logprobs(request))
        except GatewayError as exc:
            exc.provider = self.name
            raise


def create(config: ProviderConfig, client: httpx.AsyncClient) -> ElevenLabs:
    return ElevenLabs(config, client)
