"""The service fixtures give each session its own empty database and each test its own Redis keys."""

from __future__ import annotations


def test_postgres_database_is_fresh_and_writable(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("create table probe (n int)")
        conn.execute("insert into probe values (1)")
        assert conn.execute("select n from probe").fetchall() == [(1,)]


def test_redis_keys_live_under_the_prefix(redis_url: str, redis_prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set(redis_prefix + "a", "1")
    assert client.get(redis_prefix + "a") == b"1"
    client.close()
