"""Every Prometheus metric the gateway exports, in one place, with upstream Bifrost's names and labels.

Other rooms (governance, the cache) call the small functions at the bottom (``cost``, ``cache_hit``) or read
``BASE_LABELS``; nothing else creates metrics. ``observe(record)`` turns one finished ``RequestRecord`` into
metric updates; ``http(...)`` counts every HTTP request by route template.

Multiprocess: with ``--workers N`` the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
the workers start (``prepare_multiprocess``); prometheus-client then keeps each worker's values in files
there and ``render()`` merges them, so one scrape of any worker sees every worker. Base labels carry key
*names* (``selected_key_name``) and ids, never a key value.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    disable_created_metrics,
    multiprocess,
)

from bifrost_stt.kernel.record import RequestRecord

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: upstream exports none
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client picks file-backed values when this module's metrics are created (at import): the same
# moment decides how they are read back, so a variable set later (by `serve` in its parent process) changes
# nothing here.
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))
METHOD = "transcription"  # upstream's request-type label value for this gateway's one request type

BASE_LABELS = (
    "provider", "model", "method", "virtual_key_id", "virtual_key_name",
    "selected_key_id", "selected_key_name", "fallback_index",
)
HTTP_LABELS = ("path", "method", "status")
_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_SIZE = (1024, 16 * 1024, 128 * 1024, 1024**2, 8 * 1024**2, 32 * 1024**2, 128 * 1024**2)

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered", HTTP_LABELS)
HTTP_DURATION = Histogram("http_request_duration_seconds", "HTTP request time, first byte in to last out",
                          HTTP_LABELS, buckets=_LATENCY)
HTTP_REQUEST_SIZE = Histogram("http_request_size_bytes", "HTTP request body size (Content-Length)",
                              HTTP_LABELS, buckets=_SIZE)
HTTP_RESPONSE_SIZE = Histogram("http_response_size_bytes", "HTTP response body size", HTTP_LABELS, buckets=_SIZE)

UPSTREAM_REQUESTS = Counter("bifrost_upstream_requests_total", "Calls made to providers (retries included)",
                            BASE_LABELS)
SUCCESS_REQUESTS = Counter("bifrost_success_requests_total", "Requests answered successfully", BASE_LABELS)
ERROR_REQUESTS = Counter("bifrost_error_requests_total", "Requests answered with an error",
                         BASE_LABELS + ("status_code", "error_type"))
UPSTREAM_LATENCY = Histogram("bifrost_upstream_latency_seconds", "Time of each provider call",
                             BASE_LABELS + ("is_success",), buckets=_LATENCY)
OVERHEAD = Histogram("bifrost_overhead_latency_microseconds", "Time spent in the gateway beyond provider calls",
                     BASE_LABELS, buckets=(100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 500000))
RETRIES = Histogram("bifrost_request_retries", "Retries per request", BASE_LABELS, buckets=(0, 1, 2, 3, 5, 10))
ACTIVE = Gauge("bifrost_active_requests", "Requests being served", ("method",), multiprocess_mode="livesum")
KEY_ROTATIONS = Counter("bifrost_key_rotation_events_total", "A key left for another after a failure",
                        ("provider", "requested_model", "key_id", "key_name", "fail_reason"))
KEY_UP = Gauge("bifrost_provider_key_up", "1 while a provider key works, 0 after it was refused",
               ("provider", "key_id", "key_name"), multiprocess_mode="mostrecent")
FIRST_TOKEN = Histogram("bifrost_stream_first_token_latency_seconds", "Stream: time to the first event",
                        BASE_LABELS, buckets=_LATENCY)
INTER_TOKEN = Histogram("bifrost_stream_inter_token_latency_seconds", "Stream: time between events",
                        BASE_LABELS, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
COST = Counter("bifrost_cost_total", "Cost of served requests in USD", BASE_LABELS)
CACHE_HITS = Counter("bifrost_cache_hits_total", "Answers served from the cache", BASE_LABELS + ("cache_type",))
AUDIO_SECONDS = Counter("bifrost_audio_seconds_total", "Seconds of audio transcribed", BASE_LABELS)
AUDIO_DURATION = Histogram("bifrost_audio_duration_seconds", "Length of each transcribed file",
                           ("provider", "model"), buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200))
LOG_DROPPED = Counter("bifrost_log_records_dropped_total", "Request records the log store could not keep",
                      ("reason",))

# upstream's closed error_type vocabulary
ERROR_TYPES = frozenset({
    "caller_model_not_available", "caller_model_unknown", "caller_invalid_request", "caller_cancelled",
    "policy_model_blocked", "policy_provider_blocked", "policy_access_denied", "policy_budget_exceeded",
    "policy_rate_limited", "provider_auth_failed", "provider_billing", "provider_rate_limited",
    "provider_overloaded", "provider_server_error", "provider_timeout", "provider_connection_failed",
    "provider_credentials_exhausted", "bifrost_dropped", "bifrost_internal", "_OTHER",
})
_POLICY_CODES = {
    "model_blocked": "policy_model_blocked", "provider_blocked": "policy_provider_blocked",
    "budget_exceeded": "policy_budget_exceeded", "rate_limited": "policy_rate_limited",
    "token_limited": "policy_rate_limited", "request_limited": "policy_rate_limited",
    "virtual_key_not_found": "policy_access_denied", "virtual_key_blocked": "policy_access_denied",
}


def error_type(status: int, error: dict[str, Any] | None) -> str:
    """One of ``ERROR_TYPES`` for a failed request, from its status and its Bifrost error envelope."""
    body = error or {}
    raw = body.get("error")
    inner: dict[str, Any] = raw if isinstance(raw, dict) else {}
    code, kind = str(inner.get("code") or ""), str(inner.get("type") or "")
    ours = bool(body.get("is_bifrost_error", True))
    if status == 499:
        return "caller_cancelled"
    if code in _POLICY_CODES:
        return _POLICY_CODES[code]
    if code == "upstream_credentials_exhausted":
        return "provider_credentials_exhausted"
    if kind == "upstream_timeout" or (not ours and status == 504):
        return "provider_timeout"
    if kind == "upstream_unavailable":
        return "provider_connection_failed"
    if not ours:
        if status in (401, 403):
            return "provider_auth_failed"
        if status == 402:
            return "provider_billing"
        if status == 429:
            return "provider_rate_limited"
        if status in (503, 529):
            return "provider_overloaded"
        if status >= 500:
            return "provider_server_error"
        if status == 404:
            return "caller_model_unknown"
        return "caller_invalid_request"
    if code == "model_not_allowed":
        return "caller_model_not_available"
    if code == "provider_not_configured" or status == 404:
        return "caller_model_unknown"
    if status in (401, 403):
        return "policy_access_denied"
    if status == 402:
        return "policy_budget_exceeded"
    if status == 429:
        return "policy_rate_limited"
    if status == 503:
        return "bifrost_dropped"
    if status >= 500:
        return "bifrost_internal"
    if 400 <= status < 500:
        return "caller_invalid_request"
    return "_OTHER"


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, cached: prometheus-client rebuilds and checks the label tuple on every
    call (several µs per metric per request); label sets repeat, so the children are kept here."""
    key = (id(metric), values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def base_labels(record: RequestRecord, *, final_error: bool = False) -> dict[str, str]:
    """The labels every inference metric carries. ``selected_key_*`` is empty on a final error (upstream)."""
    return dict(zip(BASE_LABELS, base_values(record, final_error=final_error), strict=True))


def base_values(record: RequestRecord, *, final_error: bool = False) -> tuple[str, ...]:
    """``BASE_LABELS``' values for ``record``, in order."""
    return (
        record.provider or record.requested_provider or "",
        record.model or record.requested_model or "",
        METHOD,
        record.virtual_key_id or "",
        record.virtual_key_name or "",
        "" if final_error else (record.selected_key_id or ""),
        "" if final_error else (record.selected_key_name or ""),
        str(record.fallback_index),
    )


def observe(record: RequestRecord) -> None:
    """Metric updates for one finished inference request."""
    failed = record.status != "success"
    labels = base_values(record, final_error=failed)
    upstream_seconds = 0.0
    for attempt in record.attempts:
        latency = attempt.get("latency_ms")
        if latency is None:  # refused before any call (size limit, no key): no upstream request was made
            continue
        seconds = float(latency) / 1000.0
        upstream_seconds += seconds
        key = str(attempt.get("key_name") or "")
        values = (str(attempt.get("provider") or labels[0]), str(attempt.get("model") or labels[1]), METHOD,
                  labels[3], labels[4], str(attempt.get("key_id") or key), key,
                  str(attempt.get("fallback_index", labels[7])))
        ok = int(attempt.get("status") or 0) < 400
        child(UPSTREAM_REQUESTS, *values).inc()
        child(UPSTREAM_LATENCY, *values, "true" if ok else "false").observe(seconds)
        _key_health(record, attempt, ok)
    if failed:
        status = record.status_code or 500
        child(ERROR_REQUESTS, *labels, str(status), error_type(status, record.error)).inc()
    else:
        child(SUCCESS_REQUESTS, *labels).inc()
    child(RETRIES, *labels).observe(record.retries)
    if record.latency_ms is not None:
        overhead_us = max(0.0, record.latency_ms / 1000.0 - upstream_seconds) * 1_000_000
        child(OVERHEAD, *labels).observe(overhead_us)
    if record.first_token_ms is not None:
        child(FIRST_TOKEN, *labels).observe(record.first_token_ms / 1000.0)
    if record.cost:
        child(COST, *labels).inc(record.cost)
    if record.cache_debug and record.cache_debug.get("cache_hit"):
        cache_hit(record, str(record.cache_debug.get("hit_type") or "direct"))
    if record.audio_seconds and not failed:
        child(AUDIO_SECONDS, *labels).inc(record.audio_seconds)
        child(AUDIO_DURATION, labels[0], labels[1]).observe(record.audio_seconds)


def _key_health(record: RequestRecord, attempt: dict[str, Any], ok: bool) -> None:
    name = attempt.get("key_name")
    if not name:
        return
    provider, key_id = str(attempt.get("provider") or ""), str(attempt.get("key_id") or name)
    status = int(attempt.get("status") or 0)
    if ok:
        child(KEY_UP, provider, key_id, str(name)).set(1)
        return
    if status in (401, 402, 403):
        child(KEY_UP, provider, key_id, str(name)).set(0)
    reason = attempt.get("rotated")
    if reason:
        child(KEY_ROTATIONS, provider, record.requested_model or "", key_id, str(name), str(reason)).inc()


def inter_token(record: RequestRecord, seconds: float) -> None:
    """One gap between two stream events (called by the stream writer as events go out)."""
    child(INTER_TOKEN, *base_values(record)).observe(seconds)


def cost(record: RequestRecord, usd: float) -> None:
    """Governance: count ``usd`` for this request outside ``observe`` (e.g. a cost known only later)."""
    child(COST, *base_values(record)).inc(usd)


def cache_hit(record: RequestRecord, cache_type: str = "direct") -> None:
    child(CACHE_HITS, *base_values(record), cache_type).inc()


def http(path: str, method: str, status: int, seconds: float, request_bytes: int | None, response_bytes: int) -> None:
    labels = (path, method, str(status))
    child(HTTP_REQUESTS, *labels).inc()
    child(HTTP_DURATION, *labels).observe(seconds)
    if request_bytes is not None:
        child(HTTP_REQUEST_SIZE, *labels).observe(request_bytes)
    child(HTTP_RESPONSE_SIZE, *labels).observe(response_bytes)


def keys_configured(keys: Iterable[tuple[str, str]]) -> None:
    """At start: every enabled key (provider, key name) is up until a provider refuses it."""
    for provider, name in keys:
        child(KEY_UP, provider, name, name).set(1)


def dropped(reason: str, count: int = 1) -> None:
    child(LOG_DROPPED, reason).inc(count)


def active(delta: int) -> None:
    child(ACTIVE, METHOD).inc(delta)


# ------------------------------------------------------------------------------------------ exposition


def render() -> tuple[bytes, str]:
    """The text exposition and its content type; merged across workers in multiprocess mode."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def prepare_multiprocess(directory: str | None) -> str:
    """Before workers start: an empty directory for their metric files (a given one is emptied)."""
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return str(path)
    import tempfile

    return tempfile.mkdtemp(prefix="bifrost-stt-metrics-")


def worker_exit() -> None:
    """A worker stopping: its live gauges (active requests) leave the sum."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
