"""Admission: one configured provider's slot (its implementation, config, keys) and its concurrency queue.

At most ``concurrency`` calls in flight, at most ``buffer_size`` waiting for a slot; a full buffer is 503 at
once, and with ``drop_excess_requests`` so is "no slot free". A stream holds its slot until it ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bifrost_stt.gateway.render import plan
from bifrost_stt.gateway.routing.learned import Learned
from bifrost_stt.kernel.capabilities import Capabilities, KeyAware, ModelAware, StreamingTranscriber, Transcriber
from bifrost_stt.kernel.errors import ClientError, Overloaded
from bifrost_stt.kernel.settings import KeyConfig, LongAudioConfig, ProviderConfig, Secret

DIRECT_KEY_NAME = "client-supplied"


class Lease:
    """One admitted call's concurrency slot. ``release`` is idempotent so every exit path may call it."""

    __slots__ = ("_semaphore", "_loop", "_held")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._loop = asyncio.get_running_loop()
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()

    def __del__(self) -> None:
        # Safety net for a stream that was handed out but never iterated nor closed: a leaked slot
        # would shrink the provider's capacity for good.
        if self._held and not self._loop.is_closed():
            self._held = False
            self._loop.call_soon_threadsafe(self._semaphore.release)


class ProviderSlot:
    """One configured provider: its implementation, its config, its admission queue, and what its answers
    taught the router about its models (``learned``: formats each refused, for a bounded time)."""

    def __init__(
        self,
        config: ProviderConfig,
        impl: Transcriber,
        *,
        drop_excess: bool,
        learned: Learned | None = None,
        limits: LongAudioConfig | None = None,
    ) -> None:
        self.config = config
        self.impl = impl
        self.learned = learned if learned is not None else Learned()
        self._limits = limits  # an operator's long_audio.limits override the declared size/duration limits
        self._slots = asyncio.Semaphore(max(1, config.concurrency.concurrency))
        self._waiting = 0
        self._drop_excess = drop_excess

    @property
    def reported(self) -> str:
        """How responses, stream events, headers, errors and logs name this provider: its configured id (a
        named custom provider by its name, as upstream does; a built-in provider's id is its kind)."""
        return self.config.id

    @property
    def capabilities(self) -> Capabilities:
        return self.impl.capabilities

    def capabilities_for(self, model: str) -> Capabilities:
        """The provider's first guess for ``model`` (its name patterns), less the formats it was seen to refuse."""
        impl = self.impl
        guess = impl.capabilities_for(model) if isinstance(impl, ModelAware) else impl.capabilities
        refused = self.learned.refused(model)
        caps = plan.without(guess, refused) if refused else guess
        override = self._limits.limit_for(self.config.id, model) if self._limits is not None else None
        if override is not None:
            caps = replace(caps, max_file_mb=override.max_file_mb or caps.max_file_mb,
                           max_duration_s=override.max_duration_seconds or caps.max_duration_s)
        return caps

    @property
    def waiting(self) -> int:
        return self._waiting

    def allows(self, request_type: str) -> bool:
        """``custom_provider_config.allowed_requests``: None allows every request type."""
        allowed = self.config.allowed_requests
        return allowed is None or request_type in allowed

    def streams(self, model: str) -> bool:
        """Whether to ask ``model`` for a stream (the answer still decides: see Router.stream); not when it
        was seen to refuse ``stream`` itself."""
        return (
            isinstance(self.impl, StreamingTranscriber)
            and self.allows("transcription_stream")
            and self.impl.streams(model)
            and plan.STREAM not in self.learned.refused(model)
        )

    async def admit(self) -> Lease:
        """A slot for one upstream call: at once, after waiting in the buffer, or ``Overloaded`` (503)."""
        if self._slots.locked():
            limits = self.config.concurrency
            if self._drop_excess or self._waiting >= limits.buffer_size:
                why = (
                    "drop_excess_requests is on"
                    if self._drop_excess
                    else f"its queue is full ({self._waiting} waiting, buffer_size {limits.buffer_size})"
                )
                raise Overloaded(
                    f"provider {self.config.id!r} has all {limits.concurrency} slots in use and {why}; "
                    "retry later or raise concurrency_and_buffer_size for this provider",
                    provider=self.config.id,
                    code="provider_overloaded",
                )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        return Lease(self._slots)

    def keys_for(self, model: str, direct_key: Secret | None) -> list[KeyConfig]:
        """The keys one target may use; [] for a key-less provider. Raises when none is eligible.

        400 when enabled keys exist but none allows ``model`` (the client asked for a model this gateway
        does not offer); 503 when no key is enabled at all (an operator problem, not the client's).
        """
        cfg = self.config
        if direct_key and cfg.allow_direct_keys:
            return [self._direct(model, direct_key)]
        if cfg.is_key_less and not cfg.keys:
            return []
        enabled = [k for k in cfg.keys if k.enabled]
        if not enabled:
            raise Overloaded(
                f"provider {cfg.id!r} has no enabled key; enable one in its keys list",
                provider=cfg.id, model=model, code="no_enabled_key",
            )
        allowed = [k for k in enabled if k.allows(model)]
        if not allowed:
            raise ClientError(
                f"model {model!r} is not allowed by any key of provider {cfg.id!r}; "
                f"add it to a key's models list (or use [\"*\"])",
                provider=cfg.id, model=model, param="model", code="model_not_allowed",
            )
        serving = [k for k in allowed if self._serves(k, model)]
        if not serving:
            rule = self.impl.key_rule if isinstance(self.impl, KeyAware) else ""
            raise ClientError(
                f"model {model!r} is not served by any key of provider {cfg.id!r} ({rule})",
                provider=cfg.id, model=model, param="model", code="model_not_allowed",
            )
        return serving

    def _serves(self, key: KeyConfig, model: str) -> bool:
        """Whether ``key`` serves ``model`` by the provider's own key rule (KeyAware); True without one."""
        impl = self.impl
        return impl.key_serves(key, model) if isinstance(impl, KeyAware) else True

    def _direct(self, model: str, value: Secret) -> KeyConfig:
        """The client's key, dressed in a configured key's endpoint and aliases (Azure needs both)."""
        keys = self.config.keys
        template = next((k for k in keys if k.allows(model) and self._serves(k, model)), None) or next(iter(keys), None)
        if template is None:
            return KeyConfig(name=DIRECT_KEY_NAME, value=value)
        return replace(template, name=DIRECT_KEY_NAME, value=value, models=("*",), enabled=True)

    def secrets(self, direct_key: Secret | None = None) -> tuple[str, ...]:
        """Every key value this provider could have used (the client's own included), for scrubbing."""
        values = [k.value.reveal() for k in self.config.keys] + ([direct_key.reveal()] if direct_key else [])
        return tuple(v for v in values if v)
