"""Typed configuration: what ``bifrost_stt.gateway.config.load`` builds from a file or the environment.

Field names follow upstream Bifrost's config.json (BEHAVIOUR.md §7) so a user's file maps one to one.
Everything here is immutable; secrets are ``Secret`` so a repr, a log line or an error never shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bifrost_stt.kernel.governance import GovernanceConfig


class Secret:
    """A string that prints as stars. ``reveal()`` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


MAX_RESULT_TTL = 30 * 24 * 3600  # seconds an async job's result may be kept at most: results are not an archive


def job_result_ttl(requested: int | None, default: int) -> int:
    """Seconds to keep an async job's result: the requested TTL when positive, else ``default``; clamped to
    ``MAX_RESULT_TTL`` (the job's ``expires_at`` shows what was granted)."""
    return min(requested if requested is not None and requested > 0 else default, MAX_RESULT_TTL)


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class KeyConfig:
    name: str
    value: Secret = field(default_factory=lambda: Secret(""))
    weight: float = 1.0
    models: tuple[str, ...] = ("*",)  # ("*",) = every model; () = none
    aliases: Mapping[str, str] = field(default_factory=_frozen)  # model -> deployment / upstream id
    enabled: bool = True
    # Vendor sections (``azure_key_config``, ``vllm_key_config``), checked against the owning provider's
    # ConfigSpec: section name -> field values. Only that provider reads them.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def section(self, name: str) -> Mapping[str, Any]:
        """One vendor section's values ({} when the key has none)."""
        return self.sections.get(name) or MappingProxyType({})

    def allows(self, model: str) -> bool:
        return self.enabled and ("*" in self.models or model in self.models)

    def upstream_model(self, model: str) -> str:
        return self.aliases.get(model, model)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    base_url: str | None = None  # None: the provider's public default
    extra_headers: Mapping[str, str] = field(default_factory=_frozen)
    default_request_timeout_in_seconds: float = 30.0
    connect_timeout_in_seconds: float = 10.0
    max_retries: int = 0
    retry_backoff_initial: int = 500  # ms
    retry_backoff_max: int = 5000  # ms
    stream_idle_timeout_in_seconds: float = 60.0
    max_conns_per_host: int = 256
    # Caps on an upstream's answer (ours; a transcript is kilobytes): past one the attempt is a 502.
    max_response_size_mb: int = 32  # one answer's body, counted as it is decompressed
    max_stream_event_size_kb: int = 1024  # one server-sent-event line or event
    max_stream_duration_in_seconds: float | None = None  # a whole stream; None: default_request_timeout_in_seconds


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    concurrency: int = 1000  # requests in flight to this provider
    buffer_size: int = 5000  # requests allowed to wait for a slot


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    id: str  # the name requests use ("openai", "azure", or a custom provider's name)
    kind: str  # the registry entry implementing it (== id for built-ins; base_provider_type for custom)
    keys: tuple[KeyConfig, ...] = ()
    network: NetworkConfig = field(default_factory=NetworkConfig)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    allow_direct_keys: bool = False
    is_key_less: bool = False
    store_raw_request_response: bool = False  # accepted from upstream files; nothing stores raw bodies yet
    # custom_provider_config.request_path_overrides: request type ("transcription", ...) -> path on base_url
    request_path_overrides: Mapping[str, str] = field(default_factory=_frozen)
    # custom_provider_config.allowed_requests, the request types set true; None = every type (upstream default)
    allowed_requests: frozenset[str] | None = None
    # The provider's own settings (fields its ConfigSpec declares for its section, e.g. the local engine's
    # models and pool), as that provider's ``ConfigSpec.options`` built them; None for providers without any.
    options: object = None


@dataclass(frozen=True, slots=True)
class ClientConfig:
    max_request_body_size_mb: int = 1024  # long recordings are split by the gateway: an hour of WAV is ~115 MB
    drop_excess_requests: bool = False
    async_job_result_ttl: int = 3600
    job_store_path: str | None = None  # SQLite file shared by the workers; None: a per-user temp dir
    max_pending_jobs: int = 256  # unfinished async jobs (each holds its upload) before POST answers 503
    allowed_origins: tuple[str, ...] = ()
    reject_non_audio: bool = True  # refuse uploads that are clearly not audio before any upstream call
    spool_threshold_kb: int = 1024  # uploads larger than this are spooled to disk
    enable_logging: bool = True  # record each request in the log store (when logs_store is enabled)
    disable_content_logging: bool = False  # keep usage and metadata, drop the transcript text
    log_retention_days: int = 365  # upstream's client-level retention; logs_store.retention_days wins
    spool_dir: str | None = None  # where uploads and long-audio pieces are spooled; None: the temp directory


@dataclass(frozen=True, slots=True)
class LogsStoreConfig:
    """``logs_store``: where request records go. SQLite (``path``) or PostgreSQL (host ... ssl_mode)."""

    enabled: bool = False
    type: str = "sqlite"  # sqlite | postgres
    path: str | None = None  # sqlite file; None: logs.db in the per-user state directory
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    db_name: str = ""
    ssl_mode: str = "disable"
    retention_days: int | None = None  # None: client.log_retention_days
    max_rows: int | None = None  # our own: keep at most this many records (oldest dropped first)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``governance.auth_config``: HTTP basic auth for /api/*, /metrics and (by default) inference."""

    is_enabled: bool = False
    admin_username: str = ""
    admin_password: Secret = field(default_factory=lambda: Secret(""))
    disable_auth_on_inference: bool = False

    @property
    def active(self) -> bool:
        """On, with a username and a password: without both there is nothing to check against."""
        return self.is_enabled and bool(self.admin_username) and bool(self.admin_password)


@dataclass(frozen=True, slots=True)
class AudioLimit:
    """An operator's override of what one provider (or one provider/model) accepts."""

    max_file_mb: int | None = None
    max_duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class LongAudioConfig:
    """``long_audio`` (ours): audio over a target's limits is split, sent in pieces and stitched."""

    enabled: bool = True  # False: a file over the limit is refused (413) as upstream does
    max_parallel_chunks: int = 4  # pieces of one request in flight at once
    piece_format: str = "flac"  # "flac" (lossless) or "opus" (Ogg Opus, ~24 kbit/s: 8x smaller)
    overlap_seconds: float = 1.0  # only where no quiet stretch exists near a cut
    search_window_seconds: float = 20.0  # how far before a piece's end to look for the quietest stretch
    min_piece_seconds: float = 60.0  # pieces are not made shorter than this to gain parallelism
    carry_prompt: bool = False  # piece n+1's prompt ends with piece n's text (pieces then go one at a time)
    max_audio_seconds: float = 6 * 3600.0  # longer audio is refused (413): its decoded samples take disk
    # "provider" or "provider/model" -> limits replacing the declared capabilities
    limits: Mapping[str, AudioLimit] = field(default_factory=lambda: MappingProxyType({}))

    def limit_for(self, provider: str, model: str) -> AudioLimit | None:
        return self.limits.get(f"{provider}/{model}") or self.limits.get(provider)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    spec_dir: str | None = None  # `serve --spec-dir`: a directory holding the OpenAPI document; None = bundled
    log_format: str = "text"  # text | json: the per-request line and the gateway's own log lines
    # Client connections (bifrost_stt.server.connections): a request's headers must arrive within
    # header_timeout; its body may pause at most body_timeout, and once it has been arriving that long it
    # must average min_upload_rate_kb per second. max_connections 0: half the open-file limit.
    header_timeout_in_seconds: float = 10.0
    body_timeout_in_seconds: float = 30.0
    min_upload_rate_kb: int = 8
    max_connections: int = 0


@dataclass(frozen=True, slots=True)
class RedisStoreConfig:
    """``vector_store`` with ``type: redis``: a Redis (or Valkey) server every gateway instance shares."""

    addr: str = "127.0.0.1:6379"  # host:port
    username: str | None = None
    password: Secret = field(default_factory=lambda: Secret(""))
    db: int = 0
    use_tls: bool = False


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The exact transcription cache: the ``semantic_cache`` plugin entry plus ``vector_store`` (upstream's
    shape). On by default with the embedded store; a request uses it only with a cache key."""

    enabled: bool = True
    ttl_seconds: float = 300.0
    default_cache_key: str | None = None  # engages the cache for requests without x-bf-cache-key
    cache_by_model: bool = True
    cache_by_provider: bool = True
    namespace: str = "BifrostSemanticCachePlugin"  # vector_store_namespace: the Redis key prefix
    store_path: str | None = None  # the embedded SQLite file; None: a per-user temp dir
    max_size_mb: int = 256  # the embedded store's bound; least recently used entries go first
    redis: RedisStoreConfig | None = None  # None: the embedded store


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    providers: Mapping[str, ProviderConfig] = field(default_factory=lambda: MappingProxyType({}))
    client: ClientConfig = field(default_factory=ClientConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    logs_store: LogsStoreConfig = field(default_factory=LogsStoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)  # governance.auth_config
    long_audio: LongAudioConfig = field(default_factory=LongAudioConfig)
    governance: GovernanceConfig = field(default_factory=GovernanceConfig)  # virtual keys, budgets, limits
    cache: CacheConfig = field(default_factory=CacheConfig)
    ignored_sections: tuple[str, ...] = ()  # upstream sections accepted but not used here
    # upstream settings that would change behaviour but have no effect here (insecure_skip_verify, proxy_config ...)
    unsupported_fields: tuple[str, ...] = ()
