"""GET /health: the gateway answers and lists the providers it is configured for."""

from __future__ import annotations

from starlette.responses import Response

from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.handlers.outbound import json_response


class HealthHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def get_health(self) -> Response:
        return json_response({"status": "ok", "providers": sorted(self.gateway.configured)})
