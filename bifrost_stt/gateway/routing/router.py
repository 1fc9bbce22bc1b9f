"""Routing policy: which provider, which key, how many tries, which fallback. No vendor knowledge here.

For one client request the router walks the targets: the primary, then each fallback in order, each with
its own model. Per target:

    admission   at most ``concurrency`` calls in flight, at most ``buffer_size`` waiting for a slot; a full
                buffer is 503 at once, and with ``drop_excess_requests`` so is "no slot free" (no waiting).
                A stream holds its slot until the stream ends, not just until it opens.
    keys        weighted random choice among the enabled keys whose ``models`` allow the model; a key's
                ``aliases`` name the upstream id. Enabled keys but none for the model: 400. No enabled key
                at all: 503. A client's own key (``allow_direct_keys``) replaces them for its provider only.
    retries     ``max_retries`` extra calls on 429/500/502/503/504, network failures and rate-limit wording;
                backoff min(initial * 2^(n-1), max) +/- 20 %, lengthened to an upstream Retry-After up to the
                max. A rate limit moves the retry to a key not yet limited; anything else keeps the key.
    fallbacks   any failure of a target except client cancellation moves on to the next target; an
                unconfigured fallback provider is skipped and noted. When all fail the primary's error is
                raised, with every attempt listed in ``extra_fields.attempts``.

Every error leaving the router is scrubbed of key values and of a vendor's masked echo of one
("sk-****e0b3"); a 401/403 names the key that failed by its configured name. See docs/routing.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from bifrost_stt.gateway.longaudio import LongAudio, Split, Target
from bifrost_stt.gateway.render import formats
from bifrost_stt.kernel.canonical import StreamEvent, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.errors import (
    RETRYABLE_STATUSES,
    ClientError,
    GatewayError,
    Overloaded,
    PayloadTooLarge,
    UpstreamError,
    UpstreamUnavailable,
)
from bifrost_stt.kernel.settings import KeyConfig, LongAudioConfig, ProviderConfig, Secret
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, ModelAware, StreamingTranscriber, Transcriber

log = logging.getLogger("bifrost_stt.router")
T = TypeVar("T")

DIRECT_KEY_NAME = "client-supplied"
_MASK = "**********"
_RATE_LIMIT = re.compile(r"rate[ _-]?limit|too many requests|throttl", re.IGNORECASE)
# A vendor's masked echo of a key: "sk-ab***...***e0b3" or "sk-...e0b3" (OpenAI, Azure and others).
_MASKED_KEY = re.compile(r"[^\s*]*\*{3,}[^\s.,;:)'\"]*|\b[\w-]{2,}(?:\.{3}|…)[\w-]{3,}\b")


@dataclass(frozen=True, slots=True)
class Served:
    """Which target answered, for extra_fields and the x-bifrost-* headers."""

    provider: str
    model: str  # the model as requested of that target (no provider prefix)
    deployment: str  # the upstream id actually called (after aliases)
    fallback_index: int
    started: float  # perf_counter when the winning upstream call started (after admission)
    pieces: int = 1  # long audio: how many pieces served the request (bifrost_stt.gateway.longaudio)


# ------------------------------------------------------------------------------------------ admission


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
    """One configured provider: its implementation, its config and its admission queue."""

    def __init__(
        self, config: ProviderConfig, impl: Transcriber, *, drop_excess: bool, limits: LongAudioConfig | None = None
    ) -> None:
        self.config = config
        self.impl = impl
        self._limits = limits  # an operator's long_audio.limits override the declared size/duration limits
        self._slots = asyncio.Semaphore(max(1, config.concurrency.concurrency))
        self._waiting = 0
        self._drop_excess = drop_excess

    @property
    def capabilities(self) -> Capabilities:
        return self.impl.capabilities

    def capabilities_for(self, model: str) -> Capabilities:
        impl = self.impl
        caps = impl.capabilities_for(model) if isinstance(impl, ModelAware) else impl.capabilities
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
        return (
            isinstance(self.impl, StreamingTranscriber)
            and self.allows("transcription_stream")
            and self.impl.streams(model)
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

    def keys_for(self, model: str, direct_key: str | None) -> list[KeyConfig]:
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
        return allowed

    def _direct(self, model: str, value: str) -> KeyConfig:
        """The client's key, dressed in a configured key's endpoint and aliases (Azure needs both)."""
        keys = self.config.keys
        template = next((k for k in keys if k.allows(model)), None) or next(iter(keys), None)
        if template is None:
            return KeyConfig(name=DIRECT_KEY_NAME, value=Secret(value))
        return replace(template, name=DIRECT_KEY_NAME, value=Secret(value), models=("*",), enabled=True)

    def secrets(self, extra: Iterable[str | None] = ()) -> tuple[str, ...]:
        """Every key value this provider could have used, for scrubbing messages."""
        values = [k.value.reveal() for k in self.config.keys] + [v for v in extra if v]
        return tuple(v for v in values if v)


# --------------------------------------------------------------------------------------------- policy


def backoff_delay(retry: int, initial_ms: int, max_ms: int, rng: random.Random) -> float:
    """Seconds before retry number ``retry`` (1-based): min(initial * 2^(retry-1), max) +/- 20%."""
    base = float(min(initial_ms * (2 ** (retry - 1)), max_ms))
    return max(0.0, base * rng.uniform(0.8, 1.2)) / 1000.0


def is_rate_limited(err: GatewayError) -> bool:
    """A 429, or an error whose wording says rate limit (some vendors answer 400/403 for it)."""
    if err.status == 429 or err.extra.get("upstream_status") == 429:
        return True
    return any(_RATE_LIMIT.search(s) for s in (err.message, err.code or "", err.error_type) if s)


def is_retryable(err: UpstreamError) -> bool:
    """429/500/502/503/504 (the upstream's own status when a non-JSON body hid it), network, rate limits."""
    status = err.extra.get("upstream_status", err.status)
    return status in RETRYABLE_STATUSES or is_rate_limited(err)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any key value nor a vendor's masked echo of one."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return _MASKED_KEY.sub(_MASK, text)


# What a provider's conversion code raises when an answer is not the shape it documents (a null where a
# number belongs, a string for a list): the upstream's fault, so a 502 that is retried and falls back.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def _unreadable(exc: BaseException, provider: str) -> UpstreamUnavailable:
    log.error("%s sent an answer the gateway could not read", provider, exc_info=exc)
    return UpstreamUnavailable(
        f"{provider} sent an answer the gateway could not read ({type(exc).__name__})", provider=provider
    )


async def _unreadable_is_upstream(work: Awaitable[T], provider: str) -> T:
    try:
        return await work
    except GatewayError:
        raise
    except UNREADABLE as exc:
        raise _unreadable(exc, provider) from exc


def _clean(err: GatewayError, secrets: tuple[str, ...], provider: str | None) -> None:
    """Scrub ``err``'s message in place; name the provider (its kind) when the error does not."""
    err.message = scrub(err.message, secrets)
    err.args = (err.message,)
    err.provider = err.provider or provider


def plan_format(caps: Capabilities, request: TranscriptionRequest, provider: str = "") -> TranscriptionRequest:
    """Ask the provider for what it can give; the gateway renders the rest (bifrost_stt.gateway.render.formats).

    Timings a verbose_json client asked for by name (``timestamp_granularities``) that the provider cannot
    give are refused with a 400 naming them, rather than silently left out.
    """
    fmt = request.response_format
    asked = request.timestamp_granularities
    # segments can always be built from words (bifrost_stt.gateway.render.formats groups them), never words from segments
    has = {"word": caps.word_timestamps, "segment": caps.segment_timestamps or caps.word_timestamps}
    missing = [g for g in asked if not has.get(g, False)]
    if missing and fmt == "verbose_json":  # only verbose_json shows timings; other formats lose nothing
        raise ClientError(
            f"{provider or 'this provider'} cannot give {' or '.join(missing)} timestamps for model "
            f"{request.model!r}; drop timestamp_granularities={missing[0]} or use another provider/model",
            param="timestamp_granularities", code="unsupported_parameter",
        )
    if fmt in caps.native_formats:
        return request
    if "verbose_json" in caps.native_formats and formats.needs_rich(fmt, asked):
        grans: tuple[str, ...] = ()
        if caps.segment_timestamps:
            grans += ("segment",)
        if caps.word_timestamps and ("word" in asked or not caps.segment_timestamps):
            grans += ("word",)
        return replace(request, response_format="verbose_json", timestamp_granularities=grans)
    return replace(request, response_format="json", timestamp_granularities=())


def check_size(caps: Capabilities, request: TranscriptionRequest, provider: str) -> None:
    """A file over the provider's documented limit is refused here (413), so a fallback can take it."""
    limit = caps.max_file_mb
    if limit is not None and request.audio.size > limit * 1024 * 1024:
        raise PayloadTooLarge(
            f"{provider} accepts files up to {limit} MB; this one is {request.audio.size / 1048576:.1f} MB",
            param="file", code="file_too_large",
        )


Call = Callable[["ProviderSlot", TranscriptionRequest, Attempt], Awaitable[T]]


class Router:
    def __init__(
        self,
        slots: Mapping[str, ProviderSlot],
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        long_audio: LongAudio | None = None,
    ) -> None:
        self.slots = dict(slots)
        self.long_audio = long_audio
        self._rng = rng or random.Random()
        self._sleep = sleep

    @property
    def configured(self) -> frozenset[str]:
        return frozenset(self.slots)

    # -- public API -------------------------------------------------------------------------------

    async def transcribe(self, request: TranscriptionRequest) -> tuple[TranscriptionResult, Served]:
        begun = time.perf_counter()
        split = await self._split(request)
        if split is not None:  # audio the target cannot take whole: pieces through _whole, stitched
            async with split:
                result, served = await split.transcribe(self._whole)
            return result, replace(max(served, key=lambda s: s.fallback_index), pieces=len(served), started=begun)
        return await self._whole(request)

    async def _split(self, request: TranscriptionRequest) -> Split | None:
        if self.long_audio is None:
            return None
        targets = []
        for provider, model in self._targets(request):
            slot = self.slots.get(provider)
            if slot is not None:
                caps = slot.capabilities_for(model)
                limit = caps.max_file_mb * 1024 * 1024 if caps.max_file_mb is not None else None
                targets.append(Target(provider, model, limit, caps.max_duration_s))
            elif not targets:
                return None  # the primary is not configured: _route says so
        return await self.long_audio.prepare(request, targets)

    async def _whole(self, request: TranscriptionRequest) -> tuple[TranscriptionResult, Served]:
        async def call(slot: ProviderSlot, req: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
            return await slot.impl.transcribe(req, attempt)

        result, served, lease = await self._route(request, call, stream=False)
        lease.release()
        return result, served

    async def stream(self, request: TranscriptionRequest) -> tuple[AsyncIterator[StreamEvent], Served]:
        """Open a stream; errors before the first event still retry and fall back.

        The returned iterator yields the first event again, then the rest, and holds the provider's
        concurrency slot until it is exhausted, fails or is closed (``aclose``).
        """

        async def call(slot: ProviderSlot, req: TranscriptionRequest, attempt: Attempt) -> HeldStream:
            impl = slot.impl
            if isinstance(impl, StreamingTranscriber) and slot.streams(attempt.model):
                events = impl.stream(req, attempt)
                try:
                    first = await events.__anext__()
                except StopAsyncIteration:
                    raise UpstreamError("the upstream stream ended before any event", status=502) from None
                return HeldStream(events, first=first)
            # The gateway streams for this model: segments (when the provider has them) become the deltas.
            caps = slot.capabilities_for(req.model)
            rich = "verbose_json" if "verbose_json" in caps.native_formats else "json"
            wire = replace(req, stream=False, response_format=rich, timestamp_granularities=())
            result = await impl.transcribe(plan_format(caps, wire, slot.config.id), attempt)
            return HeldStream(_aiter(formats.synthesize_stream(result)))

        begun = time.perf_counter()
        split = await self._split(request)
        if split is not None:  # pieces transcribed whole, their texts streamed in audio order
            pieces, first = await split.stream(self._whole)
            return pieces, replace(first, pieces=len(split.pieces), started=begun)
        events, served, lease = await self._route(request, call, stream=True)
        slot = self.slots[served.provider]
        direct = request.direct_key if served.provider == request.provider else None
        events.hold(lease, secrets=slot.secrets([direct]), provider=slot.config.kind)
        return events, served

    # -- policy -----------------------------------------------------------------------------------

    def _targets(self, request: TranscriptionRequest) -> list[tuple[str, str]]:
        targets = [(request.provider, request.model)]
        for fallback in request.fallbacks:
            provider, _, model = fallback.partition("/")
            targets.append((provider, model))
        return targets

    async def _route(
        self, request: TranscriptionRequest, call: Call[T], *, stream: bool
    ) -> tuple[T, Served, Lease]:
        attempts: list[dict[str, Any]] = []
        primary: GatewayError | None = None
        for index, (provider, model) in enumerate(self._targets(request)):
            slot = self.slots.get(provider)
            if slot is None:
                note = f"skipped: provider {provider!r} is not configured"
                attempts.append({"provider": provider, "model": model, "status": 0, "message": note})
                if index == 0:
                    primary = ClientError(note.removeprefix("skipped: "), provider=provider, model=model,
                                          code="provider_not_configured")
                continue
            # A client's own key is for the provider it named, never for another vendor's fallback.
            direct = request.direct_key if provider == request.provider else None
            target = replace(request, provider=provider, model=model, direct_key=direct)
            try:
                if not slot.allows("transcription"):
                    raise ClientError(
                        f"provider {provider!r} does not take transcription requests "
                        "(custom_provider_config.allowed_requests)", code="request_type_not_allowed",
                    )
                caps = slot.capabilities_for(model)
                check_size(caps, target, provider)
                if not stream:
                    target = plan_format(caps, target, provider)
            except GatewayError as err:
                self._note(err, slot, target, None, (), attempts)
                primary = primary or err
                log.info("target %d (%s/%s) refused: %s", index, provider, model, err.message)
                continue
            try:
                return await self._with_retries(slot, target, index, call, attempts)
            except GatewayError as err:
                if primary is None:
                    primary = err
                log.info("target %d (%s/%s) failed: %s", index, provider, model, err.message)
        assert primary is not None  # the primary target always records an error before we get here
        if len(attempts) > 1 or request.fallbacks:
            primary.extra["attempts"] = attempts
        raise primary

    async def _with_retries(
        self,
        slot: ProviderSlot,
        request: TranscriptionRequest,
        index: int,
        call: Call[T],
        attempts: list[dict[str, Any]],
    ) -> tuple[T, Served, Lease]:
        """One target: pick a key, admit, call; retry what is retryable. Every failed call is listed."""
        cfg, net = slot.config, slot.config.network
        secrets = slot.secrets([request.direct_key])
        try:
            keys = slot.keys_for(request.model, request.direct_key)
        except GatewayError as exc:
            raise self._note(exc, slot, request, None, secrets, attempts) from None
        key = self._pick(keys, avoid=set())
        limited: set[int] = set()  # id() of the keys that hit a rate limit on this target
        retry = 0
        while True:
            attempt = Attempt(
                key=key,
                model=key.upstream_model(request.model) if key else request.model,
                timeout=net.default_request_timeout_in_seconds,
                fallback_index=index,
                retry=retry,
            )
            try:
                lease = await slot.admit()
            except GatewayError as exc:
                raise self._note(exc, slot, request, key, secrets, attempts) from None
            started = time.perf_counter()
            try:
                value = await _unreadable_is_upstream(call(slot, request, attempt), cfg.id)
            except GatewayError as exc:
                lease.release()  # never hold a slot through the backoff sleep
                self._note(exc, slot, request, key, secrets, attempts)
                if not isinstance(exc, UpstreamError) or not is_retryable(exc) or retry >= net.max_retries:
                    raise
                retry += 1
                delay = backoff_delay(retry, net.retry_backoff_initial, net.retry_backoff_max, self._rng)
                retry_after = _retry_after(exc)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), net.retry_backoff_max / 1000.0)
                if key is not None and is_rate_limited(exc):
                    limited.add(id(key))
                    key = self._pick(keys, avoid=limited, current=key)
                log.info("retrying %s/%s in %.3fs (retry %d of %d after %d)",
                         cfg.id, request.model, delay, retry, net.max_retries, exc.status)
                await self._sleep(delay)
                continue
            except BaseException:  # cancellation (the client went away) or a bug: no retry, no fallback
                lease.release()
                raise
            return value, Served(cfg.id, request.model, attempt.model, index, started), lease

    def _note(
        self,
        err: GatewayError,
        slot: ProviderSlot,
        request: TranscriptionRequest,
        key: KeyConfig | None,
        secrets: tuple[str, ...],
        attempts: list[dict[str, Any]],
    ) -> GatewayError:
        """Fill in who failed, scrub secrets, name a rejected key, and list the attempt."""
        # extra_fields.provider is the contract's provider enum: a custom provider reports its kind
        err.provider = err.provider or slot.config.kind
        err.model = err.model or request.model
        message = scrub(err.message, secrets)
        if err.status in (401, 403) and key is not None and "(key " not in message:
            message += f" (key {key.name!r})"
        err.message = message
        err.args = (message,)
        attempts.append(
            {"provider": slot.config.id, "model": request.model, "status": err.status, "message": message}
        )
        return err

    def _pick(self, keys: list[KeyConfig], avoid: set[int], current: KeyConfig | None = None) -> KeyConfig | None:
        """Weighted random choice, preferring keys not in ``avoid``, then any key but ``current``."""
        if not keys:
            return None
        pool = [k for k in keys if id(k) not in avoid] or [k for k in keys if k is not current] or keys
        weights = [max(k.weight, 0.0) for k in pool]
        return self._rng.choices(pool, weights=weights if sum(weights) > 0 else None)[0]


def _retry_after(err: GatewayError) -> float | None:
    raw = next((v for k, v in err.headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: rare for APIs; our own backoff applies


# ------------------------------------------------------------------------------------------ streams


class HeldStream:
    """An event stream that owns its provider's concurrency slot until it ends, fails or is closed.

    Closing it also closes the upstream iterator at once, so a client that goes away mid-stream closes
    the upstream connection instead of leaving it to the garbage collector.
    """

    _EMPTY: Any = object()

    def __init__(self, events: AsyncIterator[StreamEvent], *, first: StreamEvent | None = None) -> None:
        self._events = events
        self._first: Any = self._EMPTY if first is None else first
        self._lease: Lease | None = None
        self._closed = False
        self._secrets: tuple[str, ...] = ()
        self._provider: str | None = None

    def hold(self, lease: Lease, *, secrets: tuple[str, ...] = (), provider: str | None = None) -> None:
        """Own ``lease`` until the stream ends; scrub ``secrets`` from any error raised mid-stream."""
        self._lease = lease
        self._secrets = secrets
        self._provider = provider
        if self._closed:
            lease.release()

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._first is not self._EMPTY:
            first, self._first = self._first, self._EMPTY
            return first  # type: ignore[no-any-return]
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._events.__anext__()
        except GatewayError as err:
            # A vendor's mid-stream error may echo the key: it leaves scrubbed, like every other error.
            _clean(err, self._secrets, self._provider)
            await self.aclose()
            raise
        except UNREADABLE as exc:
            await self.aclose()
            raise _unreadable(exc, self._provider or "the provider") from exc
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._lease is not None:
                self._lease.release()


async def _aiter(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event
