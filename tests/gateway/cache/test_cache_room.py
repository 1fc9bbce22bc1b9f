"""The cache room alone: its key, its headers, its stores (SQLite LRU bound, two processes' view), its
config in upstream's shape, and the payload codec."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bifrost_stt.gateway.cache import codec
from bifrost_stt.gateway.cache.key import directive, entry_key
from bifrost_stt.gateway.cache.policy import Cache
from bifrost_stt.gateway.cache.redis_store import RedisStore
from bifrost_stt.gateway.cache.store import Entry, MemoryStore, SQLiteStore
from bifrost_stt.gateway.config.load import from_document
from bifrost_stt.gateway.config.schema import ConfigError
from bifrost_stt.kernel.canonical import BytesAudio, Logprob, Segment, TranscriptionRequest, TranscriptionResult, Usage, Word
from bifrost_stt.kernel.durations import parse_duration
from bifrost_stt.kernel.errors import ClientError
from bifrost_stt.kernel.settings import CacheConfig, RedisStoreConfig

CONFIG = CacheConfig()
REQUEST = TranscriptionRequest(provider="openai", model="whisper-1", audio=BytesAudio(b"RIFF" + bytes(100), "a.wav"))
DIGEST = bytes(16)


def key_of(request: TranscriptionRequest = REQUEST, partition: str = "p", config: CacheConfig = CONFIG) -> str:
    return entry_key(request, partition, DIGEST, config)


# ------------------------------------------------------------------------------------------------- the key


def test_the_filename_stream_flag_fallbacks_and_client_key_do_not_change_the_key() -> None:
    same = replace(REQUEST, audio=BytesAudio(b"RIFF" + bytes(100), "other-name.mp3", "audio/mpeg"), stream=True,
                   fallbacks=("groq/whisper-large-v3",), direct_key="sk-x")
    assert key_of(same) == key_of()


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "groq"}, {"model": "whisper-2"}, {"language": "en"}, {"prompt": "x"}, {"temperature": 0.2},
        {"response_format": "srt"}, {"timestamp_granularities": ("word",)}, {"extra": (("include[]", "logprobs"),)},
        {"file_format": "wav"}, {"audio": BytesAudio(b"RIFF" + bytes(101), "a.wav")},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_parameter_that_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key_of(replace(REQUEST, **change)) != key_of()


def test_partition_and_digest_change_the_key_and_the_order_of_repeated_fields_does_not() -> None:
    assert key_of(partition="q") != key_of()
    assert entry_key(REQUEST, "p", b"\x01" * 16, CONFIG) != key_of()
    a = replace(REQUEST, timestamp_granularities=("word", "segment"), extra=(("a", "1"), ("b", "2")))
    b = replace(REQUEST, timestamp_granularities=("segment", "word"), extra=(("b", "2"), ("a", "1")))
    assert key_of(a) == key_of(b)


def test_cache_by_model_and_by_provider_off_share_entries_across_them() -> None:
    loose = CacheConfig(cache_by_model=False, cache_by_provider=False)
    assert key_of(replace(REQUEST, provider="groq", model="x"), config=loose) == key_of(config=loose)


# ------------------------------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), ("1.5", 1.5), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2h0m3s", 7203), (" 10s ", 10)],
)
def test_durations_as_upstream_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 m", "m5", "1d", "1.2.3s", "nan", "inf", "-5s", "5mm"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_directive_reads_upstreams_headers() -> None:
    assert directive({}, CONFIG) is None
    wanted = directive({"x-bf-cache-key": " p1 ", "x-bf-cache-ttl": "2m", "x-bf-cache-no-store": "TRUE"}, CONFIG)
    assert wanted is not None and (wanted.partition, wanted.ttl, wanted.store) == ("p1", 120.0, False)
    default = directive({}, CacheConfig(default_cache_key="all", ttl_seconds=9))
    assert default is not None and (default.partition, default.ttl, default.store) == ("all", 9, True)
    assert directive({"x-bf-cache-key": "p", "x-bf-cache-type": "direct"}, CONFIG) is not None


def test_a_bad_header_is_refused_even_without_a_key() -> None:
    with pytest.raises(ClientError) as info:
        directive({"x-bf-cache-ttl": "later"}, CONFIG)
    assert info.value.param == "x-bf-cache-ttl" and info.value.status == 400


# ------------------------------------------------------------------------------------------------- codec


def test_the_payload_keeps_the_whole_answer() -> None:
    result = TranscriptionResult(
        text="hi there", language="en", duration=1.5,
        segments=(Segment(0, 0.0, 1.5, "hi there", tokens=(1, 2), avg_logprob=-0.1, speaker="A"),),
        words=(Word("hi", 0.0, 0.5), Word("there", 0.6, 1.5, speaker="A")),
        logprobs=(Logprob("hi", -0.01, (104, 105)),), usage=Usage(type="duration", seconds=2),
        native="1\n00:00:00,000 --> 00:00:01,500\nhi there\n", native_format="srt", extra={"x_vendor": [1]},
    )
    origin = codec.Origin("azure-eu", "whisper-1", "my-whisper", 1)
    assert codec.decode(codec.encode(result, origin)) == (result, origin)
    with pytest.raises(ValueError):
        codec.decode(b'{"v": 99}')
    with pytest.raises(ValueError):
        codec.decode(b"not json")


# ------------------------------------------------------------------------------------------------- stores


def entry(key: str, *, size: int = 1000, ttl: float = 60, cache_id: str | None = None, partition: str = "p") -> Entry:
    return Entry(key, cache_id or f"id-{key}", partition, b"x" * size, time.time() + ttl)


async def test_the_embedded_store_is_bounded_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db", max_bytes=10 * 1256)  # room for ten 1000-byte entries
    await store.start()
    try:
        for i in range(10):
            await store.put(entry(f"k{i}"))
        assert await store.get("k0") is not None  # k0 is now the most recently used (written with the next put)
        for i in range(10, 15):
            await store.put(entry(f"k{i}"))
        assert store.total_bytes() <= store.max_bytes
        assert await store.get("k0") is not None
        assert [await store.get(f"k{i}") for i in range(1, 6)] == [None] * 5  # the oldest went first
        assert all([await store.get(f"k{i}") for i in range(10, 15)])
        await store.put(entry("huge", size=store.max_bytes))  # larger than the whole bound: not stored
        assert await store.get("huge") is None and await store.get("k14") is not None
    finally:
        await store.aclose()


async def test_the_embedded_store_expires_and_is_shared_by_every_process_on_the_host(tmp_path: Path) -> None:
    one, two = SQLiteStore(tmp_path / "c.db", 1 << 20), SQLiteStore(tmp_path / "c.db", 1 << 20)
    await one.start()
    await two.start()
    try:
        await one.put(entry("a", cache_id="r1", partition="team"))
        await one.put(entry("b", cache_id="r2", partition="team"))
        await one.put(entry("gone", ttl=-1))
        got = await two.get("a")
        assert got is not None and (got.cache_id, got.partition, got.payload) == ("r1", "team", b"x" * 1000)
        assert await two.get("gone") is None
        assert await two.delete_id("r1") == 1 and await one.get("a") is None
        assert await two.delete_partition("team") == 1 and await one.get("b") is None
        assert await two.delete_partition("team") == 0
    finally:
        await one.aclose()
        await two.aclose()


async def test_the_memory_store_behaves_like_the_others() -> None:
    store = MemoryStore(max_entries=2)
    for name in ("a", "b"):
        await store.put(entry(name))
    await store.get("a")
    await store.put(entry("c"))
    assert await store.get("b") is None and await store.get("a") is not None
    await store.put(entry("old", ttl=-1))
    assert await store.get("old") is None


async def test_the_redis_store_keeps_every_key_under_its_namespace(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    host_port = redis_url.removeprefix("redis://").split("/")[0]
    store = RedisStore(RedisStoreConfig(addr=host_port), namespace=redis_prefix)
    try:
        await store.put(entry("a", cache_id="r1", partition="team"))
        await store.put(entry("b", cache_id="r2", partition="team"))
        got = await store.get("a")
        assert got is not None and (got.cache_id, got.partition, got.payload) == ("r1", "team", b"x" * 1000)
        client = aioredis.Redis.from_url(redis_url)
        keys = [k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")]
        assert len(keys) == 5  # two entries, two ids, one partition set
        for k in keys:
            assert 0 < await client.pttl(k) <= 60_000
        await client.aclose()
        assert await store.delete_id("r1") == 1 and await store.get("a") is None
        assert await store.delete_partition("team") == 1 and await store.get("b") is None
    finally:
        await store.aclose()


async def test_a_cache_whose_store_fails_misses_then_leaves_it_alone(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    class Broken(MemoryStore):
        async def get(self, key: str) -> Entry | None:
            calls.append(key)
            raise ConnectionError("down")

    cache = Cache(CacheConfig(), store=Broken())
    ticket = await cache.ticket(REQUEST, {"x-bf-cache-key": "p"}, DIGEST)
    assert ticket is not None
    assert await ticket.lookup() is None and await ticket.lookup() is None
    assert len(calls) == 1, "a failed store is not asked again at once"
    assert sum("cache store failed" in r.getMessage() for r in caplog.records) == 1


async def test_a_disabled_cache_ignores_every_header() -> None:
    cache = Cache(CacheConfig(enabled=False))
    assert await cache.ticket(REQUEST, {"x-bf-cache-key": "p", "x-bf-cache-ttl": "bad"}, DIGEST) is None


# ------------------------------------------------------------------------------------------------- config


def test_an_upstream_config_file_configures_the_cache() -> None:
    doc = {
        "plugins": [
            {"enabled": True, "name": "telemetry", "config": {}},
            {"enabled": True, "name": "semantic_cache", "config": {
                "provider": "openai", "keys": [{"value": "sk-emb"}], "embedding_model": "text-embedding-3-small",
                "dimension": 1536, "threshold": 0.8, "ttl": "10m", "default_cache_key": "shared",
                "cache_by_model": False, "cache_by_provider": True, "vector_store_namespace": "ns"}},
        ],
        "vector_store": {"enabled": True, "type": "redis",
                         "config": {"addr": "env.REDIS_ADDR", "password": "env.REDIS_PW", "db": 2, "use_tls": False}},
    }
    config = from_document(doc, {"REDIS_ADDR": "cache.internal:6380", "REDIS_PW": "s3cret"}, frozenset({"openai"}))
    cache = config.cache
    assert (cache.enabled, cache.ttl_seconds, cache.default_cache_key, cache.cache_by_model, cache.namespace) == (
        True, 600.0, "shared", False, "ns")
    assert cache.redis == RedisStoreConfig(addr="cache.internal:6380", password=cache.redis.password, db=2)  # type: ignore[union-attr]
    assert cache.redis is not None and cache.redis.password.reveal() == "s3cret"
    assert "s3cret" not in repr(config)
    assert "plugins[0] (telemetry)" in config.ignored_sections
    assert "plugins[1].config.keys" in config.ignored_sections


def test_cache_config_defaults_and_the_other_vector_stores() -> None:
    assert from_document({}, {}, frozenset()).cache == CacheConfig()
    off = from_document({"plugins": [{"name": "semantic_cache", "enabled": False}]}, {}, frozenset())
    assert off.cache.enabled is False
    weaviate = from_document({"vector_store": {"enabled": True, "type": "weaviate", "config": {"host": "w"}}},
                             {}, frozenset())
    assert weaviate.cache.redis is None and "vector_store.type" in weaviate.unsupported_fields
    assert from_document({"plugins": [{"name": "semantic_cache", "config": {"ttl": 30}}]}, {}, frozenset()).cache.ttl_seconds == 30


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"plugins": [{"name": "semantic_cache", "config": {"ttl": "soon"}}]}, "plugins[0].config.ttl"),
        ({"plugins": [{"name": "semantic_cache", "config": {"ttl": 0}}]}, "plugins[0].config.ttl"),
        ({"plugins": [{"name": "semantic_cache", "config": {"cache_by_model": "yes"}}]},
         "plugins[0].config.cache_by_model"),
        ({"plugins": [{"name": "semantic_cache", "config": {"tll": "5m"}}]}, "plugins[0].config.tll"),
        ({"plugins": [{"config": {}}]}, "plugins[0].name"),
        ({"plugins": {"semantic_cache": {}}}, "plugins"),
        ({"vector_store": {"type": "redis", "config": {"addr": "no-port"}}}, "vector_store.config.addr"),
        ({"vector_store": {"type": "redis", "config": {}}}, "vector_store.config.addr"),
    ],
)
def test_cache_config_mistakes_name_their_path(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_document(doc, {}, frozenset())
    assert info.value.path == path


async def test_the_request_record_gets_cache_debug_and_a_hit_costs_nothing() -> None:
    from bifrost_stt.gateway.routing.router import Served
    from bifrost_stt.kernel.record import RequestRecord, bind

    cache = Cache(CacheConfig(), store=MemoryStore())
    served = Served("openai", "whisper-1", "whisper-1", 0, 0.0, "openai", 60.0)
    with bind(RequestRecord(operation="createTranscription")) as first:
        ticket = await cache.ticket(REQUEST, {"x-bf-cache-key": "p"}, DIGEST)
        assert ticket is not None and await ticket.lookup() is None
        await ticket.store(TranscriptionResult(text="hi"), served)
    assert first.cache_debug == {"cache_hit": False, "cache_id": first.id}
    with bind(RequestRecord(operation="createTranscription")) as second:
        ticket = await cache.ticket(replace(REQUEST, audio=BytesAudio(b"RIFF" + bytes(100), "b.wav")),
                                    {"x-bf-cache-key": "p"}, DIGEST)
        assert ticket is not None
        hit = await ticket.lookup()
    assert hit is not None and hit.result.text == "hi"
    assert second.cache_debug is not None and second.cache_debug["cache_id"] == first.id
    assert second.cache_debug["cache_hit"] is True and second.cost == 0.0
