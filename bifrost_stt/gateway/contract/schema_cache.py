"""Compiled schemas by identity: the one cache behind form plans and response validators.

Connexion hands the same schema dict to every request of an operation (its validators are created per
request), so identity hits after the first request. The schema stays referenced so its id cannot be
reused; the size is bounded so a Connexion that rebuilt schemas per request could not grow it forever.
One cache per app (made in ``make_validator_map`` / ``validator_map``), never per process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SchemaCache(Generic[T]):
    def __init__(self, build: Callable[[dict[str, Any]], T], *, limit: int = 1024) -> None:
        self._build = build
        self._limit = limit
        self._by_id: dict[int, tuple[dict[str, Any], T]] = {}

    def get(self, schema: dict[str, Any]) -> T:
        hit = self._by_id.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        value = self._build(schema)
        if len(self._by_id) >= self._limit:
            self._by_id.clear()
        self._by_id[id(schema)] = (schema, value)
        return value
