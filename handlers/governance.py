"""The governance operations: virtual keys (create, list, get, update, delete, quota), budgets, rate limits.

State lives in ``bifrost_stt.gateway.governance`` (the config store and the counters); this module turns
requests into store writes and store rows into the contract's shapes. A key's value is shown once, in the
answer that creates it; every other answer masks it (``sk-bf-…abcd``). Budgets' ``current_usage`` and rate
limits' ``*_current_usage`` are the counters of the current window.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.gateway.governance import decide, durations
from bifrost_stt.gateway.governance.configstore import ConfigStore, new_key_value
from bifrost_stt.gateway.governance.service import Governance
from bifrost_stt.handlers.outbound import json_response
from bifrost_stt.kernel.errors import AuthenticationError, ClientError, NotFound, Overloaded
from bifrost_stt.kernel.governance import BudgetConfig, RateLimitConfig, VirtualKeyConfig, VKProviderConfig
from bifrost_stt.kernel.settings import Secret


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def mask(value: str) -> str:
    return value[:6] + "…" + value[-4:] if len(value) >= 16 else "…"


def _duration(value: Any, param: str) -> str:
    try:
        durations.parse(str(value))
    except durations.DurationError as exc:
        raise ClientError(str(exc), param=param, code="invalid_duration") from None
    return str(value)


def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value \
            or value == float("inf"):
        raise ClientError(f"{param} must be a number of at least 0", param=param)
    return float(value)


def _budget(body: Mapping[str, Any], old: BudgetConfig | None, param: str) -> BudgetConfig | None:
    max_limit = body.get("max_limit", old.max_limit if old else None)
    reset = body.get("reset_duration", old.reset_duration if old else None)
    if max_limit is None:
        return None  # an update naming no amount for a key without a budget: nothing to set
    reset = reset or "1M"
    aligned = body.get("calendar_aligned")
    return BudgetConfig(
        id=old.id if old else f"budget-{uuid.uuid4()}",
        max_limit=_number(max_limit, f"{param}.max_limit"),
        reset_duration=_duration(reset, f"{param}.reset_duration"),
        calendar_aligned=bool(aligned) if aligned is not None else (old.calendar_aligned if old else False),
    )


_RATE_FIELDS = ("request", "token", "audio_seconds")
_INT64_MAX = 2**63 - 1  # a float at the contract's maximum rounds one past it


def _rate_limit(body: Mapping[str, Any], old: RateLimitConfig | None, param: str) -> RateLimitConfig:
    values: dict[str, Any] = {}
    for kind in _RATE_FIELDS:
        limit = body.get(f"{kind}_max_limit", getattr(old, f"{kind}_max_limit") if old else None)
        reset = body.get(f"{kind}_reset_duration", getattr(old, f"{kind}_reset_duration") if old else None)
        if limit is not None and reset is not None:
            number = _number(limit, f"{param}.{kind}_max_limit")
            values[f"{kind}_max_limit"] = number if kind == "audio_seconds" else min(int(number), _INT64_MAX)
            values[f"{kind}_reset_duration"] = _duration(reset, f"{param}.{kind}_reset_duration")
    return RateLimitConfig(id=old.id if old else f"ratelimit-{uuid.uuid4()}", **values)


class GovernanceHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def gov(self) -> Governance:
        return self.gateway.governance

    def _store(self) -> ConfigStore:
        store = self.gov.store
        if store is None:
            raise Overloaded(
                "governance is off: give the config a config_store or a governance section to manage virtual keys",
                code="governance_off",
            )
        return store

    # -- views ----------------------------------------------------------------------------------------

    async def _budget_view(self, budget: BudgetConfig, now: float) -> dict[str, Any]:
        key, start = Governance.counter("b", budget.id, budget.reset_duration, now)
        (used,) = await self.gov.usage([key])
        stamp = self.gov.snapshot.stamps.get("budget:" + budget.id)
        view: dict[str, Any] = {
            "id": budget.id, "max_limit": budget.max_limit, "reset_duration": budget.reset_duration,
            "calendar_aligned": budget.calendar_aligned, "current_usage": used, "last_reset": _iso(start),
        }
        if stamp is not None:
            view.update(created_at=_iso(stamp.created_at), updated_at=_iso(stamp.updated_at))
        return view

    async def _rate_limit_view(self, rl: RateLimitConfig, now: float) -> dict[str, Any]:
        view: dict[str, Any] = {"id": rl.id}
        for kind in ("request", "audio_seconds"):
            if getattr(rl, f"{kind}_max_limit") is not None:
                view[f"{kind}_max_limit"] = getattr(rl, f"{kind}_max_limit")
                view[f"{kind}_reset_duration"] = getattr(rl, f"{kind}_reset_duration")
        if rl.token_max_limit is not None and rl.token_reset_duration:
            view.update(token_max_limit=rl.token_max_limit, token_reset_duration=rl.token_reset_duration,
                        token_current_usage=0)
        for kind, letter in (("request", "r"), ("audio_seconds", "a")):
            duration = getattr(rl, f"{kind}_reset_duration")
            if duration:
                key, start = Governance.counter(letter, rl.id, duration, now)
                (used,) = await self.gov.usage([key])
                view[f"{kind}_current_usage"] = int(used) if kind == "request" else used
                view[f"{kind}_last_reset"] = _iso(start)
        stamp = self.gov.snapshot.stamps.get("rl:" + rl.id)
        if stamp is not None:
            view.update(created_at=_iso(stamp.created_at), updated_at=_iso(stamp.updated_at))
        return view

    async def _key_view(self, vk: VirtualKeyConfig, *, reveal: bool = False) -> dict[str, Any]:
        snap, now = self.gov.snapshot, time.time()
        value = vk.value.reveal() if vk.value else ""
        view: dict[str, Any] = {
            "id": vk.id, "name": vk.name, "value": value if reveal else mask(value), "is_active": vk.is_active,
            "description": vk.description, "provider_configs": [],
        }
        if vk.budget_id and vk.budget_id in snap.budgets:
            view.update(budget_id=vk.budget_id, budget=await self._budget_view(snap.budgets[vk.budget_id], now))
        if vk.rate_limit_id and vk.rate_limit_id in snap.rate_limits:
            view.update(rate_limit_id=vk.rate_limit_id,
                        rate_limit=await self._rate_limit_view(snap.rate_limits[vk.rate_limit_id], now))
        for pc in vk.provider_configs:
            item: dict[str, Any] = {"virtual_key_id": vk.id, "provider": pc.provider,
                                    "allowed_models": list(pc.allowed_models)}
            if pc.weight is not None:
                item["weight"] = pc.weight
            if pc.budget_id and pc.budget_id in snap.budgets:
                item.update(budget_id=pc.budget_id, budget=await self._budget_view(snap.budgets[pc.budget_id], now))
            if pc.rate_limit_id and pc.rate_limit_id in snap.rate_limits:
                item.update(rate_limit_id=pc.rate_limit_id,
                            rate_limit=await self._rate_limit_view(snap.rate_limits[pc.rate_limit_id], now))
            view["provider_configs"].append(item)
        return view

    def _find(self, vk_id: str) -> VirtualKeyConfig:
        vk = self.gov.snapshot.keys.get(vk_id)
        if vk is None:
            raise NotFound("virtual key not found", param="vk_id", code="virtual_key_not_found")
        return vk

    # -- operations -----------------------------------------------------------------------------------

    async def list_virtual_keys(self, from_memory: bool = False) -> Response:
        await self._fresh(from_memory)
        keys = sorted(self.gov.snapshot.keys.values(), key=lambda k: k.name)
        return json_response({"virtual_keys": [await self._key_view(k) for k in keys], "count": len(keys)})

    async def get_virtual_key(self, vk_id: str, from_memory: bool = False) -> Response:
        await self._fresh(from_memory)
        return json_response({"virtual_key": await self._key_view(self._find(vk_id))})

    async def create_virtual_key(self, body: Mapping[str, Any]) -> Response:
        store = self._store()
        name = str(body.get("name") or "").strip()
        if not name:
            raise ClientError("name must not be empty", param="name")
        vk = VirtualKeyConfig(
            id=str(uuid.uuid4()), name=name, value=Secret(new_key_value()),
            is_active=bool(body.get("is_active", True)),
        )
        vk, budget, rate_limit = self._apply(vk, body)
        await asyncio.to_thread(store.save_key, vk, budget, rate_limit, create=True)
        await self.gov.reload()
        view = await self._key_view(self.gov.snapshot.keys[vk.id], reveal=True)
        return json_response({"message": "virtual key created", "virtual_key": view})

    async def update_virtual_key(self, vk_id: str, body: Mapping[str, Any]) -> Response:
        store = self._store()
        await self.gov.reload()
        vk = self._find(vk_id)
        if "name" in body:
            name = str(body.get("name") or "").strip()
            if not name:
                raise ClientError("name must not be empty", param="name")
            vk = replace(vk, name=name)
        if "is_active" in body:
            vk = replace(vk, is_active=bool(body["is_active"]))
        vk, budget, rate_limit = self._apply(vk, body)
        await asyncio.to_thread(store.save_key, vk, budget, rate_limit, create=False)
        await self.gov.reload()
        view = await self._key_view(self.gov.snapshot.keys[vk.id])
        return json_response({"message": "virtual key updated", "virtual_key": view})

    def _apply(self, vk: VirtualKeyConfig, body: Mapping[str, Any]
               ) -> tuple[VirtualKeyConfig, list[BudgetConfig | None], list[RateLimitConfig | None]]:
        """The body's budget, rate limit and provider configs onto ``vk`` (budgets inside provider configs
        are created here; the key's own are returned for the store to write with it)."""
        snap = self.gov.snapshot
        budget = rate_limit = None
        if isinstance(body.get("budget"), Mapping):
            budget = _budget(body["budget"], snap.budgets.get(vk.budget_id or ""), "budget")
        if isinstance(body.get("rate_limit"), Mapping):
            rate_limit = _rate_limit(body["rate_limit"], snap.rate_limits.get(vk.rate_limit_id or ""), "rate_limit")
        extra_budgets: list[BudgetConfig] = []
        extra_limits: list[RateLimitConfig] = []
        if isinstance(body.get("provider_configs"), list):
            configs = []
            for i, raw in enumerate(body["provider_configs"]):
                if not isinstance(raw, Mapping) or not str(raw.get("provider") or "").strip():
                    raise ClientError(f"provider_configs[{i}].provider is required", param="provider_configs")
                models = raw.get("allowed_models") or []
                weight = raw.get("weight")
                provider = str(raw["provider"]).strip()
                previous = next((c for c in vk.provider_configs if c.provider == provider), None)
                pc_budget = pc_limit = None
                if isinstance(raw.get("budget"), Mapping):
                    pc_budget = _budget(raw["budget"], snap.budgets.get(previous.budget_id or "") if previous else None,
                                        f"provider_configs[{i}].budget")
                if isinstance(raw.get("rate_limit"), Mapping):
                    pc_limit = _rate_limit(raw["rate_limit"], snap.rate_limits.get(previous.rate_limit_id or "")
                                           if previous else None, f"provider_configs[{i}].rate_limit")
                extra_budgets += [pc_budget] if pc_budget else []
                extra_limits += [pc_limit] if pc_limit else []
                configs.append(VKProviderConfig(
                    provider=provider,
                    weight=_number(weight, f"provider_configs[{i}].weight") if weight is not None else None,
                    allowed_models=tuple(str(m) for m in models),
                    budget_id=pc_budget.id if pc_budget else (previous.budget_id if previous else None),
                    rate_limit_id=pc_limit.id if pc_limit else (previous.rate_limit_id if previous else None),
                ))
            vk = replace(vk, provider_configs=tuple(configs))
        return vk, [budget, *extra_budgets], [rate_limit, *extra_limits]

    async def delete_virtual_key(self, vk_id: str) -> Response:
        store = self._store()
        await self.gov.reload()
        vk = self._find(vk_id)
        await asyncio.to_thread(store.delete_key, vk)
        await self.gov.reload()
        return json_response({"message": "virtual key deleted"})

    async def get_virtual_key_quota(self) -> Response:
        from connexion import context

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in context.scope["headers"]}
        value = decide.key_from_headers(headers)
        if value is None:
            raise AuthenticationError("send your virtual key (x-bf-vk or Authorization: Bearer sk-bf-...)",
                                      code="virtual_key_required")
        vk = self.gov.snapshot.by_value.get(value)
        if vk is None:
            raise AuthenticationError("virtual key not found", code="virtual_key_not_found")
        view = await self._key_view(vk)
        body: dict[str, Any] = {"virtual_key_name": vk.name, "is_active": vk.is_active,
                                "budgets": [view["budget"]] if "budget" in view else []}
        if "rate_limit" in view:
            body["rate_limit"] = view["rate_limit"]
        return json_response(body)

    async def list_budgets(self, from_memory: bool = False) -> Response:
        await self._fresh(from_memory)
        now = time.time()
        items = [await self._budget_view(b, now) for b in sorted(self.gov.snapshot.budgets.values(), key=lambda b: b.id)]
        return json_response({"budgets": items, "count": len(items)})

    async def list_rate_limits(self, from_memory: bool = False) -> Response:
        await self._fresh(from_memory)
        now = time.time()
        items = [await self._rate_limit_view(r, now)
                 for r in sorted(self.gov.snapshot.rate_limits.values(), key=lambda r: r.id)]
        return json_response({"rate_limits": items, "count": len(items)})

    async def _fresh(self, from_memory: bool) -> None:
        """The database's state unless the caller asked for this instance's copy."""
        self._store()
        if not from_memory:
            await self.gov.reload()

    def operations(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "createVirtualKey": self.create_virtual_key,
            "listVirtualKeys": self.list_virtual_keys,
            "getVirtualKey": self.get_virtual_key,
            "updateVirtualKey": self.update_virtual_key,
            "deleteVirtualKey": self.delete_virtual_key,
            "getVirtualKeyQuota": self.get_virtual_key_quota,
            "listBudgets": self.list_budgets,
            "listRateLimits": self.list_rate_limits,
        }
