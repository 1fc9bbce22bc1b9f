"""The cache's part of the config file, in upstream's shape: the ``semantic_cache`` entry of ``plugins`` and
``vector_store``. An upstream user's file works unchanged:

    "plugins": [{"enabled": true, "name": "semantic_cache",
                 "config": {"ttl": "5m", "default_cache_key": "team-a", "cache_by_model": true,
                            "cache_by_provider": true, "vector_store_namespace": "bifrost-cache"}}],
    "vector_store": {"enabled": true, "type": "redis",
                     "config": {"addr": "env.REDIS_ADDR", "password": "env.REDIS_PASSWORD", "db": 0}}

Transcriptions are cached by exact match only, so the embedding settings of the plugin (provider, keys,
embedding_model, dimension, threshold ...) concern other request types and are ignored. Without a
``vector_store`` of type redis the embedded store (a SQLite file) holds the cache. Other plugins are
reported as ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bifrost_stt.kernel.fields import (
    ConfigError,
    Context,
    Field,
    array,
    as_object,
    boolean,
    integer,
    read_section,
    string,
)
from bifrost_stt.kernel.durations import parse_duration
from bifrost_stt.kernel.settings import CacheConfig, RedisStoreConfig, Secret

MAX_TTL_SECONDS = 30 * 24 * 3600


def _ttl(value: Any, path: str, ctx: Context) -> float:
    """Upstream accepts integer seconds or a Go duration string ("5m", "1h")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(path, "expected seconds (a number) or a duration string such as \"5m\"")
    try:
        seconds = parse_duration(str(value))
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise ConfigError(path, f"must be more than 0 and at most 30 days, got {value!r}")
    return seconds


SEMANTIC_CACHE: Mapping[str, Field] = {
    "ttl": Field(_ttl),
    "default_cache_key": Field(string(non_empty=True)),
    "cache_by_model": Field(boolean),
    "cache_by_provider": Field(boolean),
    "vector_store_namespace": Field(string(non_empty=True)),
    "store_path": Field(string(non_empty=True)),  # our own addition: the embedded store's SQLite file
    "max_size_mb": Field(integer(minimum=1)),  # our own addition: the embedded store's bound
    "cleanup_on_shutdown": Field(boolean, use="unsupported"),
    # semantic (embedding) matching: transcriptions are matched exactly, so these never apply here
    **{
        name: Field(use="ignore")
        for name in (
            "provider", "keys", "embedding_model", "dimension", "threshold", "conversation_history_threshold",
            "exclude_system_prompt", "default_cache_type",
        )
    },
}

PLUGIN: Mapping[str, Field] = {
    "name": Field(string(non_empty=True), required=True),
    "enabled": Field(boolean),
    "config": Field(as_object),
    **{name: Field(use="silent") for name in ("path", "version", "placement", "order")},
}

VECTOR_STORE: Mapping[str, Field] = {
    "enabled": Field(boolean),
    "type": Field(string(non_empty=True)),
    "config": Field(as_object),
}

REDIS: Mapping[str, Field] = {
    "addr": Field(string(env=True, non_empty=True), required=True),
    "username": Field(string(env=True)),
    "password": Field(string(env=True)),
    "db": Field(integer(minimum=0)),
    "use_tls": Field(boolean),
    "pool_size": Field(integer(minimum=1), use="ignore"),
    "cluster_mode": Field(boolean, use="unsupported"),
}

REDIS_TYPES = ("redis", "valkey")


def build_cache(plugins: Any, vector_store: Any, ctx: Context) -> CacheConfig:
    """``plugins`` and ``vector_store`` as the file has them (either may be None) -> ``CacheConfig``."""
    defaults = CacheConfig()
    fields: dict[str, Any] = {}
    enabled = True
    if plugins is not None:
        for index, raw in enumerate(array(plugins, "plugins", ctx)):
            path = f"plugins[{index}]"
            entry = read_section(raw, path, PLUGIN, ctx)
            if entry["name"] != "semantic_cache":
                ctx.ignored.append(f"{path} ({entry['name']})")
                continue
            enabled = entry.get("enabled", True)
            fields = read_section(entry.get("config", {}), f"{path}.config", SEMANTIC_CACHE, ctx)
    redis = _redis(vector_store, ctx) if vector_store is not None else None
    return CacheConfig(
        enabled=enabled,
        ttl_seconds=fields.get("ttl", 300.0),
        default_cache_key=fields.get("default_cache_key"),
        cache_by_model=fields.get("cache_by_model", True),
        cache_by_provider=fields.get("cache_by_provider", True),
        namespace=fields.get("vector_store_namespace", defaults.namespace),
        store_path=fields.get("store_path"),
        max_size_mb=fields.get("max_size_mb", defaults.max_size_mb),
        redis=redis,
    )


def _redis(raw: Any, ctx: Context) -> RedisStoreConfig | None:
    store = read_section(raw, "vector_store", VECTOR_STORE, ctx)
    if not store.get("enabled", True) or "type" not in store:
        return None
    if store["type"] not in REDIS_TYPES:
        # Weaviate, Qdrant, Pinecone: vector search for semantic mode; the embedded store serves instead.
        ctx.unsupported.append("vector_store.type")
        return None
    cfg = read_section(store.get("config", {}), "vector_store.config", REDIS, ctx)
    addr = cfg["addr"]
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError("vector_store.config.addr", f'expected "host:port", got {addr!r}')
    return RedisStoreConfig(
        addr=addr,
        username=cfg.get("username") or None,
        password=Secret(cfg.get("password", "")),
        db=cfg.get("db", 0),
        use_tls=cfg.get("use_tls", False),
    )
