"""A fake Mistral transcription API on 127.0.0.1, speaking its wire protocol.

    POST /v1/audio/transcriptions   Authorization: Bearer KEY   multipart: model, file, language, temperature,
                                    timestamp_granularities (repeated), diarize, context_bias (repeated), stream

Answers the way Mistral documents it: one JSON object {model, text, language, segments[], usage{prompt_tokens,
completion_tokens, total_tokens, prompt_audio_seconds}}; segments only when timestamp_granularities is sent
(one chunk per word for ``word``), speaker_id when diarize=true. ``stream=true`` answers SSE frames
``event: <type>`` + ``data: <json with type>``: transcription.language, transcription.text.delta (per word),
transcription.segment, transcription.done. Errors: 401 ``{"message": "Unauthorized", "request_id"}``; unknown
model 400 ``{"object": "error", "message", "type": "invalid_model", "code": "1500"}``; language together with
timestamps 400; a field Mistral does not define (``prompt``, ``response_format`` ...) or a missing one 422 with
FastAPI's detail list nested in ``message`` (strict on purpose, so a provider sending OpenAI fields shows up).
"""

from __future__ import annotations

import json
import math
from typing import Any

from tests.fakes.server import Recorded, Reply
from tests.fakes.vendor import VendorFake

MISTRAL_KEY = "mistral-test-key-5c8e1f27a9d4"
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
WORD_SECONDS = 0.5
FIELDS = frozenset({"model", "file", "language", "temperature", "timestamp_granularities", "diarize",
                    "context_bias", "stream"})


def mistral_error(status: int, message: Any, type_: str, *, code: Any = None, param: Any = None) -> Reply:
    return Reply(status=status, body={"object": "error", "message": message, "type": type_, "param": param, "code": code})


def validation_error(field: str, msg: str, kind: str) -> Reply:
    detail = [{"type": kind, "loc": ["body", field], "msg": msg, "input": None}]
    return mistral_error(422, {"detail": detail}, "invalid_request_message_error")


def sse_body(frames: list[dict[str, Any]]) -> Reply:
    """One ``event:`` + ``data:`` frame per dict, as Mistral frames them."""
    text = "".join(f"event: {f['type']}\ndata: {json.dumps(f)}\n\n" for f in frames)
    return Reply(body=text, content_type="text/event-stream")


class FakeMistral(VendorFake):
    """Mistral's /v1/audio/transcriptions. Settings are plain attributes, restored by ``reset()``."""

    vendor = "mistral"
    own_key = MISTRAL_KEY
    key_name = "MISTRAL_API_KEY"

    path = "/v1/audio/transcriptions"

    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.keys: set[str] = {MISTRAL_KEY}
        self.transcript = TRANSCRIPT
        self.language: str | None = "en"
        self.models: set[str] = {"voxtral-mini-latest", "voxtral-small-latest", "voxtral-mini-2507"}

    def reset(self) -> None:
        super().reset()
        self._defaults()



    # ------------------------------------------------------------------------------ answering

    def handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != self.path:
            return Reply(status=404, body={"detail": "Not Found"})
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.keys:
            return Reply(status=401, body={"message": "Unauthorized", "request_id": "0f5e2a9c41b7d3e8"})
        for name in request.names:
            if name not in FIELDS:
                return validation_error(name, "Extra inputs are not permitted", "extra_forbidden")
        model = request.field("model")
        if not model:
            return validation_error("model", "Field required", "missing")
        if request.file is None:
            return mistral_error(400, "One of file, file_url or file_id must be provided", "invalid_request_error")
        if model not in self.models:
            return mistral_error(400, f"Invalid model: {model}", "invalid_model", code="1500")
        granularities = request.fields("timestamp_granularities")
        if granularities and request.field("language"):
            return mistral_error(
                400, "timestamp_granularities is not compatible with language", "invalid_request_error"
            )
        body = self.body(model, granularities, diarize=request.field("diarize") == "true",
                         language=request.field("language"))
        if request.field("stream") == "true":
            return self.stream(body)
        return Reply(body=body)

    def words(self) -> list[str]:
        return self.transcript.split()

    def body(self, model: str, granularities: list[str], *, diarize: bool, language: str | None) -> dict[str, Any]:
        words = self.words()
        end = len(words) * WORD_SECONDS
        body: dict[str, Any] = {
            "model": model,
            "text": self.transcript,
            "language": language or self.language,
            "usage": {
                "prompt_audio_seconds": math.ceil(end), "prompt_tokens": 4,
                "completion_tokens": len(words) + 2, "total_tokens": len(words) + 6, "request_count": 1,
            },
        }
        if "word" in granularities:
            body["segments"] = [
                {"type": "transcription_segment", "text": (" " if i else "") + w,
                 "start": i * WORD_SECONDS, "end": (i + 1) * WORD_SECONDS}
                for i, w in enumerate(words)
            ]
        elif granularities or diarize:
            half = max(1, len(words) // 2)
            body["segments"] = [
                {"type": "transcription_segment", "text": " ".join(words[:half]), "start": 0.0,
                 "end": half * WORD_SECONDS},
                {"type": "transcription_segment", "text": " " + " ".join(words[half:]),
                 "start": half * WORD_SECONDS, "end": end},
            ]
        if diarize:
            for i, segment in enumerate(body.get("segments", [])):
                segment["speaker_id"] = f"speaker_{i % 2 + 1}"
        return body

    def stream(self, body: dict[str, Any]) -> Reply:
        frames: list[dict[str, Any]] = [{"type": "transcription.language", "audio_language": body["language"]}]
        frames += [{"type": "transcription.text.delta", "text": (" " if i else "") + w}
                   for i, w in enumerate(self.words())]
        frames += [{"type": "transcription.segment", **{k: v for k, v in s.items() if k != "type"}}
                   for s in body.get("segments", [])]
        frames.append({"type": "transcription.done", **body, "segments": body.get("segments", [])})
        return sse_body(frames)
