"""The operations teams run the gateway with: getMetrics, and the request logs (getLogs, getLogById,
getLogsStats, deleteLogs) in upstream's shapes. Access to them is checked before they run
(``bifrost_stt.gateway.access``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.gateway.observe import metrics
from bifrost_stt.gateway.stores.logs import MAX_LIMIT, SORT_COLUMNS, LogFilter, LogStore
from bifrost_stt.handlers.outbound import json_response
from bifrost_stt.kernel.errors import ClientError, NotFound, Overloaded

log = logging.getLogger("bifrost_stt.handlers")
DEFAULT_LIMIT = 50


def _list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(dict.fromkeys(s.strip() for s in items if str(s).strip()))


def _time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ClientError(f"{name} must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z", param=name) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ClientError(f"{name} must be a finite number", param=name)
    return number


def log_filter(params: dict[str, Any]) -> LogFilter:
    """The shared query parameters -> a LogFilter; filters on what is never recorded here match nothing."""
    min_tokens = params.get("min_tokens")
    return LogFilter(
        providers=_list(params.get("providers")),
        models=_list(params.get("models")),
        status=_list(params.get("status")),
        objects=_list(params.get("objects")),
        selected_key_ids=_list(params.get("selected_key_ids")),
        virtual_key_ids=_list(params.get("virtual_key_ids")),
        unmatchable=bool(_list(params.get("routing_rule_ids")) or _list(params.get("routing_engine_used"))
                         or (min_tokens is not None and int(min_tokens) > 0)
                         or (params.get("max_tokens") is not None and int(params["max_tokens"]) < 0)),
        start_time=_time(params.get("start_time"), "start_time"),
        end_time=_time(params.get("end_time"), "end_time"),
        min_latency=_number(params.get("min_latency"), "min_latency"),
        max_latency=_number(params.get("max_latency"), "max_latency"),
        min_cost=_number(params.get("min_cost"), "min_cost"),
        max_cost=_number(params.get("max_cost"), "max_cost"),
        missing_cost_only=bool(params.get("missing_cost_only")),
        content_search=(str(params["content_search"]) or None) if params.get("content_search") else None,
    )


class OperateHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _store(self) -> LogStore:
        store = self.gateway.logs.store
        if store is None:
            raise Overloaded("the request-log store is off; enable it with logs_store.enabled (docs/operations.md)",
                             code="logs_store_disabled")
        return store

    async def _ask(self, work: Callable[[LogStore], Awaitable[Any]]) -> Any:
        try:
            return await work(self._store())
        except SQLAlchemyError as exc:
            log.warning("the request-log store failed to answer (%s)", type(exc).__name__)
            raise Overloaded("the request-log store cannot be reached; retry later", code="logs_store_unavailable",
                             headers={"Retry-After": "5"}) from None

    async def get_metrics(self) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def get_logs(self, **params: Any) -> Response:
        # as upstream: a limit of 0 or less means the default page, a negative offset the first page
        limit = int(params.get("limit", DEFAULT_LIMIT))
        limit = DEFAULT_LIMIT if limit < 1 else limit
        offset = max(0, int(params.get("offset", 0)))
        if limit > MAX_LIMIT:
            raise ClientError(f"limit must be at most {MAX_LIMIT}", param="limit")
        sort_by = str(params.get("sort_by") or "timestamp")
        order = str(params.get("order") or "desc")
        if sort_by not in SORT_COLUMNS or order not in ("asc", "desc"):
            raise ClientError("sort_by is one of timestamp, latency, tokens, cost; order is asc or desc")
        where = log_filter(params)
        found = await self._ask(lambda store: store.search(where, limit=limit, offset=offset,
                                                           sort_by=sort_by, order=order))
        return json_response(found)

    async def get_logs_stats(self, **params: Any) -> Response:
        where = log_filter(params)
        return json_response(await self._ask(lambda store: store.stats(where)))

    async def get_log_by_id(self, id: str) -> Response:  # noqa: A002 - the contract's parameter name
        entry = await self._ask(lambda store: store.get(id))
        if entry is None:
            raise NotFound("no log entry with this id (deleted, expired or never recorded)", param="id",
                           code="log_not_found")
        return json_response(entry)

    async def delete_logs(self, body: dict[str, Any]) -> Response:
        ids = [str(i) for i in body.get("ids") or []]
        removed = await self._ask(lambda store: store.delete(ids))
        return json_response({"message": f"deleted {removed} log entr{'y' if removed == 1 else 'ies'}"})

    def operations(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "getMetrics": self.get_metrics,
            "getLogs": self.get_logs,
            "getLogsStats": self.get_logs_stats,
            "getLogById": self.get_log_by_id,
            "deleteLogs": self.delete_logs,
        }
