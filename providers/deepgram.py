"""Deepgram pre-recorded transcription as a transcriber: ``POST /v1/listen`` with the raw audio as the body.

    canonical TranscriptionRequest --to_wire_query------> query options (model, smart_format, language ...)
    audio                          --raw body-----------> Content-Type audio/* (never multipart, never JSON)
    listen JSON                    --to_result----------> TranscriptionResult (text, words, segments,
                                                          duration, language, duration usage)
    {"err_code", "err_msg", "request_id"}  --to_upstream_error--> UpstreamError

Translations (nothing is dropped silently; what Deepgram cannot take is a 400 naming the field):

    language      ``language=``
    prompt        key terms: split on commas, semicolons and new lines; each term one ``keyterm=`` on
                  Nova-3 (Keyterm Prompting) and one ``keywords=`` on older models (Keywords). A Whisper
                  prompt is a vocabulary hint, which is what both features are for.
    temperature   refused (Deepgram has no sampling temperature)
    granularities words always come back; a segment-level request (verbose_json without granularities,
                  or "segment") turns on ``utterances=true`` so segments are Deepgram's own utterances
    extra fields  Deepgram's transcription options in PASSTHROUGH go on the query unchanged (``diarize``,
                  ``punctuate``, ``utterances``, ``paragraphs``, ``detect_language`` ...); a client value
                  replaces our default (``smart_format=true``); any other field is refused
    stream        not native: the pre-recorded API answers once; the router synthesises the stream

Answer: channel 0's first alternative gives the text (channels joined by new lines with multichannel),
``words[].punctuated_word`` (else ``word``) the words, ``results.utterances`` or else the alternative's
``paragraphs`` sentences the segments, ``detected_language`` (else the requested language, else
Deepgram's default ``en``) the language, ``metadata.duration`` the duration and a duration usage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bifrost_stt.kernel import sniff
from bifrost_stt.kernel.canonical import Segment, TranscriptionRequest, TranscriptionResult, Usage, Word
from bifrost_stt.kernel.languages import language_of
from bifrost_stt.kernel.errors import ClientError, UpstreamError, UpstreamUnavailable, scrub
from bifrost_stt.kernel.settings import KeyConfig, ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, Price, per_minute
from bifrost_stt.providers.http import parse_json, sized_chunks, upload_filename
from bifrost_stt.providers.wire import fetch, key_secrets

DEFAULT_BASE_URL = "https://api.deepgram.com"
PATH = "/v1/listen"
DEFAULT_LANGUAGE = "en"  # what Deepgram transcribes in when neither language nor detection is asked for
PRICES = {"nova-3": Price(per_second=per_minute(0.0043)), "nova-2": Price(per_second=per_minute(0.0043))}  # USD, late 2025

CAPABILITIES = Capabilities(
    native_formats=frozenset({"json", "verbose_json"}),  # words and utterances map onto verbose_json
    native_stream=False,
    word_timestamps=True,
    segment_timestamps=True,  # utterances
    diarization=True,
    max_file_mb=2048,  # pre-recorded uploads up to 2 GB
)
# Deepgram's pre-recorded options that shape the transcript, passed through from extra form fields.
# Audio-intelligence options (summarize, topics, search ...) are left out: their results have no
# place in a transcription answer, so taking them would silently drop what the client paid for.
PASSTHROUGH = frozenset({
    "channels", "detect_language", "diarize", "dictation", "encoding", "filler_words", "keyterm", "keywords",
    "measurements", "mip_opt_out", "multichannel", "numerals", "paragraphs", "profanity_filter", "punctuate",
    "redact", "replace", "sample_rate", "smart_format", "tag", "utt_split", "utterances", "version",
})
_TERM_SPLIT = re.compile(r"[,;\n]+")

# ------------------------------------------------------------------------------------------ to wire


def to_key_terms(prompt: str | None) -> list[str]:
    """The prompt as key terms: split on commas, semicolons and new lines, blanks dropped, order kept."""
    if not prompt:
        return []
    return list(dict.fromkeys(t.strip() for t in _TERM_SPLIT.split(prompt) if t.strip()))


def uses_keyterm(model: str) -> bool:
    """Nova-3 (and Flux) take ``keyterm``; older models take ``keywords``."""
    name = model.lower()
    return name.startswith(("nova-3", "flux"))


def to_wire_query(request: TranscriptionRequest, model: str) -> list[tuple[str, str]]:
    """Query options in order: model, our defaults, translated fields, then the client's passthrough.

    Raises ClientError (400, naming the fields) for temperature and for extras Deepgram does not take.
    """
    if request.temperature is not None:
        raise ClientError("deepgram has no sampling temperature; omit temperature", param="temperature")
    unsupported = list(dict.fromkeys(name for name, _ in request.extra if name not in PASSTHROUGH))
    if unsupported:
        raise ClientError(
            f"deepgram does not take {', '.join(unsupported)}; "
            f"extra fields it accepts: {', '.join(sorted(PASSTHROUGH))}",
            param=unsupported[0],
        )
    given = {name for name, _ in request.extra}
    query: list[tuple[str, str]] = [("model", model)]
    if "smart_format" not in given:
        query.append(("smart_format", "true"))
    language = language_of(request.language)
    if language is not None:
        query.append(("language", language.tag))  # BCP-47: "en", "en-US"
    term = "keyterm" if uses_keyterm(model) else "keywords"
    query.extend((term, t) for t in to_key_terms(request.prompt))
    grans = request.timestamp_granularities
    wants_segments = "segment" in grans or (request.response_format == "verbose_json" and not grans)
    if wants_segments and not given & {"utterances", "paragraphs"}:
        query.append(("utterances", "true"))
    query.extend(request.extra)
    return query


def to_content_type(request: TranscriptionRequest) -> str:
    """An audio/* (or video/*) type for the body; ``audio/*`` when the format is unknown.

    Never JSON or multipart: Deepgram reads a JSON body as ``{"url": ...}`` and a multipart one as audio.
    """
    mime = upload_filename(request.audio)[1]
    if mime.startswith(("audio/", "video/")):
        return mime
    hinted = sniff.mime(request.file_format)
    return hinted if hinted.startswith("audio/") else "audio/*"


# ------------------------------------------------------------------------------------- to canonical


def _speaker(value: Any) -> str | None:
    return None if value is None else str(value)


def to_word(data: Mapping[str, Any]) -> Word:
    """``punctuated_word`` when Deepgram formatted the transcript, so words read like the text."""
    return Word(
        word=str(data.get("punctuated_word") or data.get("word") or ""),
        start=float(data.get("start", 0.0)),
        end=float(data.get("end", 0.0)),
        speaker=_speaker(data.get("speaker")),
    )


def to_segments(results: Mapping[str, Any], alternative: Mapping[str, Any]) -> tuple[Segment, ...]:
    """Utterances when present, else the sentences of the alternative's paragraphs, else none."""
    utterances = results.get("utterances") or ()
    if utterances:
        return tuple(
            Segment(id=i, start=float(u.get("start", 0.0)), end=float(u.get("end", 0.0)),
                    text=str(u.get("transcript") or ""), speaker=_speaker(u.get("speaker")))
            for i, u in enumerate(utterances) if isinstance(u, Mapping)
        )
    paragraphs = (alternative.get("paragraphs") or {}).get("paragraphs") or ()
    spans = [
        (s, p.get("speaker")) for p in paragraphs if isinstance(p, Mapping)
        for s in p.get("sentences") or () if isinstance(s, Mapping)
    ]
    return tuple(
        Segment(id=i, start=float(s.get("start", 0.0)), end=float(s.get("end", 0.0)),
                text=str(s.get("text") or ""), speaker=_speaker(speaker))
        for i, (s, speaker) in enumerate(spans)
    )


def to_result(provider: str, body: Any, language: str | None = None) -> TranscriptionResult:
    """A /v1/listen answer in canonical form (see the module docstring for where each field comes from)."""
    results = body.get("results") if isinstance(body, Mapping) else None
    channels = results.get("channels") if isinstance(results, Mapping) else None
    if not isinstance(results, Mapping) or not channels:
        raise UpstreamUnavailable(f"{provider} answered without results.channels", provider=provider)
    alternatives = [
        (ch, ch["alternatives"][0]) for ch in channels
        if isinstance(ch, Mapping) and ch.get("alternatives") and isinstance(ch["alternatives"][0], Mapping)
    ]
    if not alternatives:
        raise UpstreamUnavailable(f"{provider} answered without a transcript alternative", provider=provider)
    first_channel, first = alternatives[0]
    words = [to_word(w) for _, alt in alternatives for w in alt.get("words") or () if isinstance(w, Mapping)]
    if len(alternatives) > 1:
        words.sort(key=lambda w: (w.start, w.end))
    metadata = body.get("metadata") or {}
    duration = metadata.get("duration")
    detected = first_channel.get("detected_language") or next(iter(first.get("languages") or ()), None)
    return TranscriptionResult(
        text="\n".join(str(alt.get("transcript") or "") for _, alt in alternatives),
        language=str(detected or language or DEFAULT_LANGUAGE),
        duration=None if duration is None else float(duration),
        segments=to_segments(results, first),
        words=tuple(words),
        usage=None if duration is None else Usage(type="duration", seconds=math.ceil(float(duration))),
        extra={"request_id": metadata["request_id"]} if metadata.get("request_id") else {},
    )


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
                403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error"}


def to_upstream_error(
    provider: str,
    status: int,
    data: Any,
    *,
    key: KeyConfig | None = None,
    secrets: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> UpstreamError | None:
    """Deepgram's error body as an UpstreamError; None when the body is neither of its shapes.

    Two shapes exist: ``{err_code, err_msg, request_id}`` (most errors) and ``{category, message,
    details, request_id}`` (newer validation errors). A rejected key is named, never shown.
    """
    if not isinstance(data, Mapping):
        return None
    message = data.get("err_msg") or data.get("message")
    if not message:
        return None
    text = str(message)
    if data.get("details") and str(data["details"]) not in text:
        text += f": {data['details']}"
    text = scrub(text, secrets)
    if key is not None and status in (401, 403):
        text += f" (key {key.name!r})"
    code = data.get("err_code") or data.get("category")
    request_id = data.get("request_id")
    return UpstreamError(
        text,
        status=status,
        error_type=_ERROR_TYPES.get(status, "api_error"),
        code=None if code is None else str(code),
        provider=provider,
        headers=headers,
        extra={"upstream_request_id": str(request_id)} if request_id else None,
    )


# ------------------------------------------------------------------------------------------ adapter


class Deepgram:
    """Transcriber over Deepgram's pre-recorded API (no StreamingTranscriber: it answers once)."""

    capabilities = CAPABILITIES

    def __init__(self, name: str, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self.client = client

    def _url(self) -> str:
        base = (self.config.network.base_url or DEFAULT_BASE_URL).rstrip("/")
        return base + "/" + (self.config.request_path_overrides.get("transcription") or PATH).lstrip("/")

    def _request(self, request: TranscriptionRequest, attempt: Attempt) -> httpx.Request:
        headers = {
            "content-type": to_content_type(request),
            "content-length": str(request.audio.size),
            "accept": "application/json",
        }
        if attempt.key is not None and attempt.key.value:
            headers["authorization"] = f"Token {attempt.key.value.reveal()}"
        timeout = httpx.Timeout(attempt.timeout, connect=self.config.network.connect_timeout_in_seconds)
        return self.client.build_request(
            "POST", self._url(), params=tuple(to_wire_query(request, attempt.model)),
            content=sized_chunks(request.audio),
            headers=headers, timeout=timeout,
        )

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """One /v1/listen call within ``attempt.timeout`` seconds, answer in canonical form."""
        secrets = key_secrets(attempt)

        def vendor_error(status: int, data: Any, headers: Mapping[str, str]) -> UpstreamError | None:
            return to_upstream_error(self.name, status, data, key=attempt.key, secrets=secrets, headers=headers)

        response = await fetch(self.name, self.client, self._request(request, attempt), attempt,
                               vendor_error=vendor_error)
        return to_result(self.name, parse_json(self.name, response), request.language)


def create(config: ProviderConfig, client: httpx.AsyncClient) -> Deepgram:
    return Deepgram(config.id, config, client)
