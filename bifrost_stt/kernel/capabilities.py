"""What a provider module offers the router: narrow capabilities, not a fat base class.

A provider module exposes a factory ``create(config: ProviderConfig, client: httpx.AsyncClient) -> object``
(named in ``providers.registry``). The object it returns implements ``Transcriber`` and, when the vendor
streams natively, ``StreamingTranscriber``. It describes itself with a ``Capabilities`` value.

The router picks a key and the upstream model and hands the provider one ``Attempt``; the provider does one
wire call, maps its errors into ``bifrost_stt.kernel.errors.UpstreamError`` and returns canonical values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from bifrost_stt.kernel.canonical import StreamEvent, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.fields import Field
from bifrost_stt.kernel.settings import ConcurrencyConfig, KeyConfig


@dataclass(frozen=True, slots=True)
class Capabilities:
    native_formats: frozenset[str]  # response formats the vendor renders itself
    native_stream: bool  # True when some model streams natively (see ``streams``)
    word_timestamps: bool
    segment_timestamps: bool
    diarization: bool = False
    max_file_mb: int | None = None
    # the longest audio the model takes (gpt-4o-transcribe ~1,400 s, vLLM's Whisper 30 s); None: no cap known.
    # Longer audio is split into pieces by bifrost_stt.gateway.longaudio (its config may override both limits).
    max_duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """A model's list price in USD: per audio second, and per token for models billed by tokens."""

    per_second: float | None = None
    per_audio_token: float | None = None
    per_output_token: float | None = None


def per_minute(usd: float) -> float:
    return usd / 60.0


def per_hour(usd: float) -> float:
    return usd / 3600.0


@dataclass(frozen=True, slots=True)
class KeySection:
    """A vendor section inside a key (``azure_key_config``): its fields, and whether every key needs one."""

    fields: Mapping[str, Field]
    required: bool = False
    why: str = ""  # said when a required section is missing ("its endpoint")


def _no_sections() -> Mapping[str, KeySection]:
    return MappingProxyType({})


def _no_vars() -> Mapping[str, tuple[str, str]]:
    return MappingProxyType({})


OptionsBuilder = Callable[[Mapping[str, Any], ConcurrencyConfig | None, str], tuple[object, ConcurrencyConfig]]


@dataclass(frozen=True, slots=True)
class ConfigSpec:
    """What a provider kind declares about its configuration, next to its capabilities.

    The shared configuration holds no vendor branches: it asks the registry for this. A key's vendor
    sections arrive checked in ``KeyConfig.sections`` (section name -> field values), which only the
    owning provider reads. Without a config file, ``env_key`` (default ``<KIND>_API_KEY``) configures the
    kind, ``env_base_url`` (default ``<KIND>_BASE_URL``) its base URL, and ``env_sections`` fill key
    section fields from variables (``AZURE_OPENAI_ENDPOINT`` -> ``azure_key_config.endpoint``).
    """

    key_sections: Mapping[str, KeySection] = field(default_factory=_no_sections)
    key_less: bool = False  # a base URL alone configures it (self-hosted servers)
    env_key: str | None = None
    env_base_url: str | None = None
    env_sections: Mapping[str, tuple[str, str]] = field(default_factory=_no_vars)  # VAR -> (section, field)
    env_required: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # VAR -> example
    # Fields of the provider's own ``providers.<id>`` section besides upstream's (the local engine's models,
    # pool ...), checked like every field. ``options(values, concurrency_and_buffer_size or None, path)``
    # builds ``ProviderConfig.options`` and the admission limits from them (ConfigError naming a field).
    fields: Mapping[str, Field] = field(default_factory=lambda: MappingProxyType({}))
    options: OptionsBuilder | None = None
    takes_keys: bool = True  # False: no ``keys`` at all (an engine running inside the gateway)
    # Added with no configuration when ``installed()`` is true: alone when nothing else is configured, and
    # beside providers configured from the environment with ``beside`` as its section (None: never beside).
    installed: Callable[[], bool] | None = None
    beside: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One wire call: which key and which upstream model (aliases already applied)."""

    key: KeyConfig | None  # None for key-less providers
    model: str  # the id the vendor expects (an Azure deployment, a Groq model ...)
    timeout: float  # seconds for the whole call
    fallback_index: int = 0
    retry: int = 0
    # Caps on what the upstream may send back (network_config.max_response_size_mb and friends): past one,
    # the attempt fails as a 502 naming the provider and the setting. Stream duration None: ``timeout``.
    max_response_bytes: int = 32 * 1024 * 1024
    max_event_bytes: int = 1024 * 1024
    max_stream_seconds: float | None = None


@runtime_checkable
class Transcriber(Protocol):
    capabilities: Capabilities

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult: ...


@runtime_checkable
class KeyAware(Protocol):
    """A provider whose keys say which models they serve beyond their ``models`` list (a vLLM key's
    ``vllm_key_config.model_name`` names the one model its server runs). The router picks among the keys
    that serve the requested model; the model itself is sent unchanged."""

    key_rule: str  # said in the 400 when no key serves the model ("vllm_key_config.model_name ...")

    def key_serves(self, key: KeyConfig, model: str) -> bool: ...


@runtime_checkable
class ModelAware(Protocol):
    def capabilities_for(self, model: str) -> Capabilities:
        """Capabilities of one model, where a vendor's models differ (the vendor's own otherwise)."""
        ...


# What a stream yields: events, or (as its one item) the whole transcript when the upstream answered the
# stream request with JSON instead of server-sent events (a model that does not stream ignores ``stream``).
StreamItem = StreamEvent | TranscriptionResult


@runtime_checkable
class StreamingTranscriber(Protocol):
    def streams(self, model: str) -> bool:
        """True when ``model`` is to be asked for a stream: a first guess, the upstream's answer decides
        (``stream`` may yield one TranscriptionResult, which the gateway streams itself)."""
        ...

    def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamItem]:
        """Open the upstream stream. Errors before the first event raise UpstreamError from the iterator's
        first ``__anext__``, so the router can still retry or fall back. A TranscriptionResult is only ever
        the first and only item."""
        ...


@runtime_checkable
class ModelCatalog(Protocol):
    """A provider that knows its models by name and has a default (the local engine). When it is the only
    provider configured, bare model names it does not know (``whisper-1``) are served by its default."""

    @property
    def default_model(self) -> str: ...

    def knows(self, model: str) -> bool: ...
