"""One function per transcription operationId: validated form -> canonical request -> router -> response."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from connexion import context
from starlette.responses import Response

from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.gateway.governance.service import models_of
from bifrost_stt.handlers import cache, outbound
from bifrost_stt.handlers.inbound import AZURE, INTEGRATION, UNIFIED, Route, build_request, current_form

T = TypeVar("T")
log = logging.getLogger("bifrost_stt.handlers")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _until_disconnect() -> None:
    receive = context.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it (and so the upstream call) if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise ClientGone()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


class TranscriptionHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def _serve(self, route: Route, *, deployment: str | None = None) -> Response:
        form, headers = current_form()
        try:
            request, original = build_request(self.gateway, form, headers, route, deployment=deployment)
            request, charge = await self.gateway.governance.admit(headers, request)
            ticket = await self.gateway.cache.ticket(request, headers, form.digests.get("file"))
            hit = await ticket.lookup() if ticket is not None else None
            if hit is not None:  # governance: counted as a request for rate limits, costs no budget
                charge.settle_cache_hit()
                return cache.hit_response(hit, request, route, original)
            router = self.gateway.router
            if request.stream:
                events, served = await cancel_on_disconnect(router.stream(request))
                events = charge.watch(events, served.provider, models_of(served.model, served.deployment))
                return outbound.stream_response(events, served, original_model=original,
                                                on_done=cache.store_on_done(ticket, served))
            result, served = await cancel_on_disconnect(router.transcribe(request))
            await charge.settle(result, served.provider, models_of(served.model, served.deployment))
            return outbound.result_response(
                result,
                served,
                response_format=request.response_format,
                granularities=request.timestamp_granularities,
                original_model=original,
                text_as_plain=route.text_as_plain,
                cache_debug=await ticket.store(result, served) if ticket is not None else None,
            )
        except ClientGone:
            log.info("client went away before the answer; the upstream call was cancelled")
            return Response(status_code=499)
        finally:
            # A native stream has sent the whole upload before its first event; the gateway's own
            # stream has finished transcribing: the spooled audio is no longer needed either way.
            form.close()

    async def create_transcription(self) -> Response:
        return await self._serve(UNIFIED)

    async def openai_create_transcription(self) -> Response:
        return await self._serve(INTEGRATION)

    async def azure_create_transcription(self, deployment_id: str, api_version: str | None = None) -> Response:
        # The client's api-version is the Azure SDK's; the upstream call uses the key's configured one.
        return await self._serve(AZURE, deployment=deployment_id)

    def operations(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        integration = self.openai_create_transcription
        return {
            "createTranscription": self.create_transcription,
            "openaiCreateTranscription": integration,
            "openaiCreateTranscriptionAlias": integration,
            "azureCreateTranscription": self.azure_create_transcription,
            "litellmOpenAITranscriptions": integration,
            "langchainOpenAITranscriptions": integration,
            "pydanticaiOpenAITranscriptions": integration,
        }
