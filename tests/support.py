"""A real gateway on 127.0.0.1 for tests: uvicorn in a thread, lifespan on, like production."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar

import pytest
import uvicorn

from bifrost_stt.server.app import create_app
from bifrost_stt.server.connections import GuardedHttpTools
from bifrost_stt.kernel.settings import (
    ClientConfig,
    GatewayConfig,
    KeyConfig,
    NetworkConfig,
    ProviderConfig,
    Secret,
)
from bifrost_stt.providers import registry
from bifrost_stt.providers.http import make_client


T = TypeVar("T")


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app on a free loopback port until the block ends; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The protocol `serve` runs in production (client header/body timeouts, connection cap), default limits.
    config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2,
                            http=GuardedHttpTools)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway failed to start (see the log above)")
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start within 10 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def provider(
    provider_id: str,
    base_url: str,
    *,
    key: str = "sk-test-key",
    kind: str | None = None,
    keys: tuple[KeyConfig, ...] | None = None,
    **network: Any,
) -> ProviderConfig:
    """A provider config pointing at a fake upstream."""
    if keys is None:
        sections = {"azure_key_config": {"endpoint": base_url}} if (kind or provider_id) == "azure" else {}
        keys = (KeyConfig(name=f"{provider_id}-key", value=Secret(key), sections=sections),)
    net = NetworkConfig(base_url=base_url, **network)
    return ProviderConfig(id=provider_id, kind=kind or provider_id, keys=keys, network=net)


def config_with(*providers: ProviderConfig, **client: Any) -> GatewayConfig:
    return GatewayConfig(
        providers=MappingProxyType({p.id: p for p in providers}),
        client=replace(ClientConfig(), **client),
    )


def strict_app(config: GatewayConfig, **kwargs: Any) -> Any:
    """The app as tests run it: a response or stream event that breaks the contract fails loudly."""
    return create_app(config, strict_responses=True, **kwargs)


@pytest.fixture(scope="module")
def gateway_url(_fake_openai_server: Any, _fake_azure_server: Any, _fake_groq_server: Any) -> Iterator[str]:
    """One gateway per test module in front of the OpenAI, Azure and Groq fakes."""
    config = config_with(
        _fake_openai_server.provider_config(),
        _fake_azure_server.provider_config(),
        _fake_groq_server.provider_config(),
    )
    with serve(strict_app(config)) as url:
        yield url


@pytest.fixture
def run_gateway() -> Iterator[Callable[..., str]]:
    """``run_gateway(config)`` starts a gateway for this test and returns its base URL."""
    stack: list[Any] = []

    def start(config: GatewayConfig, **kwargs: Any) -> str:
        ctx = serve(strict_app(config, **kwargs))
        url = ctx.__enter__()
        stack.append(ctx)
        return url

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@asynccontextmanager
async def built(config: ProviderConfig, expected: type[T]) -> AsyncIterator[T]:
    """The provider the registry builds for ``config`` (checked to be ``expected``), on its own pooled
    client, closed when the block ends."""
    client = make_client(config)
    try:
        impl = registry.build(config, client)
        assert isinstance(impl, expected), type(impl)
        yield impl
    finally:
        await client.aclose()


def headers_of(mapping: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in mapping.items()}
