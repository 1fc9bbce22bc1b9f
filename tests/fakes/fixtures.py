"""Pytest fixtures for the fake upstreams; enabled by ``pytest_plugins = ["tests.fakes.fixtures"]``.

Each server starts once per test session (a few ms) and is reset before every test that asks for it:
recorded requests, queued replies and settings (keys, transcript, models ...) are back to defaults.

    fake_upstream   a bare FakeServer: only queued replies, 404 otherwise
    fake_openai     FakeOpenAI  (url, base_url, provider_config(), key(), requests, enqueue ...)
    fake_azure      FakeAzure
    fake_groq       FakeGroq    (base_url ends in /openai)
    refused_url     a loopback URL nothing listens on (connection refused)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.fakes.openai import FakeAzure, FakeGroq, FakeOpenAI
from tests.fakes.server import FakeServer


@pytest.fixture(scope="session")
def _fake_upstream_server() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def _fake_azure_server() -> Iterator[FakeAzure]:
    with FakeAzure() as server:
        yield server


@pytest.fixture(scope="session")
def _fake_groq_server() -> Iterator[FakeGroq]:
    with FakeGroq() as server:
        yield server


@pytest.fixture
def fake_upstream(_fake_upstream_server: FakeServer) -> FakeServer:
    _fake_upstream_server.reset()
    return _fake_upstream_server


@pytest.fixture
def fake_openai(_fake_openai_server: FakeOpenAI) -> FakeOpenAI:
    _fake_openai_server.reset()
    return _fake_openai_server


@pytest.fixture
def fake_azure(_fake_azure_server: FakeAzure) -> FakeAzure:
    _fake_azure_server.reset()
    return _fake_azure_server


@pytest.fixture
def fake_groq(_fake_groq_server: FakeGroq) -> FakeGroq:
    _fake_groq_server.reset()
    return _fake_groq_server


@pytest.fixture
def refused_url() -> str:
    """``http://127.0.0.1:<port>`` for a port that was just free: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
