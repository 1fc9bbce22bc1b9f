"""Hugging Face Inference Providers, automatic-speech-recognition task.

    POST {base=https://router.huggingface.co}/{inference provider}/models/{org}/{model}   Authorization: Bearer hf_...

Model strings are upstream Bifrost's: ``<inference provider>/<org>/<model>`` (the request says
``huggingface/hf-inference/openai/whisper-large-v3``, called at ``{base}/hf-inference/models/openai/whisper-large-v3``);
``<org>/<model>`` is a shorthand for the ``hf-inference`` provider. A base URL that already names a route
(``…/hf-inference``, this gateway's earlier default) or a dedicated endpoint is used as it is: ``{base}/models/{model}``.

    canonical request --to_parameters--> {"return_timestamps": ..., "generation_parameters": {...}}
                                          or a 400 naming what the task cannot take (language, prompt ...)
    no parameters, hf-inference route --> the raw audio as the body (Content-Type audio/*)
    parameters, or any other route   --> {"inputs": "<base64 audio>", "parameters": {...}}
    {text, chunks?[{text, timestamp: [start, end]}]} --to_result--> TranscriptionResult
    {"error": "..."} / {"error": ["...", ...]}        --to_error---> UpstreamError (HF's status, message)

Both bodies are streamed from the spooled upload (the JSON one base64-encodes on the fly), so a large
file is never held in memory twice. The task returns a transcript and, when asked, timed chunks:
``return_timestamps: true`` gives phrase chunks (canonical segments), ``"word"`` gives words. It renders
no OpenAI formats and does not stream; ``json`` and ``verbose_json`` below mean "transcript" and
"transcript with timings", and the gateway renders text/srt/vtt and synthesizes streams from them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bifrost_stt.kernel.canonical import AudioSource, Segment, TranscriptionRequest, TranscriptionResult, Word
from bifrost_stt.kernel.errors import ClientError, GatewayError, UpstreamError, UpstreamUnavailable, scrub
from bifrost_stt.kernel.settings import ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities
from bifrost_stt.providers.http import base64_chunks, base64_length, parse_json, sized_chunks, upload_filename
from bifrost_stt.providers.wire import fetch, key_secrets
from bifrost_stt.providers.openai_compat import bearer

DEFAULT_BASE_URL = "https://router.huggingface.co"  # upstream Bifrost's: the router, inference provider in the path
RAW_ROUTE = "hf-inference"  # the route that takes raw audio when there are no parameters
# one path segment of a model string: an inference provider, an org or a repository name (never "." or "..")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
GENERATION = "generation_parameters"

HUGGINGFACE = Capabilities(
    native_formats=frozenset({"json", "verbose_json"}),
    native_stream=False,
    word_timestamps=True,
    segment_timestamps=True,
)

# Canonical fields the task has no parameter for: refused by name rather than dropped.
_UNSUPPORTED = ("language", "prompt")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

# ------------------------------------------------------------------------------------------ to wire


def _form_value(raw: str) -> Any:
    """A multipart string as the JSON value it spells ("5" -> 5, "true" -> True), else the string."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def to_timestamps(request: TranscriptionRequest) -> bool | str | None:
    """``return_timestamps`` for the requested timings: "word", True (segments), or None (none asked).

    One call yields one kind: when both are asked, words win (the gateway can cue subtitles from
    words, but cannot split segments into words).
    """
    if request.response_format != "verbose_json":
        return None
    return "word" if "word" in request.timestamp_granularities else True


def to_parameters(provider: str, request: TranscriptionRequest) -> dict[str, Any]:
    """The task's ``parameters`` object; ClientError (400) naming every field it cannot take."""
    refused = [name for name in _UNSUPPORTED if getattr(request, name)]
    generation: dict[str, Any] = {}
    if request.temperature is not None:
        # Hub generation is greedy unless sampling is on; temperature means nothing without it.
        generation["do_sample"] = request.temperature > 0
        if request.temperature > 0:
            generation["temperature"] = request.temperature
    for name, value in request.extra:
        if name.startswith(f"{GENERATION}[") and name.endswith("]") and len(name) > len(GENERATION) + 2:
            generation[name[len(GENERATION) + 1 : -1]] = _form_value(value)
        else:
            refused.append(name)
    if refused:
        names = ", ".join(dict.fromkeys(refused))
        raise ClientError(
            f"{provider} cannot take {names}: its automatic-speech-recognition task has no such parameter "
            f"(it takes temperature and {GENERATION}[<name>] fields); leave them out or route the request "
            "to a provider that takes them",
            param=refused[0],
            code="unsupported_parameter",
            provider=provider,
            model=request.model,
        )
    parameters: dict[str, Any] = {}
    timestamps = to_timestamps(request)
    if timestamps is not None:
        parameters["return_timestamps"] = timestamps
    if generation:
        parameters[GENERATION] = generation
    return parameters


def split_route(model: str) -> tuple[str | None, str]:
    """``<inference provider>/<org>/<model>`` -> (provider, "org/model"); ``org/model`` or ``model`` -> (None, model).

    Every segment must be a plain name: the model string becomes path segments of the upstream URL.
    """
    parts = model.split("/")
    if not all(_SEGMENT.fullmatch(p) for p in parts) or len(parts) > 3:
        raise ClientError(
            f"invalid Hugging Face model {model!r}: use <inference provider>/<org>/<model> "
            "(e.g. hf-inference/openai/whisper-large-v3) or <org>/<model>; names take letters, digits, '-', '_', '.'",
            param="model",
        )
    if len(parts) == 3:
        return parts[0], f"{parts[1]}/{parts[2]}"
    return None, model


def route_base(base: str, route: str | None) -> str:
    """The URL that ``/models/{org}/{model}`` is appended to.

    The router itself (a base without a path, upstream's form) gets the inference provider as a path segment
    (``hf-inference`` when the model string names none); a base naming the hf-inference route (this gateway's
    earlier default) is moved to the provider a model string names; any other base is an endpoint, used as is.
    """
    base = base.rstrip("/")
    path = urlsplit(base).path
    if not path:
        return f"{base}/{route or RAW_ROUTE}"
    if route and path.endswith("/" + RAW_ROUTE) and route != RAW_ROUTE:
        return base[: -len(RAW_ROUTE)] + route
    return base


def accepts_raw(base_url: str) -> bool:
    """Only the router's hf-inference route reads a raw audio body; other routes and endpoints want JSON."""
    return urlsplit(base_url).path.rstrip("/").endswith("/" + RAW_ROUTE)


def json_body(audio: AudioSource, parameters: Mapping[str, Any]) -> tuple[int, AsyncIterator[bytes]]:
    """``(content-length, stream)`` of ``{"inputs": "<base64>", "parameters": {...}}``."""
    head = b'{"inputs":"'
    tail = b'","parameters":' + orjson.dumps(dict(parameters)) + b"}"
    length = len(head) + base64_length(audio.size) + len(tail)

    async def stream() -> AsyncIterator[bytes]:
        yield head
        async for piece in base64_chunks(audio):
            yield piece
        yield tail

    return length, stream()


# ------------------------------------------------------------------------------------- to canonical


def _span(chunk: Mapping[str, Any]) -> tuple[float, float]:
    """``timestamp: [start, end]``; Whisper leaves the end of a cut-off last chunk null."""
    stamp = chunk.get("timestamp") or (0.0, None)
    start = float(stamp[0] or 0.0)
    end = stamp[1] if len(stamp) > 1 else None
    return start, max(start, float(end)) if end is not None else start


def to_result(body: Any, timestamps: bool | str | None) -> TranscriptionResult:
    """The task's output in canonical form: chunks become words ("word") or segments (True)."""
    if isinstance(body, list) and len(body) == 1:  # some deployments wrap the single output in a list
        body = body[0]
    if not isinstance(body, Mapping) or not isinstance(body.get("text"), str):
        raise UpstreamUnavailable("the upstream transcription has no text")
    chunks = [c for c in body.get("chunks") or () if isinstance(c, Mapping)]
    words: tuple[Word, ...] = ()
    segments: tuple[Segment, ...] = ()
    if timestamps == "word":
        words = tuple(Word(str(c.get("text") or "").strip(), *_span(c)) for c in chunks)
    elif chunks:
        segments = tuple(Segment(i, *_span(c), text=str(c.get("text") or "")) for i, c in enumerate(chunks))
    return TranscriptionResult(
        text=body["text"],
        segments=segments,
        words=words,
        extra={k: v for k, v in body.items() if k not in ("text", "chunks")},
    )


def to_error(
    provider: str, status: int, data: Any, headers: Mapping[str, str], secrets: tuple[str, ...]
) -> UpstreamError | None:
    """HF's ``{"error": "..."}`` / ``{"error": [...]}`` as an UpstreamError; None for any other shape.

    A model still loading answers 503 with ``estimated_time``: it becomes Retry-After for the router.
    """
    if not isinstance(data, Mapping):
        return None
    error = data.get("error")
    if isinstance(error, list) and error:
        message = "; ".join(str(e) for e in error)
    elif isinstance(error, str) and error:
        message = error
    else:
        return None
    retry = {k: headers[k] for k in ("retry-after",) if k in headers}
    if "retry-after" not in retry and isinstance(data.get("estimated_time"), (int, float)):
        retry["retry-after"] = str(max(1, round(data["estimated_time"])))
    return UpstreamError(
        scrub(message, secrets),
        status=status,
        error_type=_ERROR_TYPES.get(status, "api_error"),
        code=None if data.get("error_type") is None else str(data["error_type"]),
        provider=provider,
        headers=retry,
    )


# ------------------------------------------------------------------------------------------ adapter


class HuggingFace:
    """Transcriber for the Hub's automatic-speech-recognition task (no native streaming)."""

    capabilities = HUGGINGFACE

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = config.id
        self.config = config
        self.client = client

    @property
    def base_url(self) -> str:
        return (self.config.network.base_url or DEFAULT_BASE_URL).rstrip("/")

    def locate(self, model: str) -> tuple[str, str]:
        """(the route's base, the full URL) for ``model``: ``{route base}/models/{org}/{model}``, or
        ``base + request_path_overrides["transcription"]`` ({model} filled with the model string)."""
        base = self.base_url
        override = self.config.request_path_overrides.get("transcription")
        if override:
            return base, base + "/" + override.replace("{model}", model).lstrip("/")
        route, repo = split_route(model)
        routed = route_base(base, route)
        return routed, f"{routed}/models/{repo}"

    def url(self, model: str) -> str:
        return self.locate(model)[1]

    def _request(self, request: TranscriptionRequest, attempt: Attempt) -> httpx.Request:
        """A fresh upstream request: raw audio when the route allows it and nothing else is asked."""
        parameters = to_parameters(self.name, request)
        routed, url = self.locate(attempt.model)
        headers = {**bearer(attempt.key), "accept": "application/json"}  # none when key-less
        if not parameters and accepts_raw(routed):
            headers["content-type"] = upload_filename(request.audio)[1]
            length, body = request.audio.size, sized_chunks(request.audio)
        else:
            headers["content-type"] = "application/json"
            length, body = json_body(request.audio, parameters)
        headers["content-length"] = str(length)
        timeout = httpx.Timeout(attempt.timeout, connect=self.config.network.connect_timeout_in_seconds)
        return self.client.build_request("POST", url, content=body, headers=headers, timeout=timeout)

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """One upstream call within ``attempt.timeout`` seconds, answer in canonical form."""
        secrets = key_secrets(attempt)
        upstream = self._request(request, attempt)  # refusals (400) happen here, before any I/O
        response = await fetch(
            self.name, self.client, upstream, attempt,
            vendor_error=lambda status, data, headers: to_error(self.name, status, data, headers, secrets),
        )
        try:
            return to_result(parse_json(self.name, response), to_timestamps(request))
        except GatewayError as exc:
            exc.provider = self.name
            raise


def create(config: ProviderConfig, client: httpx.AsyncClient) -> HuggingFace:
    return HuggingFace(config, client)
