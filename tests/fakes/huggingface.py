"""A fake Hugging Face inference router speaking the automatic-speech-recognition task on 127.0.0.1.

    POST /{route}/models/{org}/{model}     Authorization: Bearer hf_...
        route "hf-inference": raw audio body (any audio/* type), or JSON {inputs: base64, parameters}
        any other route:      JSON only (a raw body is a 400)
    -> {"text": ...} plus "chunks" [{text, timestamp: [start, end]}] when parameters.return_timestamps

Errors use the Hub's shapes: ``{"error": "..."}`` (401 bad token, 404 unknown model, 400 undecodable
audio, 503 + ``estimated_time`` while a model loads) and ``{"error": ["..."]}`` for bad parameters.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from tests.fakes.openai import SHARED_KEY, TRANSCRIPT, WORD_SECONDS
from tests.fakes.server import Recorded, Reply
from tests.fakes.vendor import VendorFake

HF_TOKEN = "hf_testtoken_5c8e21a94f0d"
AUDIO_MAGIC = (b"RIFF", b"ID3", b"fLaC", b"OggS", b"\xff\xfb", b"\xff\xf3", b"\x1aE\xdf\xa3")
PARAMETERS = frozenset({"return_timestamps", "generation_parameters"})


def decoded_audio(request: Recorded) -> bytes:
    """The audio a request carried, raw or base64 inside JSON."""
    if request.content_type.startswith("application/json"):
        return base64.b64decode(request.json()["inputs"])
    return request.body


class FakeHuggingFace(VendorFake):
    vendor = "huggingface"
    own_key = HF_TOKEN
    key_name = "hf-main"
    _route = re.compile(r"^/([^/]+)/models/(.+)$")

    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.keys: set[str] = {HF_TOKEN, SHARED_KEY}
        self.transcript = TRANSCRIPT
        self.models: set[str] = {"openai/whisper-large-v3", "openai/whisper-large-v3-turbo"}
        self.loading: set[str] = set()  # models answering 503 "currently loading"

    def reset(self) -> None:
        super().reset()
        self._defaults()


    @property
    def base_url(self) -> str:
        return self.url + "/hf-inference"


    # ------------------------------------------------------------------------------ answering

    def handle(self, request: Recorded) -> Reply:
        match = self._route.match(request.path)
        if request.method != "POST" or match is None:
            return Reply(status=404, body="Not Found", content_type="text/plain")
        route, model = match.groups()
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.keys:
            return Reply(status=401, body={"error": "Invalid credentials in Authorization header"})
        if model not in self.models:
            return Reply(status=404, body={"error": f"Model {model} does not exist"})
        if model in self.loading:
            return Reply(status=503, body={"error": f"Model {model} is currently loading", "estimated_time": 20.0})
        parameters: dict[str, Any] = {}
        if request.content_type.startswith("application/json"):
            try:
                payload = request.json()
                audio = base64.b64decode(payload["inputs"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                return Reply(status=400, body={"error": "Malformed JSON or base64 inputs"})
            parameters = payload.get("parameters") or {}
            unknown = sorted(set(parameters) - PARAMETERS)
            if unknown:
                return Reply(status=400, body={"error": [f"Error in `parameters`: unknown field `{u}`" for u in unknown]})
        elif route != "hf-inference":
            return Reply(status=400, body={"error": "This route takes JSON: {\"inputs\": <base64 audio>}"})
        else:
            audio = request.body
        if not audio.startswith(AUDIO_MAGIC):
            return Reply(status=400, body={"error": "Soundfile is either not in the correct format or is malformed. "
                                                    "Ensure that the soundfile has a valid audio file extension (e.g. "
                                                    "wav, flac or mp3) and is not corrupted."})
        return Reply(body=self.render(parameters.get("return_timestamps")))

    def render(self, timestamps: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"text": " " + self.transcript}
        words = self.transcript.split()
        if timestamps == "word":
            body["chunks"] = [
                {"text": " " + w, "timestamp": [i * WORD_SECONDS, (i + 1) * WORD_SECONDS]} for i, w in enumerate(words)
            ]
        elif timestamps:
            half = len(words) // 2
            end = len(words) * WORD_SECONDS
            body["chunks"] = [
                {"text": " " + " ".join(words[:half]), "timestamp": [0.0, half * WORD_SECONDS]},
                {"text": " " + " ".join(words[half:]), "timestamp": [half * WORD_SECONDS, end]},
            ]
        return body

    def last_parameters(self) -> dict[str, Any] | None:
        """The JSON ``parameters`` of the last request; None for a raw body."""
        last = self.last
        if not last.content_type.startswith("application/json"):
            return None
        return dict(json.loads(last.body).get("parameters") or {})
