"""Typed governance configuration: virtual keys, budgets, rate limits, prices and the stores that hold them.

Shapes follow upstream Bifrost's config.json ``governance`` section (budgets and rate limits are objects of
their own, referenced by id from a virtual key or one of its provider configs) and its ``config_store``;
``governance.store`` (shared counters in Redis), ``governance.pricing`` and the audio-seconds limit are our
extensions. Built by ``bifrost_stt.gateway.config.governance``; read by ``bifrost_stt.gateway.governance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # settings imports this module; Secret is only an annotation here
    from bifrost_stt.kernel.settings import Secret

VK_PREFIX = "sk-bf-"  # a virtual key's value; keys without it are accepted only in x-bf-vk


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    id: str
    max_limit: float  # USD per window
    reset_duration: str  # "30s", "1m", "1h", "1d", "1w", "1M", "1Q", "1Y"
    calendar_aligned: bool = False


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    id: str
    request_max_limit: int | None = None
    request_reset_duration: str | None = None
    token_max_limit: int | None = None  # accepted from upstream files; transcription counts audio instead
    token_reset_duration: str | None = None
    # our extension: audio seconds transcribed per window
    audio_seconds_max_limit: float | None = None
    audio_seconds_reset_duration: str | None = None


@dataclass(frozen=True, slots=True)
class VKProviderConfig:
    provider: str
    weight: float | None = None
    allowed_models: tuple[str, ...] = ()  # () = every model of this provider
    budget_id: str | None = None
    rate_limit_id: str | None = None


@dataclass(frozen=True, slots=True)
class VirtualKeyConfig:
    id: str
    name: str
    value: Secret | None = None  # None: generated once when seeded into the config store
    description: str = ""
    is_active: bool = True
    budget_id: str | None = None
    rate_limit_id: str | None = None
    provider_configs: tuple[VKProviderConfig, ...] = ()  # () = every provider and model
    team_id: str | None = None
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class PriceConfig:
    """One price-table row (``governance.pricing``); overrides the built-in defaults for that model."""

    provider: str  # a provider id or kind
    model: str  # the upstream model or deployment; "*" = every model of the provider
    input_cost_per_audio_per_second: float | None = None
    input_cost_per_audio_token: float | None = None
    output_cost_per_token: float | None = None


@dataclass(frozen=True, slots=True)
class ConfigStoreConfig:
    """Upstream's ``config_store``: where virtual keys and their limits live, shared by every instance."""

    type: Literal["sqlite", "postgres"] = "sqlite"
    url: Secret | None = None  # a SQLAlchemy URL (postgres); None with sqlite = ``path`` or the default file
    path: str | None = None  # sqlite only


@dataclass(frozen=True, slots=True)
class CounterStoreConfig:
    """``governance.store``: where the budget and rate-limit counters live when several instances share them."""

    type: Literal["redis"] = "redis"
    addr: str = "127.0.0.1:6379"
    username: str | None = None
    password: Secret | None = None
    db: int = 0
    key_prefix: str = "bifrost-stt:gov:"
    # what a request meets when Redis cannot be reached: refused with 503, or let through (logged, counted)
    on_unavailable: Literal["fail_closed", "fail_open"] = "fail_closed"
    timeout_seconds: float = 0.5


@dataclass(frozen=True, slots=True)
class GovernanceConfig:
    virtual_keys: tuple[VirtualKeyConfig, ...] = ()
    budgets: tuple[BudgetConfig, ...] = ()
    rate_limits: tuple[RateLimitConfig, ...] = ()
    pricing: tuple[PriceConfig, ...] = ()
    # client.enforce_auth_on_inference / enforce_governance_header: a request without a virtual key is 401
    enforce: bool = False
    config_store: ConfigStoreConfig | None = None
    store: CounterStoreConfig | None = None
    sync_interval_seconds: float = 0.5  # how often an instance looks for key changes made by another

    @property
    def enabled(self) -> bool:
        """Governance runs (keys are read, limits counted) when anything in the config asks for it."""
        return bool(self.enforce or self.virtual_keys or self.config_store is not None or self.store is not None)
