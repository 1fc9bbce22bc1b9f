"""A fake Gemini API speaking the real wire protocol of ``generateContent`` / ``streamGenerateContent``.

    POST /v1beta/models/{model}:generateContent                 x-goog-api-key (or ?key=)
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   same body; SSE of GenerateContentResponse

The body must be JSON with ``contents[0].parts`` holding one text part and one ``inline_data`` (or
``inlineData``) part whose base64 decodes strictly. Answers follow the real service: wrong key → 400
API_KEY_INVALID, no key → 403 PERMISSION_DENIED, unknown model → 404 NOT_FOUND, body over 20 MiB → 400,
unknown mime type → 400, all as ``{"error": {code, message, status, details?}}``. Streams carry
``usageMetadata`` on every chunk (growing) and ``finishReason`` on the last, with no [DONE] marker.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from tests.fakes.server import Recorded, Reply
from tests.fakes.vendor import VendorFake

GEMINI_KEY = "AIzaSy-test-gemini-5c1e9b27d4"
SHARED_KEY = "sk-test-key"  # tests.support.provider()'s default key
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
PAYLOAD_LIMIT = 20 * 1024 * 1024
MIME_TYPES = frozenset({
    "audio/wav", "audio/x-wav", "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac", "audio/ogg", "audio/flac",
    "audio/webm", "audio/mp4",
})
_ROUTE = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")


def google_error(code: int, status: str, message: str, reason: str | None = None, **extra: Any) -> Reply:
    """An error in Google's API shape (google.rpc.Status as JSON)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    details: list[dict[str, Any]] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}})
    if "retry_delay" in extra:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": extra["retry_delay"]})
    if details:
        error["details"] = details
    return Reply(status=code, body={"error": error})


def inline_audio(request: Recorded) -> tuple[str, bytes]:
    """``(mime_type, decoded audio)`` of a recorded generateContent body."""
    parts = request.json()["contents"][0]["parts"]
    blob = next(p.get("inline_data") or p.get("inlineData") for p in parts if "inline_data" in p or "inlineData" in p)
    return blob.get("mime_type") or blob.get("mimeType"), base64.b64decode(blob["data"], validate=True)


def instruction(request: Recorded) -> str:
    return str(next(p["text"] for p in request.json()["contents"][0]["parts"] if "text" in p))


class FakeGemini(VendorFake):
    """The Gemini API's content generation. Settings are plain attributes, restored by ``reset()``."""

    vendor = "gemini"
    own_key = GEMINI_KEY
    key_name = "GEMINI_API_KEY"

    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.keys: set[str] = {GEMINI_KEY, SHARED_KEY}
        self.transcript = TRANSCRIPT
        self.models: set[str] = {"gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"}
        self.words_per_chunk = 3
        self.event_delay = 0.0

    def reset(self) -> None:
        super().reset()
        self._defaults()




    # ------------------------------------------------------------------------------ answering

    def handle(self, request: Recorded) -> Reply:
        match = _ROUTE.match(request.path)
        if request.method != "POST" or match is None:
            return google_error(404, "NOT_FOUND", f"Method not found: {request.method} {request.path}")
        model, method = match.groups()
        key = request.headers.get("x-goog-api-key") or request.params.get("key")
        if not key:
            return google_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call this API.",
            )
        if key not in self.keys:
            return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                                reason="API_KEY_INVALID")
        if model not in self.models:
            return google_error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                                "supported for generateContent. Call ListModels to see the list of available models "
                                "and their supported methods.")
        if len(request.body) > PAYLOAD_LIMIT:
            return google_error(400, "INVALID_ARGUMENT",
                                f"Request payload size exceeds the limit: {PAYLOAD_LIMIT} bytes.")
        failure = self.check_body(request)
        if failure is not None:
            return failure
        body = request.json()
        logprobs = bool((body.get("generationConfig") or {}).get("responseLogprobs"))
        audio_tokens = max(1, len(inline_audio(request)[1]) // 500)
        if method == "streamGenerateContent":
            if request.params.get("alt") != "sse":
                return Reply(body=[self.chunk(self.transcript + "\n", audio_tokens, "STOP", logprobs)])
            return self.sse(audio_tokens, logprobs)
        return Reply(body=self.chunk(self.transcript + "\n", audio_tokens, "STOP", logprobs))

    def check_body(self, request: Recorded) -> Reply | None:
        """400 for a body that is not the JSON a content request must be."""
        try:
            body = json.loads(request.body)
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token.")
        try:
            parts = body["contents"][0]["parts"]
            assert any("text" in p for p in parts)
            mime, _ = inline_audio(request)
        except (KeyError, IndexError, TypeError, AssertionError, StopIteration):
            return google_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
        except (binascii.Error, ValueError):
            return google_error(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0].parts[1].inline_data.data' "
                                "(TYPE_BYTES), Base64 decoding failed")
        if mime not in MIME_TYPES:
            return google_error(400, "INVALID_ARGUMENT", f"Unsupported MIME type: {mime}")
        return None

    def usage(self, audio_tokens: int, answer_tokens: int) -> dict[str, Any]:
        prompt = audio_tokens + 40
        return {
            "promptTokenCount": prompt, "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt + answer_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 40}, {"modality": "AUDIO", "tokenCount": audio_tokens}],
        }

    def chunk(self, text: str, audio_tokens: int, finish: str | None, logprobs: bool, answered: int = 0) -> dict[str, Any]:
        """One GenerateContentResponse (the whole answer, or one stream chunk)."""
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        if logprobs:
            candidate["logprobsResult"] = {"chosenCandidates": [
                {"token": t, "logProbability": -0.05} for t in re.findall(r"\S+\s*", text)
            ]}
        tokens = answered or len(text.split()) + 1
        return {"candidates": [candidate], "usageMetadata": self.usage(audio_tokens, tokens),
                "modelVersion": "gemini-2.5-flash", "responseId": "fake-response-1"}

    def sse(self, audio_tokens: int, logprobs: bool) -> Reply:
        words = self.transcript.split(" ")
        pieces = [" ".join(words[i:i + self.words_per_chunk]) for i in range(0, len(words), self.words_per_chunk)]
        pieces = [p + (" " if i < len(pieces) - 1 else "\n") for i, p in enumerate(pieces)]
        events = [
            self.chunk(p, audio_tokens, "STOP" if i == len(pieces) - 1 else None, logprobs, answered=i + 1)
            for i, p in enumerate(pieces)
        ]
        return Reply(events=events, event_delay=self.event_delay)
