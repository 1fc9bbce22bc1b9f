"""Virtual keys, budgets and rate limits in a database every instance shares (SQLite or PostgreSQL).

SQLAlchemy 2 Core: one schema, two databases, and the same code path for both (why SQLAlchemy rather than
two hand-written drivers). The calls are blocking and run in a worker thread (``asyncio.to_thread``); none
is on a request's path: requests read the in-memory ``Snapshot``. Every write bumps a version row; each
instance polls that row (``sync_interval_seconds``, 0.5 s by default) and reloads when it moved, so a
change made through one instance is seen by every instance within a second.

The config file's keys, budgets and rate limits are seeded at start: an id the file names is written as
the file says (the file wins for its own ids); rows created through the API are left alone. A key the file
gives no value gets ``sk-bf-<random>`` once, kept in the store.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from bifrost_stt.kernel.governance import (
    VK_PREFIX,
    BudgetConfig,
    GovernanceConfig,
    RateLimitConfig,
    VirtualKeyConfig,
    VKProviderConfig,
)
from bifrost_stt.kernel.settings import Secret

metadata = MetaData()
budgets = Table(
    "gov_budgets", metadata,
    Column("id", String(255), primary_key=True),
    Column("max_limit", Float, nullable=False),
    Column("reset_duration", String(32), nullable=False),
    Column("calendar_aligned", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
rate_limits = Table(
    "gov_rate_limits", metadata,
    Column("id", String(255), primary_key=True),
    Column("request_max_limit", Integer),
    Column("request_reset_duration", String(32)),
    Column("token_max_limit", Integer),
    Column("token_reset_duration", String(32)),
    Column("audio_seconds_max_limit", Float),
    Column("audio_seconds_reset_duration", String(32)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
virtual_keys = Table(
    "gov_virtual_keys", metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("value", String(512), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("budget_id", String(255)),
    Column("rate_limit_id", String(255)),
    Column("team_id", String(255)),
    Column("customer_id", String(255)),
    Column("provider_configs", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
meta = Table(
    "gov_meta", metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)


def new_key_value() -> str:
    return VK_PREFIX + secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Stamped:
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(slots=True)
class Snapshot:
    """What requests read: every key by value and by id, every budget and rate limit by id."""

    version: int = -1
    keys: dict[str, VirtualKeyConfig] = field(default_factory=dict)  # by id
    by_value: dict[str, VirtualKeyConfig] = field(default_factory=dict)
    budgets: dict[str, BudgetConfig] = field(default_factory=dict)
    rate_limits: dict[str, RateLimitConfig] = field(default_factory=dict)
    stamps: dict[str, Stamped] = field(default_factory=dict)  # "vk:<id>", "budget:<id>", "rl:<id>"


def _provider_configs_json(configs: Iterable[VKProviderConfig]) -> str:
    return json.dumps([{**asdict(c), "allowed_models": list(c.allowed_models)} for c in configs])


def _provider_configs(text: str) -> tuple[VKProviderConfig, ...]:
    return tuple(
        VKProviderConfig(**{**item, "allowed_models": tuple(item.get("allowed_models") or ())})
        for item in json.loads(text or "[]")
    )


class ConfigStore:
    def __init__(self, url: str) -> None:
        connect_args: dict[str, Any] = {"timeout": 5} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        if url.startswith("sqlite"):
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _wal(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA journal_mode = WAL")

    # -- schema and seed (blocking; called in a thread) -----------------------------------------------

    def create(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(select(meta.c.version).where(meta.c.name == "governance")).first() is None:
                conn.execute(insert(meta).values(name="governance", version=0))

    def seed(self, config: GovernanceConfig) -> None:
        """Write the file's budgets, rate limits and keys (the file wins for the ids it names)."""
        now = time.time()
        with self.engine.begin() as conn:
            for b in config.budgets:
                self._upsert(conn, budgets, b.id, {**asdict(b), "updated_at": now}, now)
            for r in config.rate_limits:
                self._upsert(conn, rate_limits, r.id, {**asdict(r), "updated_at": now}, now)
            for vk in config.virtual_keys:
                row = self._vk_row(vk)
                existing = conn.execute(select(virtual_keys.c.value).where(virtual_keys.c.id == vk.id)).first()
                if vk.value is None:
                    row["value"] = existing[0] if existing else new_key_value()
                self._upsert(conn, virtual_keys, vk.id, {**row, "updated_at": now}, now)
            self._bump(conn)

    @staticmethod
    def _vk_row(vk: VirtualKeyConfig) -> dict[str, Any]:
        return {
            "id": vk.id, "name": vk.name, "value": vk.value.reveal() if vk.value else "",
            "description": vk.description, "is_active": vk.is_active, "budget_id": vk.budget_id,
            "rate_limit_id": vk.rate_limit_id, "team_id": vk.team_id, "customer_id": vk.customer_id,
            "provider_configs": _provider_configs_json(vk.provider_configs),
        }

    @staticmethod
    def _upsert(conn: Any, table: Table, row_id: str, values: dict[str, Any], now: float) -> None:
        found = conn.execute(select(table.c.id).where(table.c.id == row_id)).first()
        if found is None:
            conn.execute(insert(table).values(**values, created_at=now))
        else:
            values = {k: v for k, v in values.items() if k != "id"}
            conn.execute(update(table).where(table.c.id == row_id).values(**values))

    @staticmethod
    def _bump(conn: Any) -> None:
        conn.execute(update(meta).where(meta.c.name == "governance").values(version=meta.c.version + 1))

    # -- reads ---------------------------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(meta.c.version).where(meta.c.name == "governance")).scalar()
        return int(value or 0)

    def load(self) -> Snapshot:
        snap = Snapshot()
        with self.engine.connect() as conn:
            snap.version = int(conn.execute(select(meta.c.version).where(meta.c.name == "governance")).scalar() or 0)
            for row in conn.execute(select(budgets)).mappings():
                snap.budgets[row["id"]] = BudgetConfig(
                    id=row["id"], max_limit=row["max_limit"], reset_duration=row["reset_duration"],
                    calendar_aligned=bool(row["calendar_aligned"]),
                )
                snap.stamps["budget:" + row["id"]] = Stamped(row["created_at"], row["updated_at"])
            for row in conn.execute(select(rate_limits)).mappings():
                snap.rate_limits[row["id"]] = RateLimitConfig(**{
                    k: row[k] for k in row.keys() if k not in ("created_at", "updated_at")
                })
                snap.stamps["rl:" + row["id"]] = Stamped(row["created_at"], row["updated_at"])
            for row in conn.execute(select(virtual_keys)).mappings():
                vk = VirtualKeyConfig(
                    id=row["id"], name=row["name"], value=Secret(row["value"]), description=row["description"] or "",
                    is_active=bool(row["is_active"]), budget_id=row["budget_id"], rate_limit_id=row["rate_limit_id"],
                    team_id=row["team_id"], customer_id=row["customer_id"],
                    provider_configs=_provider_configs(row["provider_configs"]),
                )
                snap.keys[vk.id] = vk
                snap.by_value[row["value"]] = vk
                snap.stamps["vk:" + vk.id] = Stamped(row["created_at"], row["updated_at"])
        return snap

    # -- writes (the management operations) ------------------------------------------------------------

    def save_key(
        self, vk: VirtualKeyConfig, budget_rows: list[BudgetConfig | None], limit_rows: list[RateLimitConfig | None],
        *, create: bool,
    ) -> VirtualKeyConfig:
        """Insert or update ``vk`` and the budgets and rate limits it owns, in one transaction. The first of
        each list is the key's own (None: unchanged); the others belong to its provider configs."""
        now = time.time()
        with self.engine.begin() as conn:
            for i, budget in enumerate(budget_rows):
                if budget is not None:
                    self._upsert(conn, budgets, budget.id, {**asdict(budget), "updated_at": now}, now)
                    vk = replace(vk, budget_id=budget.id) if i == 0 else vk
            for i, rate_limit in enumerate(limit_rows):
                if rate_limit is not None:
                    self._upsert(conn, rate_limits, rate_limit.id, {**asdict(rate_limit), "updated_at": now}, now)
                    vk = replace(vk, rate_limit_id=rate_limit.id) if i == 0 else vk
            row = {**self._vk_row(vk), "updated_at": now}
            if create:
                conn.execute(insert(virtual_keys).values(**row, created_at=now))
            else:
                row.pop("id")
                row.pop("value")
                conn.execute(update(virtual_keys).where(virtual_keys.c.id == vk.id).values(**row))
            self._bump(conn)
        return vk

    def delete_key(self, vk: VirtualKeyConfig) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(virtual_keys).where(virtual_keys.c.id == vk.id))
            self._bump(conn)

    def close(self) -> None:
        self.engine.dispose()
