"""The cache's counters, behind two calls so they can move to the metrics module without touching callers.

Until ``bifrost_stt.gateway.observe.metrics`` exists these are plain process-local counters; the metrics
module's ``bifrost_cache_hits_total{cache_type}`` replaces ``hit`` and a store-failure counter ``store_failed``.
"""

from __future__ import annotations

from collections import Counter

_hits: Counter[str] = Counter()
_failures: Counter[str] = Counter()


def hit(cache_type: str = "direct") -> None:
    _hits[cache_type] += 1


def store_failed(operation: str) -> None:
    _failures[operation] += 1


def snapshot() -> dict[str, dict[str, int]]:
    """What has been counted in this process (tests, bench)."""
    return {"hits": dict(_hits), "store_failures": dict(_failures)}
