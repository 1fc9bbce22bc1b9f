"""Fake upstreams speaking OpenAI's transcription protocol, and its Azure and Groq dialects.

Answers are derived from the request: the transcript is ``self.transcript`` (one word per 0.5 s), the
requested response_format and timestamp_granularities shape the body, ``stream=true`` on a streaming
model gets SSE. Errors follow the real services: wrong or missing key → 401 with the vendor's error JSON;
unsupported extension, format or model → 400/404. Anything can still be overridden per test with
``enqueue(Reply(...))`` (see ``tests.fakes.server``).

    FakeOpenAI  POST /v1/audio/transcriptions                         Authorization: Bearer
    FakeAzure   POST /openai/deployments/{dep}/audio/transcriptions   api-key, ?api-version required
    FakeGroq    POST /openai/v1/audio/transcriptions                  Bearer; json/text/verbose_json only
"""

from __future__ import annotations

import math
import re
from typing import Any

from bifrost_stt.kernel.settings import KeyConfig, NetworkConfig, ProviderConfig, Secret
from tests.fakes.server import FakeServer, Recorded, Reply, error_reply

OPENAI_KEY = "sk-test-openai-4f9a2c71e0b3"
AZURE_KEY = "azure-test-key-7d21c9e04a5b"
GROQ_KEY = "gsk_test_groq_93b0e6a1f27c"
SHARED_KEY = "sk-test-key"  # tests.support.provider()'s default key; every fake accepts it too
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
WORD_SECONDS = 0.5
SUPPORTED_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
ALL_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class FakeOpenAI(FakeServer):
    """OpenAI's /v1/audio/transcriptions. Settings are plain attributes, restored by ``reset()``."""

    path = "/v1/audio/transcriptions"
    vendor = "openai"

    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.keys: set[str] = {OPENAI_KEY, SHARED_KEY}
        self.transcript = TRANSCRIPT
        self.language = "english"
        self.models: set[str] = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"}
        # models beyond the gpt-4o family that stream and take json/text only (a model newer than any pattern)
        self.json_text_only: set[str] = set()
        self.done_marker = False  # also end streams with `data: [DONE]`
        self.event_delay = 0.0

    def reset(self) -> None:
        super().reset()
        self._defaults()

    # ------------------------------------------------------------------------------ config helpers

    def key(self, name: str = "k1", **kw: Any) -> KeyConfig:
        """A KeyConfig holding this fake's own (non-shared) key."""
        value = next(k for k in sorted(self.keys) if k != SHARED_KEY) if len(self.keys) > 1 else next(iter(self.keys))
        return KeyConfig(name=name, value=Secret(value), **kw)

    def provider_config(self, id: str | None = None, *, timeout: float = 5.0, **network: Any) -> ProviderConfig:
        """A ProviderConfig pointing at this fake, with one valid key."""
        return ProviderConfig(
            id=id or self.vendor,
            kind=self.vendor,
            keys=(self.key(),),
            network=NetworkConfig(base_url=self.base_url, default_request_timeout_in_seconds=timeout, **network),
        )

    @property
    def base_url(self) -> str:
        return self.url

    # ------------------------------------------------------------------------------ protocol hooks

    def route(self, request: Recorded) -> tuple[str | None, Reply | None]:
        """The model to answer as, or an error reply (wrong path, missing parameters)."""
        if request.method != "POST" or request.path != self.path:
            return None, error_reply(404, f"Invalid URL ({request.method} {request.path})")
        return request.field("model"), None

    def authorize(self, request: Recorded) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return error_reply(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = auth.removeprefix("Bearer ")
        if key not in self.keys:
            masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "***"
            return error_reply(
                401, f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", code="invalid_api_key"
            )
        return None

    def formats(self, model: str) -> tuple[str, ...]:
        if model.endswith("-diarize"):  # OpenAI: json, text and diarized_json
            return ("json", "text", "diarized_json")
        return ("json", "text") if self.streams(model) else ALL_FORMATS

    def streams(self, model: str) -> bool:
        return model.startswith("gpt-4o") or model in self.json_text_only

    def unknown_model(self, model: str) -> Reply:
        return error_reply(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )

    def decorate(self, body: dict[str, Any], request: Recorded) -> dict[str, Any]:
        """Vendor-specific additions to JSON bodies."""
        return body

    # ------------------------------------------------------------------------------ answering

    def handle(self, request: Recorded) -> Reply:
        model, failure = self.route(request)
        if failure is None:
            failure = self.authorize(request)
        if failure is not None:
            return failure
        if not model:
            return error_reply(400, "you must provide a model parameter", param="model")
        if model not in self.models:
            return self.unknown_model(model)
        file = request.file
        if file is None:
            return error_reply(400, "1 validation error for Request\nbody -> file\n  field required", param="file")
        ext = (file.filename or "").rsplit(".", 1)[-1].lower() if "." in (file.filename or "") else ""
        if ext not in SUPPORTED_EXTENSIONS:
            return error_reply(
                400, f"Invalid file format. Supported formats: {list(SUPPORTED_EXTENSIONS)}", param="file"
            )
        fmt = request.field("response_format") or "json"
        if fmt not in self.formats(model):
            return self.bad_format(model, fmt)
        if request.field("stream") == "true" and self.streams(model):
            return self.sse(request)
        return self.render(request, model, fmt)

    def bad_format(self, model: str, fmt: str) -> Reply:
        return error_reply(
            400, f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' or 'text' instead.",
            param="response_format", code="unsupported_value",
        )

    def words(self) -> list[dict[str, Any]]:
        return [
            {"word": w, "start": i * WORD_SECONDS, "end": (i + 1) * WORD_SECONDS}
            for i, w in enumerate(re.findall(r"[\w']+", self.transcript))
        ]

    def duration(self) -> float:
        return max(1, len(self.transcript.split())) * WORD_SECONDS

    def token_usage(self) -> dict[str, Any]:
        out = len(self.transcript.split()) + 2
        return {
            "type": "tokens", "input_tokens": 27, "input_token_details": {"text_tokens": 0, "audio_tokens": 27},
            "output_tokens": out, "total_tokens": 27 + out,
        }

    def usage(self, model: str) -> dict[str, Any] | None:
        if model.startswith("gpt-4o"):
            return self.token_usage()
        return {"type": "duration", "seconds": math.ceil(self.duration())}

    def render(self, request: Recorded, model: str, fmt: str) -> Reply:
        text, end = self.transcript, self.duration()
        if fmt == "text":
            return Reply(body=text + "\n", content_type="text/plain; charset=utf-8")
        if fmt == "srt":
            return Reply(body=f"1\n{_stamp(0, ',')} --> {_stamp(end, ',')}\n{text}\n\n", content_type="text/plain; charset=utf-8")
        if fmt == "vtt":
            return Reply(body=f"WEBVTT\n\n{_stamp(0, '.')} --> {_stamp(end, '.')}\n{text}\n\n", content_type="text/vtt; charset=utf-8")
        body: dict[str, Any] = {"text": text}
        if fmt == "diarized_json":  # OpenAI's shape: speaker A says the first half, B the rest
            words = self.words()
            half = max(1, len(words) // 2)
            turns = [(words[:half], "A"), (words[half:], "B")]
            body = {"task": "transcribe", "duration": end, "text": text, "segments": [
                {"type": "transcript.text.segment", "id": f"seg_{i}", "start": part[0]["start"], "end": part[-1]["end"],
                 "text": " ".join(w["word"] for w in part), "speaker": speaker}
                for i, (part, speaker) in enumerate(turns) if part
            ]}
        if fmt == "verbose_json":
            granularities = request.fields("timestamp_granularities[]") or ["segment"]
            body = {"task": "transcribe", "language": self.language, "duration": end, "text": text}
            if "word" in granularities:
                body["words"] = self.words()
            if "segment" in granularities:
                body["segments"] = [{
                    "id": 0, "seek": 0, "start": 0.0, "end": end, "text": " " + text, "tokens": [50364, 440, 1702],
                    "temperature": 0.0, "avg_logprob": -0.21, "compression_ratio": 1.1, "no_speech_prob": 0.01,
                }]
        if "logprobs" in request.fields("include[]") and model.startswith("gpt-4o"):
            body["logprobs"] = [{"token": w["word"], "logprob": -0.01, "bytes": list(w["word"].encode())} for w in self.words()]
        usage = self.usage(model)
        if usage is not None:
            body["usage"] = usage
        return Reply(body=self.decorate(body, request))

    def sse(self, request: Recorded) -> Reply:
        words = self.transcript.split()
        events: list[Any] = [
            {"type": "transcript.text.delta", "delta": (" " if i else "") + w} for i, w in enumerate(words)
        ]
        events.append({"type": "transcript.text.done", "text": self.transcript, "usage": self.token_usage()})
        if self.done_marker:
            events.append("[DONE]")
        return Reply(events=events, event_delay=self.event_delay)


class FakeAzure(FakeOpenAI):
    """Azure OpenAI: the deployment in the path decides the model, ``api-key`` header, api-version required."""

    vendor = "azure"
    _route = re.compile(r"^/openai/deployments/([^/]+)/audio/transcriptions$")

    def _defaults(self) -> None:
        super()._defaults()
        self.keys = {AZURE_KEY, SHARED_KEY}
        self.deployments: dict[str, str] = {
            "whisper": "whisper-1", "gpt-4o-transcribe": "gpt-4o-transcribe", "gpt-4o-mini-transcribe": "gpt-4o-mini-transcribe",
            "gpt-4o-transcribe-diarize": "gpt-4o-transcribe-diarize",
        }
        self.api_versions: set[str] | None = None  # None: any version is accepted

    def key(self, name: str = "k1", **kw: Any) -> KeyConfig:
        kw.setdefault("sections", {"azure_key_config": {"endpoint": self.url}})
        return super().key(name, **kw)

    def route(self, request: Recorded) -> tuple[str | None, Reply | None]:
        match = self._route.match(request.path)
        if request.method != "POST" or match is None:
            return None, Reply(status=404, body={"error": {"code": "404", "message": "Resource not found"}})
        version = request.params.get("api-version")
        if not version:
            return None, Reply(status=400, body={"error": {
                "code": "MissingApiVersionParameter",
                "message": "The api-version query parameter (?api-version=) is required for all requests.",
            }})
        if self.api_versions is not None and version not in self.api_versions:
            return None, Reply(status=404, body={"error": {"code": "404", "message": "Resource not found"}})
        deployment = match.group(1)
        if deployment not in self.deployments:
            return None, Reply(status=404, body={"error": {
                "code": "DeploymentNotFound",
                "message": "The API deployment for this resource does not exist. If you created the deployment "
                "within the last 5 minutes, please wait a moment and try again.",
            }})
        return self.deployments[deployment], None

    def authorize(self, request: Recorded) -> Reply | None:
        if request.headers.get("api-key") not in self.keys:
            return Reply(status=401, body={"error": {
                "code": "401",
                "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                "provide a valid key for an active subscription and use a correct regional API endpoint for "
                "your resource.",
            }})
        return None


class FakeGroq(FakeOpenAI):
    """Groq's OpenAI-compatible endpoint: whisper models, no srt/vtt, no streaming, ``x_groq`` in bodies."""

    vendor = "groq"
    path = "/openai/v1/audio/transcriptions"

    def _defaults(self) -> None:
        super()._defaults()
        self.keys = {GROQ_KEY, SHARED_KEY}
        self.models = {"whisper-large-v3", "whisper-large-v3-turbo", "distil-whisper-large-v3-en"}

    @property
    def base_url(self) -> str:
        return self.url + "/openai"

    def formats(self, model: str) -> tuple[str, ...]:
        return ("json", "text", "verbose_json")

    def streams(self, model: str) -> bool:
        return False

    def bad_format(self, model: str, fmt: str) -> Reply:
        return error_reply(400, "response_format must be one of [json text verbose_json]", param="response_format")

    def authorize(self, request: Recorded) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self.keys:
            return error_reply(401, "Invalid API Key", code="invalid_api_key")
        return None

    def unknown_model(self, model: str) -> Reply:
        return error_reply(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )

    def usage(self, model: str) -> dict[str, Any] | None:
        return None  # Groq's transcription bodies carry no usage object

    def decorate(self, body: dict[str, Any], request: Recorded) -> dict[str, Any]:
        return {**body, "x_groq": {"id": f"req_fake{len(self.requests):06d}"}}
