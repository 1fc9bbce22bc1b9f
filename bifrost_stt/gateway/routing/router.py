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
    formats     the provider is asked for what its first guess for the model says it renders
                (``render/plan.py``); a 400 refusing that format is asked again, within the attempt, for one
                the gateway renders the client's format from, and remembered per (provider, upstream model)
                for a bounded time (``ProviderSlot.learned``). Streams are asked for when the provider may
                stream; the answer decides (SSE relayed, JSON streamed by the gateway).
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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from bifrost_stt.gateway.longaudio import LongAudio, Split
from bifrost_stt.gateway.render import formats, plan
from bifrost_stt.gateway.routing.admission import Lease, ProviderSlot
from bifrost_stt.gateway.routing.streams import HeldStream, aiter_of, unreadable_is_upstream
from bifrost_stt.kernel.canonical import StreamEvent, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, StreamingTranscriber, StreamItem
from bifrost_stt.kernel.errors import (
    ClientError,
    GatewayError,
    PayloadTooLarge,
    UpstreamError,
    scrub_error,
)
from bifrost_stt.kernel.record import current as current_record
from bifrost_stt.kernel.settings import KeyConfig

log = logging.getLogger("bifrost_stt.router")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Served:
    """Which target answered, for extra_fields and the x-bifrost-* headers."""

    provider: str  # the configured provider id that served (x-bifrost-provider)
    model: str  # the model as requested of that target (no provider prefix)
    deployment: str  # the upstream id actually called (after aliases)
    fallback_index: int
    started: float  # perf_counter when the winning upstream call started (after admission)
    reported: str  # the provider as extra_fields and stream events name it
    stream_idle_timeout: float  # seconds of upstream silence a stream tolerates (its provider's setting)
    pieces: int = 1  # long audio: how many pieces served the request (bifrost_stt.gateway.longaudio)


# --------------------------------------------------------------------------------------------- policy


def backoff_delay(retry: int, initial_ms: int, max_ms: int, rng: random.Random) -> float:
    """Seconds before retry number ``retry`` (1-based): min(initial * 2^(retry-1), max) +/- 20%."""
    base = float(min(initial_ms * (2 ** (retry - 1)), max_ms))
    return max(0.0, base * rng.uniform(0.8, 1.2)) / 1000.0


def check_size(caps: Capabilities, request: TranscriptionRequest, provider: str) -> None:
    """A file over the provider's documented limit is refused here (413), so a fallback can take it."""
    limit = caps.max_file_mb
    if limit is not None and request.audio.size > limit * 1024 * 1024:
        raise PayloadTooLarge(
            f"{provider} accepts files up to {limit} MB; this one is {request.audio.size / 1048576:.1f} MB",
            param="file", code="file_too_large",
        )


Call = Callable[["ProviderSlot", TranscriptionRequest, Attempt], Awaitable[T]]
Plan = Callable[[Capabilities, TranscriptionRequest, str], TranscriptionRequest]  # what to ask a provider for
MAX_REASKS = 2  # format refusals worked around per attempt (a refusal naming what the model takes needs one)


async def opened(events: AsyncIterator[StreamItem]) -> HeldStream:
    """A provider's stream with its first item received: events are relayed as they come; a whole transcript
    (the upstream answered JSON) becomes the gateway's own stream."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        raise UpstreamError("the upstream stream ended before any event", status=502) from None
    if isinstance(first, TranscriptionResult):
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        return HeldStream(aiter_of(formats.synthesize_stream(first)))
    # A TranscriptionResult only ever comes first and alone (StreamingTranscriber.stream): the rest are events.
    return HeldStream(cast(AsyncIterator[StreamEvent], events), first=first)


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
        if split is not None:  # audio a target cannot take whole: pieces through _whole, stitched
            async with split:
                result, served = await split.transcribe(self._whole)
            return result, replace(max(served, key=lambda s: s.fallback_index), pieces=len(served), started=begun)
        return await self._whole(request)

    async def _split(self, request: TranscriptionRequest) -> Split | None:
        """Pieces when the primary target cannot take the audio whole (bifrost_stt.gateway.longaudio)."""
        if self.long_audio is None:
            return None
        slots = self.slots
        targets = [(p, m, slots[p].capabilities_for(m) if p in slots else None) for p, m in self._targets(request)]
        return await self.long_audio.prepare(request, targets)

    async def _whole(self, request: TranscriptionRequest) -> tuple[TranscriptionResult, Served]:
        async def call(slot: ProviderSlot, req: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
            return await self._asking(slot, req, attempt, plan.ask_provider, lambda wire: slot.impl.transcribe(wire, attempt))

        result, served, lease = await self._route(request, call, stream=False)
        lease.release()
        return result, served

    async def stream(self, request: TranscriptionRequest) -> tuple[AsyncIterator[StreamEvent], Served]:
        """Open a stream; errors before the first event still retry and fall back.

        A provider that may stream is asked to (``stream=true``) and its answer decides: server-sent events
        are relayed, a JSON transcript (a model that does not stream ignores the flag) is streamed by the
        gateway, as is every answer of a provider that cannot stream. The returned iterator yields the first
        event again, then the rest, and holds the provider's concurrency slot until it is exhausted, fails or
        is closed (``aclose``).
        """

        async def call(slot: ProviderSlot, req: TranscriptionRequest, attempt: Attempt) -> HeldStream:
            impl = slot.impl
            if isinstance(impl, StreamingTranscriber) and slot.streams(attempt.model):
                async def open_stream(wire: TranscriptionRequest) -> HeldStream:
                    return await opened(impl.stream(wire, attempt))

                try:
                    return await self._asking(slot, req, attempt, plan.for_stream, open_stream)
                except UpstreamError as err:
                    if not plan.refused_stream(err):
                        raise
                    slot.learned.refuse(attempt.model, {plan.STREAM})  # asked without stream from now on
                    log.info("%s/%s refused stream=true; the gateway streams it (remembered for this model)",
                             slot.config.id, attempt.model)
            # The gateway streams for this model: segments (when the provider has them) become the deltas.
            result = await self._asking(
                slot, req, attempt, plan.for_synthesized_stream, lambda wire: impl.transcribe(wire, attempt)
            )
            return HeldStream(aiter_of(formats.synthesize_stream(result)))

        begun = time.perf_counter()
        split = await self._split(request)
        if split is not None:  # pieces transcribed whole, their texts streamed in audio order
            pieces, first = await split.stream(self._whole)
            return pieces, replace(first, pieces=len(split.pieces), started=begun)
        events, served, lease = await self._route(request, call, stream=True)
        slot = self.slots[served.provider]
        direct = request.direct_key if served.provider == request.provider else None
        events.hold(lease, secrets=slot.secrets(direct), provider=slot.reported)
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
                plan.check_diarization(caps, target, provider)
                if not stream:
                    plan.check_timings(caps, target, provider)  # the format is chosen per attempt (_asking)
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
        secrets = slot.secrets(request.direct_key)
        try:
            keys = slot.keys_for(request.model, request.direct_key)
        except GatewayError as exc:
            raise self._note(exc, slot, request, None, secrets, attempts) from None
        key = self._pick(keys, avoid=set())
        limited: set[int] = set()  # id() of the keys that hit a rate limit on this target
        retry = 0
        # The request timeout bounds the target as a whole: retries and their backoff share it.
        deadline = time.monotonic() + net.default_request_timeout_in_seconds
        while True:
            attempt = Attempt(
                key=key,
                model=key.upstream_model(request.model) if key else request.model,
                timeout=max(deadline - time.monotonic(), 0.001),
                fallback_index=index,
                retry=retry,
                max_response_bytes=net.max_response_size_mb * 1024 * 1024,
                max_event_bytes=net.max_stream_event_size_kb * 1024,
                max_stream_seconds=net.max_stream_duration_in_seconds or net.default_request_timeout_in_seconds,
            )
            try:
                lease = await slot.admit()
            except GatewayError as exc:
                raise self._note(exc, slot, request, key, secrets, attempts) from None
            started = time.perf_counter()
            try:
                value = await unreadable_is_upstream(call(slot, request, attempt), cfg.id)
            except GatewayError as exc:
                lease.release()  # never hold a slot through the backoff sleep
                self._note(exc, slot, request, key, secrets, attempts)
                again = isinstance(exc, UpstreamError) and exc.retryable and retry < net.max_retries
                rotates = again and key is not None and isinstance(exc, UpstreamError) and exc.rate_limited
                _record_attempt(cfg.id, attempt, started, exc.status,
                                rotated="rate_limited" if rotates and len(keys) > 1 else None, retrying=again)
                if not isinstance(exc, UpstreamError) or not again:
                    raise
                retry += 1
                delay = backoff_delay(retry, net.retry_backoff_initial, net.retry_backoff_max, self._rng)
                retry_after = _retry_after(exc)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), net.retry_backoff_max / 1000.0)
                if time.monotonic() + delay >= deadline:
                    log.info("not retrying %s/%s: the request timeout (%gs) leaves no time for it",
                             cfg.id, request.model, net.default_request_timeout_in_seconds)
                    raise
                if key is not None and exc.rate_limited:
                    limited.add(id(key))
                    key = self._pick(keys, avoid=limited, current=key)
                log.info("retrying %s/%s in %.3fs (retry %d of %d after %d)",
                         cfg.id, request.model, delay, retry, net.max_retries, exc.status)
                await self._sleep(delay)
                continue
            except BaseException:  # cancellation (the client went away) or a bug: no retry, no fallback
                lease.release()
                raise
            _record_attempt(cfg.id, attempt, started, 200, served=True)
            served = Served(cfg.id, request.model, attempt.model, index, started, reported=slot.reported,
                            stream_idle_timeout=net.stream_idle_timeout_in_seconds)
            return value, served, lease

    async def _asking(
        self,
        slot: ProviderSlot,
        request: TranscriptionRequest,
        attempt: Attempt,
        plan_for: Plan,
        send: Callable[[TranscriptionRequest], Awaitable[T]],
    ) -> T:
        """``send`` the request ``plan_for`` makes from what ``slot`` knows of ``attempt.model``.

        When the upstream refuses the format it was asked for and the gateway can render the client's
        format from another (``plan.refused_formats``), the refusal is remembered for the model
        (``slot.learned``, so the next request asks for a format it takes at once) and the upstream is asked
        again, at most ``MAX_REASKS`` times per attempt.
        """
        wire = plan_for(slot.capabilities_for(attempt.model), request, slot.reported)
        for reask in range(MAX_REASKS + 1):
            try:
                return await send(wire)
            except UpstreamError as err:
                refused = plan.refused_formats(err, wire.response_format)
                if refused is None or reask == MAX_REASKS:
                    raise
                slot.learned.refuse(attempt.model, refused)
                again = plan_for(slot.capabilities_for(attempt.model), request, slot.reported)
                if again.response_format == wire.response_format:
                    raise
                log.info("%s/%s refused response_format=%s; asking for %s (remembered for this model)",
                         slot.config.id, attempt.model, wire.response_format, again.response_format)
                wire = again
        raise AssertionError("unreachable: the last ask returns or raises")

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
        err.provider = err.provider or slot.reported
        err.model = err.model or request.model
        message = scrub_error(err, secrets).message
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


def _record_attempt(provider: str, attempt: Attempt, started: float, status: int, *, served: bool = False,
                    rotated: str | None = None, retrying: bool = False) -> None:
    """Tell the request's record (when there is one) about one upstream call: who, how long, how it ended;
    the winning call also names what served the request. Key names only, never values."""
    record = current_record()
    if record is None:
        return
    key = attempt.key.name if attempt.key is not None else None
    entry: dict[str, Any] = {"provider": provider, "model": attempt.model, "status": status, "key_id": key,
                             "key_name": key, "fallback_index": attempt.fallback_index, "retry": attempt.retry,
                             "start_ms": (started - record.started) * 1000.0,
                             "latency_ms": (time.perf_counter() - started) * 1000.0}
    if rotated:
        entry["rotated"] = rotated
    record.attempts.append(entry)
    record.retries += int(retrying)
    record.fallback_index = attempt.fallback_index
    if served:
        record.provider, record.model = provider, attempt.model
        record.selected_key_id = record.selected_key_name = key
        record.upstream_latency_ms = entry["latency_ms"]


def _retry_after(err: GatewayError) -> float | None:
    raw = next((v for k, v in err.headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: rare for APIs; our own backoff applies




