"""Routing policy: which provider, which key, how many tries, which fallback. No vendor knowledge here.

For one client request the router walks the targets (the primary, then each fallback in order). For each
target it picks a key by weight among the keys that allow the model, asks the provider through the narrow
capabilities of ``providers.base``, and retries retryable failures with exponential backoff and jitter.
A 429 moves the retry to another key when there is one; a network failure retries the same key.
When every target fails, the primary's error is raised with every attempt listed in ``extra_fields.attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from gateway import formats
from gateway.canonical import StreamEvent, TranscriptionRequest, TranscriptionResult
from gateway.errors import ClientError, GatewayError, Overloaded, UpstreamError
from gateway.settings import KeyConfig, ProviderConfig
from providers.base import Attempt, Capabilities, StreamingTranscriber, Transcriber

log = logging.getLogger("bifrost_stt.router")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Served:
    """Which target answered, for extra_fields and the x-bifrost-* headers."""

    provider: str
    model: str  # the model as requested of that target (no provider prefix)
    deployment: str  # the upstream id actually called (after aliases)
    fallback_index: int
    started: float  # perf_counter when the winning upstream call started


class ProviderSlot:
    """One configured provider: its implementation, its config and its admission queue."""

    def __init__(self, config: ProviderConfig, impl: Transcriber, *, drop_excess: bool) -> None:
        self.config = config
        self.impl = impl
        self._slots = asyncio.Semaphore(max(1, config.concurrency.concurrency))
        self._waiting = 0
        self._drop_excess = drop_excess

    @property
    def capabilities(self) -> Capabilities:
        return self.impl.capabilities

    def streams(self, model: str) -> bool:
        return isinstance(self.impl, StreamingTranscriber) and self.impl.streams(model)

    async def admit(self) -> None:
        if self._slots.locked():
            if self._waiting >= self.config.concurrency.buffer_size or self._drop_excess:
                raise Overloaded(
                    f"provider {self.config.id!r} is at its concurrency limit "
                    f"({self.config.concurrency.concurrency} in flight, "
                    f"{self._waiting} queued); retry later or raise concurrency_and_buffer_size",
                    provider=self.config.id,
                )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._slots.release()

    def keys_for(self, model: str, direct_key: str | None) -> list[KeyConfig]:
        if direct_key and self.config.allow_direct_keys:
            from gateway.settings import Secret

            template = self.config.keys[0] if self.config.keys else None
            return [
                KeyConfig(
                    name="client-supplied",
                    value=Secret(direct_key),
                    azure=template.azure if template else None,
                    url=template.url if template else None,
                )
            ]
        return [k for k in self.config.keys if k.allows(model)]


def backoff_delay(retry: int, initial_ms: int, max_ms: int, rng: random.Random) -> float:
    """Seconds before retry number ``retry`` (1-based): min(initial * 2^(retry-1), max) +/- 20%."""
    base = min(initial_ms * (2 ** (retry - 1)), max_ms)
    return max(0.0, base * rng.uniform(0.8, 1.2)) / 1000.0


def plan_format(caps: Capabilities, request: TranscriptionRequest) -> TranscriptionRequest:
    """Ask the provider for what it can give; the gateway renders the rest (gateway.formats)."""
    fmt = request.response_format
    wants_timings = formats.needs_rich(fmt, request.timestamp_granularities)
    if fmt in caps.native_formats and not (
        fmt == "verbose_json" and "word" in request.timestamp_granularities and not caps.word_timestamps
    ):
        return request
    if "verbose_json" in caps.native_formats and (wants_timings or fmt not in caps.native_formats):
        grans: tuple[str, ...] = ()
        if caps.segment_timestamps:
            grans += ("segment",)
        if caps.word_timestamps and (
            "word" in request.timestamp_granularities or not caps.segment_timestamps
        ):
            grans += ("word",)
        return replace(request, response_format="verbose_json", timestamp_granularities=grans)
    return replace(request, response_format="json")


class Router:
    def __init__(
        self,
        slots: Mapping[str, ProviderSlot],
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.slots = dict(slots)
        self._rng = rng or random.Random()
        self._sleep = sleep

    @property
    def configured(self) -> frozenset[str]:
        return frozenset(self.slots)

    # -- public API -------------------------------------------------------------------------------

    async def transcribe(self, request: TranscriptionRequest) -> tuple[TranscriptionResult, Served]:
        async def call(slot: ProviderSlot, req: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
            return await slot.impl.transcribe(req, attempt)

        return await self._route(request, call, stream=False)

    async def stream(self, request: TranscriptionRequest) -> tuple[AsyncIterator[StreamEvent], Served]:
        """Open a stream; errors before the first event still retry and fall back.

        The returned iterator yields the first event again, then the rest.
        """

        async def call(slot: ProviderSlot, req: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamEvent]:
            impl = slot.impl
            if isinstance(impl, StreamingTranscriber) and impl.streams(attempt.model):
                events = impl.stream(req, attempt)
                first = await events.__anext__()
                return _prepend(first, events)
            result = await impl.transcribe(plan_format(slot.capabilities, replace(req, stream=False)), attempt)
            return _aiter(formats.synthesize_stream(result))

        return await self._route(request, call, stream=True)

    # -- policy -----------------------------------------------------------------------------------

    def _targets(self, request: TranscriptionRequest) -> list[tuple[str, str]]:
        targets = [(request.provider, request.model)]
        for fallback in request.fallbacks:
            provider, _, model = fallback.partition("/")
            targets.append((provider, model))
        return targets

    async def _route(
        self,
        request: TranscriptionRequest,
        call: Callable[[ProviderSlot, TranscriptionRequest, Attempt], Awaitable[T]],
        *,
        stream: bool,
    ) -> tuple[T, Served]:
        attempts: list[dict[str, Any]] = []
        primary: GatewayError | None = None
        for index, (provider, model) in enumerate(self._targets(request)):
            slot = self.slots.get(provider)
            if slot is None:
                attempts.append({"provider": provider, "model": model, "status": 0,
                                 "message": f"skipped: provider {provider!r} is not configured"})
                continue
            target_req = replace(request, provider=provider, model=model)
            if not stream:
                target_req = plan_format(slot.capabilities, target_req)
            try:
                value, served = await self._with_retries(slot, target_req, index, call, attempts)
                return value, served
            except GatewayError as err:
                if primary is None:
                    primary = err
                log.info("target %d (%s/%s) failed: %s", index, provider, model, err.message)
        assert primary is not None
        if len(attempts) > 1:
            primary.extra["attempts"] = attempts
        raise primary

    async def _with_retries(
        self,
        slot: ProviderSlot,
        request: TranscriptionRequest,
        index: int,
        call: Callable[[ProviderSlot, TranscriptionRequest, Attempt], Awaitable[T]],
        attempts: list[dict[str, Any]],
    ) -> tuple[T, Served]:
        cfg = slot.config
        keys = slot.keys_for(request.model, request.direct_key)
        if not keys and not cfg.is_key_less:
            err: GatewayError = ClientError(
                f"provider {cfg.id!r} has no enabled key that allows model {request.model!r}; "
                f"add the model to a key's models list (or use [\"*\"])",
                provider=cfg.id, model=request.model, code="no_eligible_key",
            )
            attempts.append(_attempt_note(cfg.id, request.model, err))
            raise err
        net = cfg.network
        key = self._pick(keys, exclude=None)
        retry = 0
        while True:
            attempt = Attempt(
                key=key,
                model=key.upstream_model(request.model) if key else request.model,
                timeout=net.default_request_timeout_in_seconds,
                fallback_index=index,
                retry=retry,
            )
            started = time.perf_counter()
            await slot.admit()
            try:
                value = await call(slot, request, attempt)
            except UpstreamError as exc:
                exc.provider = exc.provider or cfg.id
                exc.model = exc.model or request.model
                attempts.append(_attempt_note(cfg.id, request.model, exc, key))
                if not exc.retryable or retry >= net.max_retries:
                    raise
                retry += 1
                delay = backoff_delay(retry, net.retry_backoff_initial, net.retry_backoff_max, self._rng)
                retry_after = _retry_after(exc)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), net.retry_backoff_max / 1000.0)
                if exc.status == 429 and key is not None:
                    key = self._pick(keys, exclude=key)
                log.info("retrying %s/%s in %.3fs (retry %d of %d, status %d)",
                         cfg.id, request.model, delay, retry, net.max_retries, exc.status)
                await self._sleep(delay)
                continue
            except GatewayError as exc:
                exc.provider = exc.provider or cfg.id
                attempts.append(_attempt_note(cfg.id, request.model, exc, key))
                raise
            finally:
                slot.release()
            return value, Served(cfg.id, request.model, attempt.model, index, started)

    def _pick(self, keys: list[KeyConfig], exclude: KeyConfig | None) -> KeyConfig | None:
        if not keys:
            return None
        pool = [k for k in keys if k is not exclude] or keys
        return self._rng.choices(pool, weights=[max(k.weight, 0.0) or 1e-9 for k in pool])[0]


def _attempt_note(provider: str, model: str, err: GatewayError, key: KeyConfig | None = None) -> dict[str, Any]:
    note: dict[str, Any] = {"provider": provider, "model": model, "status": err.status, "message": err.message}
    if key is not None:
        note["key"] = key.name
    return note


def _retry_after(err: GatewayError) -> float | None:
    raw = err.headers.get("retry-after") or err.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


async def _prepend(first: StreamEvent, rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    yield first
    async for event in rest:
        yield event


async def _aiter(events: Any) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event
