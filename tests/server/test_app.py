"""The app factory: every operation in the contract has a handler, and a missing one stops the start."""

from __future__ import annotations

import copy

import pytest

from bifrost_stt import handlers
from bifrost_stt.gateway.contract import loading as spec
from bifrost_stt.gateway.contract.operations import SERVED
from bifrost_stt.server.app import create_app, missing_handlers
from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.kernel.settings import GatewayConfig


def test_every_operation_in_the_contract_has_a_handler() -> None:
    contract = spec.load_contract()
    table = handlers.operations(Gateway(GatewayConfig()))
    missing = missing_handlers(contract, table)
    assert missing == [], f"operations without a handler: {missing}"
    assert {op for _, _, op in spec.operations(contract)} <= set(table)


def test_the_served_contract_holds_exactly_the_served_operation_list() -> None:
    served = sorted(op for _, _, op in spec.operations(spec.load_contract()))
    assert served == sorted(set(SERVED)), "openapi/ and bifrost_stt.gateway.contract.operations disagree"


def test_an_operation_without_handler_stops_the_start_naming_it() -> None:
    contract = copy.deepcopy(spec.load_contract())
    contract["paths"]["/v1/audio/translations"] = {
        "post": {"operationId": "createTranslation", "responses": {"200": {"description": "ok"}}}
    }
    with pytest.raises(RuntimeError, match="createTranslation"):
        create_app(GatewayConfig(), contract=contract)


def test_known_provider_ids_come_from_the_contract() -> None:
    ids = spec.provider_ids(spec.load_contract())
    assert {"openai", "azure", "groq", "mistral", "deepgram"} <= ids


async def test_an_exception_escaping_every_layer_is_still_a_bifrost_500() -> None:
    import httpx

    from bifrost_stt.server.app import middleware_stack

    async def broken(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("a bug outside the exception layer")

    guard = middleware_stack(b"{}")[0](broken)
    transport = httpx.ASGITransport(app=guard, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/anything")
    assert r.status_code == 500
    body = r.json()
    assert body["is_bifrost_error"] is True and "bug outside" not in r.text
