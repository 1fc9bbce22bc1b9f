"""A fake Deepgram speaking the real wire protocol of pre-recorded transcription.

    POST /v1/listen?model=...&smart_format=true&...   Authorization: Token KEY   body: the raw audio

Options shape the answer as the real service does: ``smart_format``/``punctuate`` punctuate the
transcript and add ``punctuated_word``; ``diarize`` adds ``speaker`` to words (speaker 0 for the first
sentence, 1 after); ``utterances`` adds ``results.utterances`` (one per sentence); ``paragraphs`` adds
``alternatives[0].paragraphs``; ``detect_language`` adds ``detected_language``. Errors use Deepgram's
``{"err_code", "err_msg", "request_id"}``: wrong key → 401 INVALID_AUTH, multipart/JSON/empty body → 400,
unknown model → 400, keyterm on a pre-Nova-3 model and keywords on Nova-3 → 400.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from tests.fakes.server import Recorded, Reply
from tests.fakes.vendor import VendorFake

DEEPGRAM_KEY = "dg-test-key-0b8f3e61a9c2d7"
SHARED_KEY = "sk-test-key"
TRANSCRIPT = "Hello there. The quick brown fox jumps over the lazy dog."
WORD_SECONDS = 0.5
LEAD_IN = 0.25


def dg_error(status: int, code: str, message: str) -> Reply:
    return Reply(status=status, body={"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())})


def _true(value: str | None) -> bool:
    return (value or "").lower() == "true"


class FakeDeepgram(VendorFake):
    """Deepgram's /v1/listen. Settings are plain attributes, restored by ``reset()``."""

    vendor = "deepgram"
    own_key = DEEPGRAM_KEY
    key_name = "DEEPGRAM_API_KEY"
    path = "/v1/listen"

    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.keys: set[str] = {DEEPGRAM_KEY, SHARED_KEY}
        self.transcript = TRANSCRIPT
        self.models: set[str] = {"nova-3", "nova-3-general", "nova-2", "nova-2-general", "enhanced", "base"}
        self.detected = "en"

    def reset(self) -> None:
        super().reset()
        self._defaults()




    # ------------------------------------------------------------------------------ answering

    def handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != self.path:
            return dg_error(404, "NOT_FOUND", f"No such route: {request.method} {request.path}")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Token" or key not in self.keys:
            return dg_error(401, "INVALID_AUTH", "Invalid credentials.")
        content_type = request.content_type.split(";")[0].strip().lower()
        if content_type == "application/json":
            return dg_error(400, "Bad Request", "Content-type was application/json, but we could not process the JSON payload.")
        if not request.body or content_type.startswith("multipart/"):
            return dg_error(400, "Bad Request", "Bad Request: failed to process audio: corrupt or unsupported data")
        params = request.params
        model = params.get("model", "base")
        if model not in self.models:
            return dg_error(400, "Bad Request", "No such model/language/tier combination found.")
        names = {k for k, _ in request.query}
        nova3 = model.startswith("nova-3")
        if "keyterm" in names and not nova3:
            return dg_error(400, "Bad Request", "Keyterm Prompting is only available for Nova-3 models.")
        if "keywords" in names and nova3:
            return dg_error(400, "Bad Request", "Keywords are not supported for Nova-3 models; use keyterm.")
        return Reply(body=self.listen(request, model))

    def sentences(self) -> list[str]:
        return [s for s in re.split(r"(?<=[.!?])\s+", self.transcript.strip()) if s]

    def listen(self, request: Recorded, model: str) -> dict[str, Any]:
        p = request.params
        punctuate = _true(p.get("smart_format")) or _true(p.get("punctuate"))
        diarize = _true(p.get("diarize"))
        words: list[dict[str, Any]] = []
        spans: list[tuple[int, int, int]] = []  # (first word, last word + 1, speaker) per sentence
        for speaker, sentence in enumerate(self.sentences()):
            first = len(words)
            for raw in sentence.split():
                start = LEAD_IN + len(words) * WORD_SECONDS
                word: dict[str, Any] = {"word": re.sub(r"[^\w']", "", raw).lower(), "start": start,
                                        "end": start + WORD_SECONDS - 0.05, "confidence": 0.98}
                if punctuate:
                    word["punctuated_word"] = raw
                if diarize:
                    word["speaker"], word["speaker_confidence"] = min(speaker, 1), 0.9
                words.append(word)
            spans.append((first, len(words), min(speaker, 1)))

        def text_of(a: int, b: int) -> str:
            return " ".join(w.get("punctuated_word", w["word"]) for w in words[a:b])

        alternative: dict[str, Any] = {"transcript": text_of(0, len(words)), "confidence": 0.97, "words": words}
        if _true(p.get("paragraphs")):
            alternative["paragraphs"] = {
                "transcript": "\n" + text_of(0, len(words)),
                "paragraphs": [{
                    "sentences": [{"text": text_of(a, b), "start": words[a]["start"], "end": words[b - 1]["end"]}
                                  for a, b, _ in spans],
                    "num_words": len(words), "start": words[0]["start"] if words else 0.0,
                    "end": words[-1]["end"] if words else 0.0, **({"speaker": 0} if diarize else {}),
                }],
            }
        channel: dict[str, Any] = {"alternatives": [alternative]}
        if _true(p.get("detect_language")):
            channel["detected_language"], channel["language_confidence"] = self.detected, 0.99
        results: dict[str, Any] = {"channels": [channel]}
        if _true(p.get("utterances")):
            results["utterances"] = [
                {"start": words[a]["start"], "end": words[b - 1]["end"], "confidence": 0.97, "channel": 0,
                 "transcript": text_of(a, b), "words": words[a:b], "speaker": speaker if diarize else 0,
                 "id": str(uuid.uuid4())}
                for a, b, speaker in spans
            ]
        duration = LEAD_IN + len(words) * WORD_SECONDS + 0.4
        return {
            "metadata": {
                "transaction_key": "deprecated", "request_id": str(uuid.uuid4()),
                "sha256": hashlib.sha256(request.body).hexdigest(), "created": "2026-11-01T12:00:00.000Z",
                "duration": duration, "channels": 1, "models": [str(uuid.uuid4())],
                "model_info": {"fake": {"name": model, "version": "2026-01-01", "arch": model}},
            },
            "results": results,
        }
