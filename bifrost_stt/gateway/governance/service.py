"""``Governance``: what the handlers call. ``admit`` before the upstream call, ``Ticket.settle`` after it.

    admit(headers, request)
      key        none: 401 when enforced, else the request goes on ungoverned (still priced)
                 unknown 403 virtual_key_not_found; inactive 403 virtual_key_blocked
      targets    the primary must be allowed (403 provider_blocked / model_blocked); fallbacks the key
                 does not allow are dropped; a client's ``sk-bf-`` bearer is never a provider key
      limits     the key's budget (402) and rate limit (429 + Retry-After): requests counted now, budget
                 and audio seconds checked now (used >= max refuses) and charged in ``settle``
    settle(result, served)
      seconds    provider usage, else verbose_json duration, else the file itself (``kernel.duration``)
      cost       the price table (``None`` when the price is unknown: charged nothing, reported unknown)
      charge     the budget by the cost, the audio-seconds quota by the seconds; the request record gets
                 the key's id and name, the seconds and the cost

A cache hit (``settle_cache_hit``) costs nothing and charges no budget nor audio seconds; its request was
counted by ``admit`` like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bifrost_stt.gateway.governance import decide, durations
from bifrost_stt.gateway.governance.configstore import ConfigStore, Snapshot
from bifrost_stt.gateway.governance.counters import (
    Counters,
    Limit,
    RedisCounters,
    SQLiteCounters,
    StoreUnavailable,
)
from bifrost_stt.gateway.governance.errors import (
    BudgetExceeded,
    Forbidden,
    GovernanceUnavailable,
    RateLimited,
    VirtualKeyRequired,
)
from bifrost_stt.gateway.governance.pricing import PriceTable
from bifrost_stt.kernel import record as records
from bifrost_stt.kernel.canonical import AudioSource, StreamDone, StreamEvent, TranscriptionRequest, TranscriptionResult, Usage
from bifrost_stt.kernel.errors import Overloaded
from bifrost_stt.kernel.governance import GovernanceConfig, VirtualKeyConfig
from bifrost_stt.kernel.duration import audio_seconds, file_duration

log = logging.getLogger("bifrost_stt.governance")


def default_store_path() -> Path:
    """``$TMPDIR/bifrost-stt-<uid>/governance.sqlite3``, in a directory only this user can enter."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    directory = Path(tempfile.gettempdir()) / f"bifrost-stt-{uid}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise PermissionError(f"{directory} is not a directory owned by this user; set config_store.config.path")
    return directory / "governance.sqlite3"


@dataclass(slots=True)
class Ticket:
    """One admitted request: what to charge when it ends."""

    governance: Governance
    vk: VirtualKeyConfig | None
    file_seconds: float | None  # the upload's own length, when known
    budget_keys: list[tuple[str, float]] = field(default_factory=list)  # (counter key, window end)
    audio_keys: list[tuple[str, float]] = field(default_factory=list)
    settled: bool = False
    audio: AudioSource | None = None  # read for its length once, and only when needed (``file_length``)

    def file_length(self) -> float | None:
        """The upload's own length: most answers carry their duration, so the file is read only when asked."""
        if self.file_seconds is None and self.audio is not None:
            self.file_seconds = file_duration(self.audio)
        self.audio = None
        return self.file_seconds

    async def settle(self, result: TranscriptionResult | None, provider: str, models: tuple[str, ...],
                     usage: Usage | None = None) -> float | None:
        """Meter and price the call, charge the key; returns the cost (None: unknown). Once per request."""
        if self.settled:
            return None
        self.settled = True
        gov = self.governance
        seconds = audio_seconds(result) or self.file_length()
        if usage is None and result is not None:
            usage = result.usage
        if usage is not None and usage.seconds and (result is None or result.usage is None):
            seconds = float(usage.seconds)
        cost = gov.prices.cost(provider, gov.kind_of(provider), models, seconds, usage)
        rec = records.current()
        if rec is not None:
            rec.audio_seconds = seconds
            rec.cost = cost
        if cost is None and seconds is not None:
            gov.note_unpriced(provider, models)
        charges = [(key, cost, end) for key, end in self.budget_keys if cost]
        charges += [(key, seconds, end) for key, end in self.audio_keys if seconds]
        if charges:
            try:
                await gov.counters_or_fail().add(charges)
            except StoreUnavailable as exc:
                gov.store_failures += 1
                log.warning("governance: could not charge %s (counter store unavailable: %s)",
                            self.vk.name if self.vk else "a request", exc)
        return cost

    def settle_cache_hit(self) -> None:
        """A cached answer: no upstream call, no cost, nothing charged."""
        self.settled = True
        rec = records.current()
        if rec is not None:
            rec.cost = 0.0

    def watch(self, events: AsyncIterator[StreamEvent], provider: str,
              models: tuple[str, ...]) -> AsyncIterator[StreamEvent]:
        """``events``, settling when the final event passes."""
        return _SettlingStream(events, self, provider, models)


class _SettlingStream:
    def __init__(self, events: AsyncIterator[StreamEvent], ticket: Ticket, provider: str,
                 models: tuple[str, ...]) -> None:
        self._events, self._ticket, self._provider, self._models = events, ticket, provider, models

    def __aiter__(self) -> _SettlingStream:
        return self

    async def __anext__(self) -> StreamEvent:
        event = await self._events.__anext__()
        if isinstance(event, StreamDone):
            await self._ticket.settle(None, self._provider, self._models, usage=event.usage)
        return event

    async def aclose(self) -> None:
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()


class Governance:
    def __init__(self, config: GovernanceConfig, *, kind_of: Callable[[str], str] = lambda p: p) -> None:
        self.config = config
        self.kind_of = kind_of
        self.prices = PriceTable(config.pricing)
        self.snapshot = Snapshot()
        self.store: ConfigStore | None = None
        self.counters: Counters | None = None
        self.store_failures = 0  # fail_open admissions and lost charges (the observe room exports it)
        self._sync: asyncio.Task[None] | None = None
        self._unpriced: set[tuple[str, tuple[str, ...]]] = set()

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # -- life -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        cfg = self.config
        store_cfg = cfg.config_store
        sqlite_path: Path | None = None
        if store_cfg is not None and store_cfg.type == "postgres" and store_cfg.url is not None:
            url = store_cfg.url.reveal()
        else:
            sqlite_path = Path(store_cfg.path) if store_cfg is not None and store_cfg.path else default_store_path()
            url = f"sqlite:///{sqlite_path}"
        self.store = ConfigStore(url)
        await asyncio.to_thread(self._prepare)
        if cfg.store is not None:
            s = cfg.store
            self.counters = RedisCounters.connect(
                s.addr, username=s.username, password=s.password.reveal() if s.password else None, db=s.db,
                prefix=s.key_prefix, timeout=s.timeout_seconds,
            )
        else:
            self.counters = SQLiteCounters(sqlite_path or default_store_path())
        self._sync = asyncio.create_task(self._follow(), name="bifrost-stt-governance-sync")
        log.info("governance on: %d virtual keys%s", len(self.snapshot.keys),
                 ", enforced" if cfg.enforce else "")

    def _prepare(self) -> None:
        """Create, seed, load. Instances starting together race on the first two: the loser retries."""
        from sqlalchemy.exc import SQLAlchemyError

        assert self.store is not None
        for attempt in range(8):
            try:
                self.store.create()
                self.store.seed(self.config)
                break
            except SQLAlchemyError:
                if attempt == 7:
                    raise
                time.sleep(0.05 * (attempt + 1))
        self.snapshot = self.store.load()

    async def _follow(self) -> None:
        """Reload the snapshot whenever another instance (or this one) changed the store."""
        assert self.store is not None
        while True:
            await asyncio.sleep(self.config.sync_interval_seconds)
            try:
                await self.reload_if_changed()
            except Exception:  # a database hiccup must not end the loop: the next tick retries
                log.warning("governance: reading the config store failed; retrying", exc_info=True)

    async def reload_if_changed(self) -> None:
        assert self.store is not None
        version = await asyncio.to_thread(self.store.version)
        if version != self.snapshot.version:
            self.snapshot = await asyncio.to_thread(self.store.load)

    async def reload(self) -> None:
        assert self.store is not None
        self.snapshot = await asyncio.to_thread(self.store.load)

    async def aclose(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
            self._sync = None
        if self.counters is not None:
            await self.counters.aclose()
            self.counters = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def counters_or_fail(self) -> Counters:
        if self.counters is None:
            raise Overloaded("governance is starting; retry in a moment")
        return self.counters

    def note_unpriced(self, provider: str, models: tuple[str, ...]) -> None:
        if (provider, models) not in self._unpriced:
            self._unpriced.add((provider, models))
            log.warning("no price for %s/%s: its cost is reported as unknown; add a governance.pricing row",
                        provider, models[0] if models else "?")

    # -- the request path -----------------------------------------------------------------------------

    async def admit(self, headers: Mapping[str, str], request: TranscriptionRequest
                    ) -> tuple[TranscriptionRequest, Ticket]:
        value = decide.key_from_headers(headers) if self.enabled else None
        if request.direct_key is not None and decide.is_virtual_key(request.direct_key.reveal()):
            request = replace(request, direct_key=None)  # a virtual key is never a provider's key
        if value is None:
            if self.config.enforce:
                raise VirtualKeyRequired()
            return request, _ticket(self, None, request)
        snap = self.snapshot
        vk = snap.by_value.get(value)
        if vk is None:
            raise Forbidden("virtual key not found", "virtual_key_not_found")
        if not vk.is_active:
            raise Forbidden(f"virtual key {vk.name!r} is blocked (inactive)", "virtual_key_blocked")
        why = decide.blocked(vk, request.provider, request.model)
        if why is not None:
            what = f"provider {request.provider!r}" if why == "provider_blocked" else \
                f"model {request.provider}/{request.model}"
            raise Forbidden(f"{what} is not allowed for virtual key {vk.name!r}", why)
        if request.fallbacks:
            request = replace(request, fallbacks=decide.allowed_fallbacks(vk, request.fallbacks))
        rec = records.current()
        if rec is not None:
            rec.virtual_key_id, rec.virtual_key_name = vk.id, vk.name
        ticket = _ticket(self, vk, request)
        limits, labels = self._limits(vk, request.provider, ticket)
        if limits:
            await self._check(limits, labels, vk)
        return request, ticket

    def _limits(self, vk: VirtualKeyConfig, provider: str, ticket: Ticket
                ) -> tuple[list[Limit], list[tuple[str, str]]]:
        """The counters this request must pass: the key's and its provider config's."""
        now = time.time()
        snap = self.snapshot
        limits: list[Limit] = []
        labels: list[tuple[str, str]] = []  # (kind, duration) per limit, for the refusal message
        budget_ids = [vk.budget_id]
        rate_ids = [vk.rate_limit_id]
        pc = next((c for c in vk.provider_configs if c.provider == provider), None)
        if pc is not None:
            budget_ids.append(pc.budget_id)
            rate_ids.append(pc.rate_limit_id)
        for bid in budget_ids:
            budget = snap.budgets.get(bid) if bid else None
            if budget is not None:
                start, end = durations.window(budget.reset_duration, now)
                key = f"b:{budget.id}:{start}"
                limits.append(Limit(key, budget.max_limit, 0.0, end))
                labels.append(("budget", budget.reset_duration))
                ticket.budget_keys.append((key, end))
        for rid in rate_ids:
            rl = snap.rate_limits.get(rid) if rid else None
            if rl is None:
                continue
            if rl.request_max_limit is not None and rl.request_reset_duration:
                start, end = durations.window(rl.request_reset_duration, now)
                limits.append(Limit(f"r:{rl.id}:{start}", float(rl.request_max_limit), 1.0, end))
                labels.append(("request", rl.request_reset_duration))
            if rl.audio_seconds_max_limit is not None and rl.audio_seconds_reset_duration:
                start, end = durations.window(rl.audio_seconds_reset_duration, now)
                key = f"a:{rl.id}:{start}"
                limits.append(Limit(key, rl.audio_seconds_max_limit, 0.0, end))
                labels.append(("audio seconds", rl.audio_seconds_reset_duration))
                ticket.audio_keys.append((key, end))
        return limits, labels

    async def _check(self, limits: list[Limit], labels: list[tuple[str, str]], vk: VirtualKeyConfig) -> None:
        try:
            refusal = await self.counters_or_fail().admit(limits)
        except StoreUnavailable as exc:
            self.store_failures += 1
            if self.config.store is not None and self.config.store.on_unavailable == "fail_open":
                log.warning("governance: counter store unavailable (%s); admitting %s unchecked (fail_open)",
                            exc, vk.name)
                return
            log.error("governance: counter store unavailable (%s); refusing (fail_closed)", exc)
            raise GovernanceUnavailable() from None
        if refusal is None:
            return
        limit = limits[refusal.index]
        kind, duration = labels[refusal.index]
        if kind == "budget":
            raise BudgetExceeded(vk.name, refusal.used, limit.max)
        used = int(refusal.used) if kind == "request" else round(refusal.used, 1)
        maximum = int(limit.max) if kind == "request" else limit.max
        raise RateLimited(
            f"rate limit violated for {vk.name}: [{kind} limit exceeded ({used}/{maximum}, resets every "
            f"{durations.describe(duration)})]",
            retry_after=limit.expires - time.time(),
        )

    # -- reads for the management operations ----------------------------------------------------------

    @staticmethod
    def counter(kind: str, limit_id: str, duration: str, now: float) -> tuple[str, int]:
        """The counter key of a limit's current window and the window's start (``kind``: b, r or a)."""
        start, _ = durations.window(duration, now)
        return f"{kind}:{limit_id}:{start}", start

    async def usage(self, keys: list[str]) -> list[float]:
        if not keys or self.counters is None:
            return [0.0] * len(keys)
        try:
            return await self.counters.read(keys)
        except StoreUnavailable:
            raise GovernanceUnavailable() from None


def _ticket(governance: Governance, vk: VirtualKeyConfig | None, request: TranscriptionRequest) -> Ticket:
    ticket = Ticket(governance, vk, None, audio=request.audio)
    if request.stream:
        ticket.file_length()  # a stream lets go of its upload before it ends: read the length now
    return ticket


def models_of(served_model: str, deployment: str) -> tuple[str, ...]:
    """Price lookup names for a served call: the upstream id first, then the model as requested."""
    return tuple(dict.fromkeys((deployment, served_model)))


__all__ = ["Governance", "Ticket", "models_of", "default_store_path"]

