"""Fake OpenAI-compatible servers: a vLLM Whisper server and Fireworks' audio API (FakeOpenAI dialects).

    FakeVLLM       POST /v1/audio/transcriptions; key-less unless ``api_keys`` is set (vLLM --api-key);
                   json/text/verbose_json (segments only); errors in vLLM's flat {"object": "error", ...}
    FakeFireworks  POST /v1/audio/transcriptions; Bearer; every format, words and segments, ``diarize=true``
                   labels words and segments with ``speaker_id``; no SSE streaming
"""

from __future__ import annotations

from typing import Any

from bifrost_stt.kernel.settings import KeyConfig, NetworkConfig, ProviderConfig, Secret
from tests.fakes.openai import SHARED_KEY, FakeOpenAI
from tests.fakes.server import Recorded, Reply, error_reply

VLLM_KEY = "vllm-test-key-0b7d55e2"
FIREWORKS_KEY = "fw_test_fireworks_61c0aa93d2"
VLLM_MODEL = "openai/whisper-large-v3"


def vllm_error(status: int, message: str, type_: str = "BadRequestError") -> Reply:
    return Reply(status=status, body={"object": "error", "message": message, "type": type_, "param": None, "code": status})


class FakeVLLM(FakeOpenAI):
    vendor = "vllm"

    def _defaults(self) -> None:
        super()._defaults()
        self.api_keys: set[str] | None = None  # None: the server runs without --api-key
        self.keys = {VLLM_KEY, SHARED_KEY}
        self.models = {VLLM_MODEL, "whisper-small"}
        self.language = "en"

    def key(self, name: str = "vllm-key", **kw: Any) -> KeyConfig:
        kw.setdefault("value", Secret(VLLM_KEY))
        return KeyConfig(name=name, **kw)

    def provider_config(self, id: str | None = None, *, timeout: float = 5.0, **network: Any) -> ProviderConfig:
        """A key-less vLLM provider at this fake (``custom_provider_config.is_key_less``)."""
        network.setdefault("base_url", self.url)
        return ProviderConfig(
            id=id or "vllm", kind="vllm", is_key_less=True,
            network=NetworkConfig(default_request_timeout_in_seconds=timeout, **network),
        )

    def authorize(self, request: Recorded) -> Reply | None:
        if self.api_keys is None:
            return None
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.api_keys:
            return Reply(status=401, body={"error": "Unauthorized"})
        return None

    def unknown_model(self, model: str) -> Reply:
        return vllm_error(404, f"The model `{model}` does not exist.", "NotFoundError")

    def formats(self, model: str) -> tuple[str, ...]:
        return ("json", "text", "verbose_json")

    def bad_format(self, model: str, fmt: str) -> Reply:
        return vllm_error(400, "Currently only support response_format: `text`, `json` or `verbose_json`")

    def streams(self, model: str) -> bool:
        return False

    def usage(self, model: str) -> dict[str, Any] | None:
        return {"type": "duration", "seconds": int(self.duration())}

    def render(self, request: Recorded, model: str, fmt: str) -> Reply:
        if fmt != "verbose_json":
            return super().render(request, model, fmt)
        end = self.duration()  # vLLM fills segments whatever the granularities, and never words
        return Reply(body={
            "task": "transcribe", "language": self.language, "duration": end, "text": self.transcript,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": end, "text": " " + self.transcript,
                          "tokens": [50364, 440], "temperature": 0.0, "avg_logprob": -0.3,
                          "compression_ratio": 1.2, "no_speech_prob": 0.02}],
            "usage": self.usage(model),
        })


class FakeFireworks(FakeOpenAI):
    vendor = "fireworks"

    def _defaults(self) -> None:
        super()._defaults()
        self.keys = {FIREWORKS_KEY, SHARED_KEY}
        self.models = {"whisper-v3", "whisper-v3-turbo"}

    def authorize(self, request: Recorded) -> Reply | None:
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.keys:
            return error_reply(401, "The API key you provided is invalid.", "authentication_error")
        return None

    def unknown_model(self, model: str) -> Reply:
        return error_reply(404, f"Model not found: {model}", "not_found_error")

    def streams(self, model: str) -> bool:
        return False

    def usage(self, model: str) -> dict[str, Any] | None:
        return None

    def decorate(self, body: dict[str, Any], request: Recorded) -> dict[str, Any]:
        if request.field("diarize") == "true":
            for item in (*body.get("words", ()), *body.get("segments", ())):
                item["speaker_id"] = "SPEAKER_00"
        return body
