"""Real PostgreSQL and Redis for the tests that need them (stores shared by several gateway instances).

The machine runs both on 127.0.0.1 (`./dev test` starts them when they are installed but stopped). Each test
session gets its own PostgreSQL database and its own Redis key prefix, so concurrent runs never see each
other's rows or keys, and both are removed at the end. When a service cannot be reached, its tests are
skipped with the reason, except under CI (``CI=true``), where that is a failure: CI must exercise them.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator

import pytest

PG_HOST, PG_PORT = os.environ.get("BIFROST_TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("BIFROST_TEST_PG_PORT", "5432"))
PG_USER, PG_ADMIN_DB = os.environ.get("BIFROST_TEST_PG_USER", "postgres"), os.environ.get("BIFROST_TEST_PG_DB", "test")
REDIS_HOST, REDIS_PORT = os.environ.get("BIFROST_TEST_REDIS_HOST", "127.0.0.1"), int(os.environ.get("BIFROST_TEST_REDIS_PORT", "6379"))


def _unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why}); start it (./dev test does when it is installed)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs {message}", pytrace=False)
    pytest.skip(message)


def _reachable(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=2):
        pass


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session, as a SQLAlchemy URL (psycopg 3 driver)."""
    try:
        _reachable(PG_HOST, PG_PORT)
        import psycopg
    except (OSError, ImportError) as exc:
        _unavailable(f"PostgreSQL on {PG_HOST}:{PG_PORT}", exc)
    name = f"bifrost_test_{secrets.token_hex(6)}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={PG_ADMIN_DB}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL on {PG_HOST}:{PG_PORT} as {PG_USER}", exc)
    yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``redis://127.0.0.1:6379/0``; tests keep to their own keys (see ``redis_prefix``) and never flush."""
    try:
        _reachable(REDIS_HOST, REDIS_PORT)
        import redis
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping()
    except (OSError, ImportError, Exception) as exc:  # redis.ConnectionError and friends
        _unavailable(f"Redis on {REDIS_HOST}:{REDIS_PORT}", exc)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    prefix = f"bifrost-test:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=500):
        client.delete(key)
    client.close()
