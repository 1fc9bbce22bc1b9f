"""An async job as stored, its statuses, and the ``JobStore`` protocol a backend implements."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

PENDING, PROCESSING, COMPLETED, FAILED = "pending", "processing", "completed", "failed"
MAX_JOB_ID_LENGTH = 128  # ids are uuid4 strings; anything longer cannot exist and is not looked up


def utc(timestamp: float) -> str:
    """RFC 3339 in UTC with milliseconds, as the contract's ``format: date-time`` asks."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Job:
    """One job as stored. ``body`` is the rendered TranscriptionResponse (completed) or BifrostError (failed)."""

    id: str
    status: str
    created_at: float
    result_ttl: int
    lease_until: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    status_code: int | None = None
    body: bytes | None = None
    progress: tuple[int, int] | None = None  # (pieces done, pieces total) while a long audio job runs

    @property
    def finished(self) -> bool:
        return self.status in (COMPLETED, FAILED)

    def response(self) -> dict[str, Any]:
        """The contract's AsyncJobResponse; the stored body is embedded as is, never parsed again."""
        out: dict[str, Any] = {"id": self.id, "status": self.status, "created_at": utc(self.created_at)}
        if self.completed_at is not None:
            out["completed_at"] = utc(self.completed_at)
        if self.expires_at is not None:
            out["expires_at"] = utc(self.expires_at)
        if self.status_code is not None:
            out["status_code"] = self.status_code
        if self.progress is not None:
            out["progress"] = {"pieces_done": self.progress[0], "pieces_total": self.progress[1]}
        if self.body is not None:
            out["result" if self.status == COMPLETED else "error"] = orjson.Fragment(self.body)
        return out


class JobStoreFull(Exception):
    """``create`` refused: ``max_unfinished`` jobs are already pending or processing."""

    def __init__(self, unfinished: int) -> None:
        super().__init__(f"{unfinished} unfinished jobs")
        self.unfinished = unfinished


class JobStore(Protocol):
    """Where jobs live. Every method is safe to call from several processes at once."""

    async def open(self) -> None: ...

    async def create(self, job: Job, *, max_unfinished: int, now: float) -> None:
        """Insert ``job`` unless ``max_unfinished`` live unfinished jobs exist (``JobStoreFull``)."""

    async def get(self, job_id: str, *, now: float) -> Job | None:
        """The job, or None when unknown or expired."""

    async def start(self, job_id: str, *, lease_until: float) -> bool:
        """pending → processing; False if the job is no longer pending."""

    async def finish(self, job_id: str, *, status: str, status_code: int, body: bytes, now: float) -> bool:
        """An unfinished job → ``status``, expiring ``result_ttl`` after ``now``; False if already finished."""

    async def progress(self, job_id: str, *, done: int, total: int) -> None:
        """An unfinished job has ``done`` of ``total`` pieces transcribed (long audio)."""

    async def renew(self, job_ids: Collection[str], *, lease_until: float) -> None: ...

    async def fail_stale(self, *, now: float, status_code: int, body: bytes, job_id: str | None = None) -> int:
        """Fail unfinished jobs whose lease ran out (only ``job_id`` when given); returns how many."""

    async def purge_expired(self, *, now: float) -> int: ...

    async def aclose(self) -> None: ...
