"""The async transcription operations: submit a job (202), poll it (202 until done, then 200; 404 once gone).

The request is read exactly as the unified route reads it (``inbound.build_request`` with ``UNIFIED``) and the
job's result is what the unified route would have answered (``outbound.result_response``): a client switching
to the async pair gets the same TranscriptionResponse, ``extra_fields`` included, inside ``result``; a
failure is the same BifrostError, inside ``error``, with its status in ``status_code``. Errors the form
itself shows (no file, bad model, unconfigured provider) are still a 400 on the POST; what only the call
can show (a model no key allows, a provider's size limit, the provider's own errors) ends in a failed job,
as upstream does. The job state lives in ``bifrost_stt.gateway.jobs.runner``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response

from bifrost_stt.kernel.canonical import TranscriptionRequest
from bifrost_stt.kernel.errors import ClientError, NotFound
from bifrost_stt.gateway.jobs.record import COMPLETED, FAILED
from bifrost_stt.gateway.cache.policy import Ticket
from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.gateway.governance.service import Ticket as Charge
from bifrost_stt.gateway.governance.service import models_of
from bifrost_stt.handlers import outbound
from bifrost_stt.handlers.cache import hit_served
from bifrost_stt.handlers.inbound import UNIFIED, build_request, current_form

TTL_HEADER = "x-bf-async-job-result-ttl"
JOBS_PATH = "/v1/async/audio/transcriptions"


def requested_ttl(headers: Mapping[str, str]) -> int | None:
    """The client's ``x-bf-async-job-result-ttl``; as upstream, an unreadable value means "the default"."""
    try:
        return int(headers.get(TTL_HEADER, "").strip())
    except ValueError:
        return None


class JobHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def create_async_transcription(self) -> Response:
        form, headers = current_form()
        try:
            request, original = build_request(self.gateway, form, headers, UNIFIED)
            request, charge = await self.gateway.governance.admit(headers, request)
            if request.stream:
                raise ClientError(
                    "stream is not supported for async transcriptions; drop stream, or use "
                    "POST /v1/audio/transcriptions to stream", param="stream",
                )
            # Bad cache headers are refused now (400); the lookup itself runs in the job.
            ticket = await self.gateway.cache.ticket(request, headers, form.digests.get("file"))
            # The job owns the upload from here: taken out of the form, whose close() must not close it.
            audio = form.files.pop("file")
            runner = self.gateway.jobs
            job = await runner.submit(
                self._work(request, original, ticket, charge),
                ttl=requested_ttl(headers),
                release=audio.close,
            )
        finally:
            form.close()
        return outbound.json_response(job.response(), 202, {"location": f"{JOBS_PATH}/{job.id}"})

    def _work(
        self, request: TranscriptionRequest, original: str, ticket: Ticket | None, charge: Charge
    ) -> Callable[[], Awaitable[bytes]]:
        gateway = self.gateway

        async def transcribe() -> bytes:
            hit = await ticket.lookup() if ticket is not None else None
            debug: dict[str, Any] | None
            if hit is not None:
                charge.settle_cache_hit()
                result, served, debug = hit.result, hit_served(hit), hit.debug
            else:
                result, served = await gateway.router.transcribe(request)
                await charge.settle(result, served.provider, models_of(served.model, served.deployment))
                debug = await ticket.store(result, served) if ticket is not None else None
            response = outbound.result_response(
                result,
                served,
                response_format=request.response_format,
                granularities=request.timestamp_granularities,
                original_model=original,
                text_as_plain=False,  # the unified route's shape: text/srt/vtt as {"text": ...}
                cache_debug=debug,
            )
            return bytes(response.body)

        return transcribe

    async def get_async_transcription_job(self, job_id: str) -> Response:
        job = await self.gateway.jobs.lookup(job_id)
        if job is None:
            raise NotFound("async job not found or expired", param="job_id", code="job_not_found")
        status = 200 if job.status in (COMPLETED, FAILED) else 202
        return outbound.json_response(job.response(), status)

    def operations(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "createAsyncTranscription": self.create_async_transcription,
            "getAsyncTranscriptionJob": self.get_async_transcription_job,
        }
