"""vLLM (and any self-hosted OpenAI-compatible Whisper server) and Fireworks, by delegation to openai_compat.

Both speak OpenAI's multipart transcription protocol, so each is a ``Vendor`` of defaults handed to
``OpenAICompatible``; what differs is only where the call goes and which model it names:

    vllm       POST {key url | base_url}/v1/audio/transcriptions   Bearer only when the key has a value
               a key's vllm_key_config.url overrides the base URL; its model_name says which model the key's
               server runs: the router picks a key serving the requested model (as upstream), which is sent
               unchanged (a key without model_name serves any model)
    fireworks  POST {host}/v1/audio/transcriptions                 Bearer
               host by model: whisper-v3-turbo -> audio-turbo.api.fireworks.ai, others -> audio-prod...
               (``network_config.base_url`` replaces both, e.g. a dedicated endpoint)

Neither streams over SSE in OpenAI's event shape (vLLM streams chat-style ``transcription.chunk``
objects, Fireworks streams over WebSockets), so both declare ``native_stream=False`` and the gateway
synthesizes streams from the finished transcript.
"""

from __future__ import annotations

import httpx

from bifrost_stt.kernel.canonical import TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.errors import GatewayError
from bifrost_stt.kernel.settings import KeyConfig, ProviderConfig
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, ConfigSpec, KeySection, Price, per_minute
from bifrost_stt.kernel.fields import Field, string
from bifrost_stt.providers.openai_compat import ALL_FORMATS, OpenAICompatible, Vendor, bearer, join_url

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
FIREWORKS_HOSTS = {
    "whisper-v3-turbo": "https://audio-turbo.api.fireworks.ai",
}
FIREWORKS_DEFAULT_HOST = "https://audio-prod.api.fireworks.ai"  # whisper-v3 and anything else


def vllm_url(base: str | None, attempt: Attempt) -> str:
    """The key's own server (vllm_key_config.url) wins over ``network_config.base_url``."""
    url = (attempt.key.section(VLLM_KEY_SECTION).get("url") if attempt.key is not None else None) or base
    if not url:
        raise GatewayError(
            "vllm: no server URL configured (network_config.base_url or a key's vllm_key_config.url)",
            provider="vllm",
        )
    return join_url(url, TRANSCRIPTIONS_PATH, "vllm")


def fireworks_url(base: str | None, attempt: Attempt) -> str:
    """A configured base URL serves every model; otherwise the public host that serves ``attempt.model``."""
    host = base or FIREWORKS_HOSTS.get(attempt.model, FIREWORKS_DEFAULT_HOST)
    return join_url(host, TRANSCRIPTIONS_PATH, "fireworks")


VLLM_KEY_SECTION = "vllm_key_config"
VLLM_CONFIG = ConfigSpec(
    key_sections={
        VLLM_KEY_SECTION: KeySection({
            "url": Field(string(env=True, non_empty=True)),
            "model_name": Field(string(non_empty=True)),
        })
    },
    key_less=True,  # VLLM_BASE_URL alone configures a server without a key
)

VLLM = Vendor(
    default_base_url=None,
    url_for=vllm_url,
    auth_headers=bearer,  # nothing at all for key-less servers or keys without a value
    capabilities=Capabilities(
        # vLLM refuses srt/vtt ("Currently only support response_format `text`, `json` or `verbose_json`")
        # and fills segments only (no word timings); VLLM_MAX_AUDIO_CLIP_FILESIZE_MB defaults to 25.
        native_formats=frozenset({"json", "text", "verbose_json"}),
        native_stream=False,
        word_timestamps=False,
        segment_timestamps=True,
        max_file_mb=25,
        max_duration_s=30.0,  # Whisper's one model pass; longer clips are split by the gateway
    ),
)

FIREWORKS_PRICES = {  # USD, late 2025
    "whisper-v3": Price(per_second=per_minute(0.0015)),
    "whisper-v3-turbo": Price(per_second=per_minute(0.0009)),
}

FIREWORKS = Vendor(
    default_base_url=None,  # chosen per model by fireworks_url
    url_for=fireworks_url,
    auth_headers=bearer,
    capabilities=Capabilities(
        native_formats=ALL_FORMATS,
        native_stream=False,
        word_timestamps=True,
        segment_timestamps=True,
        diarization=True,  # `diarize=true` passes through; words and segments carry `speaker_id`
        max_file_mb=1024,
    ),
)


class PerKeyServer:
    """An OpenAICompatible whose keys name the model their server runs (vllm_key_config.model_name).

    The URL half of a vLLM key is handled by ``vllm_url``; the model half is key selection: the router asks
    ``key_serves`` (kernel ``KeyAware``) and only picks keys serving the requested model. The requested model
    is never rewritten into the key's, so ``model_deployment`` reports what was really called.
    """

    key_rule = f"a key's {VLLM_KEY_SECTION}.model_name names the one model its server runs"

    def __init__(self, inner: OpenAICompatible) -> None:
        self.inner = inner
        self.name = inner.name
        self.client = inner.client
        self.capabilities = inner.capabilities

    def key_serves(self, key: KeyConfig, model: str) -> bool:
        """A key without ``model_name`` serves any model; one with it serves that model only (by the requested
        name, or by the name its aliases map the request to)."""
        served = key.section(VLLM_KEY_SECTION).get("model_name")
        return not served or served in (model, key.upstream_model(model))

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        return await self.inner.transcribe(request, attempt)


def create_vllm(config: ProviderConfig, client: httpx.AsyncClient) -> PerKeyServer:
    return PerKeyServer(OpenAICompatible(config.id, config, client, VLLM))


def create_fireworks(config: ProviderConfig, client: httpx.AsyncClient) -> OpenAICompatible:
    return OpenAICompatible(config.id, config, client, FIREWORKS)
