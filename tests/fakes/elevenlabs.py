"""A fake ElevenLabs speech-to-text API on 127.0.0.1, speaking its wire protocol.

    POST /v1/speech-to-text[?enable_logging=]   xi-api-key: KEY   multipart: model_id, file, language_code,
         tag_audio_events, num_speakers, timestamps_granularity, diarize, temperature, keyterms (repeated) ...

Answers as ElevenLabs does: {language_code: "eng", language_probability, text, words[{text, start, end, type
word|spacing|audio_event, speaker_id, logprob}], transcription_id, audio_duration_secs}; an audio event
"(laughter)" ends the transcript unless tag_audio_events=false; with diarize=true the second half of the words
is speaker_1; use_multi_channel=true answers {transcripts: [one per channel], transcription_id}. Errors:
missing key 401 ``{"detail": {"status": "needs_authorization", ...}}``, wrong key 401 ``invalid_api_key``,
unknown model 400 ``invalid_model_id``, a missing required field 422 FastAPI ``{"detail": [...]}``. A field
ElevenLabs does not define (``model``, ``response_format``, ``prompt`` ...) is a 400 here (the real service
ignores it; strict on purpose, so a provider sending OpenAI fields shows up).
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import Recorded, Reply
from tests.fakes.vendor import VendorFake

ELEVENLABS_KEY = "sk_elevenlabs_test_8b1d6f0e23c9"
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
WORD_SECONDS = 0.5
FIELDS = frozenset({
    "model_id", "file", "language_code", "tag_audio_events", "num_speakers", "timestamps_granularity", "diarize",
    "diarization_threshold", "additional_formats", "file_format", "cloud_storage_url", "webhook", "webhook_id",
    "temperature", "seed", "use_multi_channel", "webhook_metadata", "entity_detection", "keyterms",
})


def detail_error(status: int, code: str, message: str) -> Reply:
    return Reply(status=status, body={"detail": {"status": code, "message": message}})


class FakeElevenLabs(VendorFake):
    """ElevenLabs' /v1/speech-to-text. Settings are plain attributes, restored by ``reset()``."""

    vendor = "elevenlabs"
    own_key = ELEVENLABS_KEY
    key_name = "ELEVENLABS_API_KEY"

    path = "/v1/speech-to-text"

    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.keys: set[str] = {ELEVENLABS_KEY}
        self.transcript = TRANSCRIPT
        self.models: set[str] = {"scribe_v1", "scribe_v1_experimental", "scribe_v2"}

    def reset(self) -> None:
        super().reset()
        self._defaults()



    # ------------------------------------------------------------------------------ answering

    def handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != self.path:
            return Reply(status=404, body={"detail": "Not Found"})
        key = request.headers.get("xi-api-key")
        if key is None:
            return detail_error(401, "needs_authorization",
                                "Neither authorization header nor xi-api-key received, please provide one.")
        if key not in self.keys:
            return detail_error(401, "invalid_api_key", "Invalid API key")
        unknown = [n for n in request.names if n not in FIELDS]
        if unknown:
            return detail_error(400, "invalid_parameters", f"Unknown parameter: {unknown[0]}")
        model = request.field("model_id")
        if not model:
            return Reply(status=422, body={"detail": [
                {"loc": ["body", "model_id"], "msg": "field required", "type": "value_error.missing"}]})
        if model not in self.models:
            return detail_error(400, "invalid_model_id", f"Model '{model}' is not a valid speech-to-text model.")
        if request.file is None:
            return detail_error(400, "invalid_parameters", "Exactly one of file or cloud_storage_url must be provided.")
        diarize = request.field("diarize") == "true"
        events = request.field("tag_audio_events") != "false"
        if request.field("use_multi_channel") == "true":
            channels = [self.chunk(diarize=False, events=events, channel=c) for c in (0, 1)]
            return Reply(body={"transcripts": channels, "transcription_id": "tr_fake_multi"})
        return Reply(body={**self.chunk(diarize=diarize, events=events), "transcription_id": "tr_fake_0001"})

    def chunk(self, *, diarize: bool, events: bool, channel: int | None = None) -> dict[str, Any]:
        words = self.transcript.split()
        items: list[dict[str, Any]] = []
        for i, w in enumerate(words):
            speaker = f"speaker_{int(diarize and i >= len(words) // 2)}"
            if i:
                items.append({"text": " ", "start": i * WORD_SECONDS - 0.05, "end": i * WORD_SECONDS,
                              "type": "spacing", "speaker_id": speaker, "logprob": -0.001})
            items.append({"text": w, "start": i * WORD_SECONDS, "end": i * WORD_SECONDS + 0.45,
                          "type": "word", "speaker_id": speaker, "logprob": -0.01 * (i + 1)})
        text = self.transcript
        end = len(words) * WORD_SECONDS
        if events:
            items.append({"text": " ", "start": end, "end": end, "type": "spacing", "speaker_id": "speaker_0",
                          "logprob": 0.0})
            items.append({"text": "(laughter)", "start": end, "end": end + 0.8, "type": "audio_event",
                          "speaker_id": "speaker_0", "logprob": 0.0})
            text += " (laughter)"
            end += 0.8
        if channel is not None:
            for item in items:
                item["channel_index"] = channel
        return {"language_code": "eng", "language_probability": 0.98, "text": text, "words": items,
                "audio_duration_secs": end + 0.2, **({"channel_index": channel} if channel is not None else {})}
