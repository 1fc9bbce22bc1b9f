"""The ``governance`` and ``config_store`` sections (upstream's shape) → ``GovernanceConfig``.

Upstream's fields: ``governance.budgets`` / ``rate_limits`` / ``virtual_keys`` (a key names its budget and
rate limit by id, and so may each of its ``provider_configs``), ``config_store`` {type sqlite | postgres,
config}. Ours: ``governance.store`` (Redis counters shared by instances), ``governance.pricing`` (price
overrides), and a rate limit's ``audio_seconds_max_limit`` / ``audio_seconds_reset_duration``. Customers and
teams are accepted and reported unsupported when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from bifrost_stt.kernel.fields import (
    ConfigError,
    Context,
    Field,
    array,
    as_object,
    boolean,
    integer,
    read_section,
    section,
    string,
    strings,
)
from bifrost_stt.kernel.governance import (
    BudgetConfig,
    ConfigStoreConfig,
    CounterStoreConfig,
    GovernanceConfig,
    PriceConfig,
    RateLimitConfig,
    VirtualKeyConfig,
    VKProviderConfig,
)
from bifrost_stt.kernel.settings import Secret

_UNITS = "s m h d w M Q Y"


def _number(value: Any, path: str, ctx: Context) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(path, f"expected a number, got {type(value).__name__}")
    if value < 0:
        raise ConfigError(path, f"must not be negative, got {value}")
    return float(value)


def _duration(value: Any, path: str, ctx: Context) -> str:
    import re

    text = string(non_empty=True)(value, path, ctx)
    if not re.fullmatch(r"[1-9][0-9]{0,8}(s|m|h|d|w|M|Q|Y)", text):
        raise ConfigError(path, f"{text!r} is not a reset duration; use a count and one of {_UNITS} (1h, 1d, 1M)")
    return str(text)


BUDGET: Mapping[str, Field] = {
    "id": Field(string(non_empty=True), required=True),
    "max_limit": Field(_number, required=True),
    "reset_duration": Field(_duration, required=True),
    "calendar_aligned": Field(boolean),
    "current_usage": Field(use="ignore"),
    "last_reset": Field(use="ignore"),
}

RATE_LIMIT: Mapping[str, Field] = {
    "id": Field(string(non_empty=True), required=True),
    "request_max_limit": Field(integer(minimum=0)),
    "request_reset_duration": Field(_duration),
    "token_max_limit": Field(integer(minimum=0), use="unsupported"),  # transcriptions count audio, not tokens
    "token_reset_duration": Field(_duration),
    "audio_seconds_max_limit": Field(_number),  # ours
    "audio_seconds_reset_duration": Field(_duration),  # ours
    **{name: Field(use="ignore") for name in (
        "token_current_usage", "token_last_reset", "request_current_usage", "request_last_reset")},
}

VK_PROVIDER: Mapping[str, Field] = {
    "provider": Field(string(non_empty=True), required=True),
    "weight": Field(_number),
    "allowed_models": Field(strings),
    "budget_id": Field(string(non_empty=True)),
    "rate_limit_id": Field(string(non_empty=True)),
    "keys": Field(array, use="unsupported"),
    "id": Field(use="ignore"),
    "virtual_key_id": Field(use="ignore"),
}

VIRTUAL_KEY: Mapping[str, Field] = {
    "id": Field(string(non_empty=True), required=True),
    "name": Field(string(non_empty=True), required=True),
    "description": Field(string()),
    "value": Field(string(env=True, non_empty=True, header=True)),
    "is_active": Field(boolean),
    "team_id": Field(string(), use="unsupported"),
    "customer_id": Field(string(), use="unsupported"),
    "budget_id": Field(string(non_empty=True)),
    "rate_limit_id": Field(string(non_empty=True)),
    "provider_configs": Field(array),
    "mcp_configs": Field(use="ignore"),
}

PRICE: Mapping[str, Field] = {
    "provider": Field(string(non_empty=True), required=True),
    "model": Field(string(non_empty=True), required=True),
    "input_cost_per_audio_per_second": Field(_number),
    "input_cost_per_audio_token": Field(_number),
    "output_cost_per_token": Field(_number),
}

REDIS: Mapping[str, Field] = {
    "addr": Field(string(env=True, non_empty=True)),
    "username": Field(string(env=True)),
    "password": Field(string(env=True)),
    "db": Field(integer(minimum=0)),
    "key_prefix": Field(string(non_empty=True)),
    "timeout_seconds": Field(_number),
}

STORE: Mapping[str, Field] = {
    "type": Field(string(choices=("redis",)), required=True),
    "config": Field(section(REDIS)),
    "on_unavailable": Field(string(choices=("fail_closed", "fail_open"))),
}

GOVERNANCE: Mapping[str, Field] = {
    "budgets": Field(array),
    "rate_limits": Field(array),
    "virtual_keys": Field(array),
    "store": Field(section(STORE)),  # ours
    "pricing": Field(array),  # ours
    "sync_interval_seconds": Field(_number),  # ours
    "customers": Field(array, use="unsupported"),
    "teams": Field(array, use="unsupported"),
    "routing_rules": Field(array, use="unsupported"),
    "auth_config": Field(use="ignore"),  # the admin credential: the observe room's business
}

SQLITE_STORE: Mapping[str, Field] = {"path": Field(string(env=True, non_empty=True))}
POSTGRES_STORE: Mapping[str, Field] = {
    "host": Field(string(env=True, non_empty=True)),
    "port": Field(lambda v, p, c: str(v) if isinstance(v, int) and not isinstance(v, bool)
                  else string(env=True, non_empty=True)(v, p, c)),
    "user": Field(string(env=True, non_empty=True)),
    "password": Field(string(env=True)),
    "db_name": Field(string(env=True, non_empty=True)),
    "ssl_mode": Field(string(env=True)),
    "url": Field(string(env=True, non_empty=True)),  # ours: a whole SQLAlchemy URL
    "max_idle_conns": Field(use="ignore"),
    "max_open_conns": Field(use="ignore"),
}
CONFIG_STORE: Mapping[str, Field] = {
    "enabled": Field(boolean),
    "type": Field(string(choices=("sqlite", "postgres"))),
    "config": Field(as_object),
}


def build(raw: Any, raw_store: Any, client: dict[str, Any], ctx: Context) -> GovernanceConfig:
    """``client`` loses its enforce_* fields here (they become ``GovernanceConfig.enforce``)."""
    enforce = bool(client.pop("enforce_auth_on_inference", False)) | bool(client.pop("enforce_governance_header", False))
    fields = read_section(raw if raw is not None else {}, "governance", GOVERNANCE, ctx)
    budgets = tuple(
        BudgetConfig(**read_section(item, f"governance.budgets[{i}]", BUDGET, ctx))
        for i, item in enumerate(fields.get("budgets", []))
    )
    limits = tuple(
        RateLimitConfig(**read_section(item, f"governance.rate_limits[{i}]", RATE_LIMIT, ctx))
        for i, item in enumerate(fields.get("rate_limits", []))
    )
    _unique("governance.budgets", [b.id for b in budgets])
    _unique("governance.rate_limits", [r.id for r in limits])
    for i, r in enumerate(limits):
        for kind in ("request", "audio_seconds"):
            if (getattr(r, f"{kind}_max_limit") is None) != (getattr(r, f"{kind}_reset_duration") is None):
                raise ConfigError(f"governance.rate_limits[{i}]",
                                  f"{kind}_max_limit and {kind}_reset_duration go together")
    budget_ids, limit_ids = {b.id for b in budgets}, {r.id for r in limits}
    keys = tuple(
        _virtual_key(item, f"governance.virtual_keys[{i}]", ctx, budget_ids, limit_ids)
        for i, item in enumerate(fields.get("virtual_keys", []))
    )
    _unique("governance.virtual_keys", [k.id for k in keys])
    _unique("governance.virtual_keys (value)", [k.value.reveal() for k in keys if k.value])
    pricing = tuple(
        PriceConfig(**read_section(item, f"governance.pricing[{i}]", PRICE, ctx))
        for i, item in enumerate(fields.get("pricing", []))
    )
    return GovernanceConfig(
        virtual_keys=keys, budgets=budgets, rate_limits=limits, pricing=pricing, enforce=enforce,
        config_store=_config_store(raw_store, ctx) if raw_store is not None else None,
        store=_counter_store(fields["store"]) if "store" in fields else None,
        sync_interval_seconds=max(0.05, min(1.0, fields.get("sync_interval_seconds", 0.5))),
    )


def _unique(path: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(ids):
        if item in seen:
            raise ConfigError(f"{path}[{i}]", "duplicate id" if "value" not in path else "duplicate key value")
        seen.add(item)


def _virtual_key(raw: Any, path: str, ctx: Context, budgets: set[str], limits: set[str]) -> VirtualKeyConfig:
    fields = read_section(raw, path, VIRTUAL_KEY, ctx)
    for ref, known in (("budget_id", budgets), ("rate_limit_id", limits)):
        if ref in fields and fields[ref] not in known:
            raise ConfigError(f"{path}.{ref}", f"no {ref.removesuffix('_id')} with id {fields[ref]!r} in governance")
    configs = []
    for j, item in enumerate(fields.pop("provider_configs", [])):
        sub = f"{path}.provider_configs[{j}]"
        pc = read_section(item, sub, VK_PROVIDER, ctx)
        for ref, known in (("budget_id", budgets), ("rate_limit_id", limits)):
            if ref in pc and pc[ref] not in known:
                raise ConfigError(f"{sub}.{ref}", f"no {ref.removesuffix('_id')} with id {pc[ref]!r} in governance")
        pc["allowed_models"] = tuple(pc.get("allowed_models", ()))
        configs.append(VKProviderConfig(**pc))
    if "value" in fields:
        fields["value"] = Secret(fields["value"])
    return VirtualKeyConfig(**fields, provider_configs=tuple(configs))


def _config_store(raw: Any, ctx: Context) -> ConfigStoreConfig | None:
    fields = read_section(raw, "config_store", CONFIG_STORE, ctx)
    if fields.get("enabled") is False:
        return None
    if "type" not in fields:
        raise ConfigError("config_store.type", "required field is missing (sqlite or postgres)")
    kind = fields["type"]
    inner = fields.get("config", {})
    if kind == "sqlite":
        sqlite = read_section(inner, "config_store.config", SQLITE_STORE, ctx)
        return ConfigStoreConfig(type="sqlite", path=sqlite.get("path"))
    pg = read_section(inner, "config_store.config", POSTGRES_STORE, ctx)
    if "url" in pg:
        url = pg["url"]
    else:
        for name in ("host", "user", "db_name"):
            if name not in pg:
                raise ConfigError(f"config_store.config.{name}", "required for a postgres config store")
        auth = quote(pg["user"], safe="") + (":" + quote(pg["password"], safe="") if pg.get("password") else "")
        url = f"postgresql+psycopg://{auth}@{pg['host']}:{pg.get('port', '5432')}/{quote(pg['db_name'], safe='')}"
        if pg.get("ssl_mode"):
            url += f"?sslmode={quote(pg['ssl_mode'], safe='')}"
    return ConfigStoreConfig(type="postgres", url=Secret(url))


def _counter_store(fields: dict[str, Any]) -> CounterStoreConfig:
    cfg = fields.get("config", {})
    password = cfg.get("password")
    return CounterStoreConfig(
        addr=cfg.get("addr", "127.0.0.1:6379"), username=cfg.get("username") or None,
        password=Secret(password) if password else None, db=cfg.get("db", 0),
        key_prefix=cfg.get("key_prefix", "bifrost-stt:gov:"),
        on_unavailable=fields.get("on_unavailable", "fail_closed"),
        timeout_seconds=cfg.get("timeout_seconds", 0.5) or 0.5,
    )
