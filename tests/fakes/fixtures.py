"""Pytest fixtures for the fake upstreams; enabled by ``pytest_plugins`` in tests/conftest.py.

Each server starts once per test session (a few ms) and is reset before every test that asks for it:
recorded requests, queued replies and settings (keys, transcript, models ...) are back to defaults.
``fake_<name>`` is the reset server; ``_fake_<name>_server`` the session one (for module-scoped
gateways). One line per fake in ``FAKES``:

    fake_upstream     a bare FakeServer: only queued replies, 404 otherwise
    fake_openai       FakeOpenAI  (url, base_url, provider_config(), key(), requests, enqueue ...)
    fake_azure        FakeAzure
    fake_groq         FakeGroq    (base_url ends in /openai)
    fake_mistral, fake_elevenlabs, fake_gemini, fake_deepgram, fake_huggingface (base_url ends in
    /hf-inference), fake_vllm (key-less unless api_keys is set), fake_fireworks
    refused_url       a loopback URL nothing listens on (connection refused)
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.gemini import FakeGemini
from tests.fakes.huggingface import FakeHuggingFace
from tests.fakes.mistral import FakeMistral
from tests.fakes.openai import FakeAzure, FakeGroq, FakeOpenAI
from tests.fakes.server import FakeServer
from tests.fakes.vllm import FakeFireworks, FakeVLLM

FAKES: dict[str, type[FakeServer]] = {
    "upstream": FakeServer,
    "openai": FakeOpenAI,
    "azure": FakeAzure,
    "groq": FakeGroq,
    "mistral": FakeMistral,
    "elevenlabs": FakeElevenLabs,
    "gemini": FakeGemini,
    "deepgram": FakeDeepgram,
    "huggingface": FakeHuggingFace,
    "vllm": FakeVLLM,
    "fireworks": FakeFireworks,
}


def _fixtures(name: str, cls: type[FakeServer]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    session_name = f"_fake_{name}_server"

    @pytest.fixture(scope="session", name=session_name)
    def server() -> Iterator[FakeServer]:
        with cls() as running:
            yield running

    @pytest.fixture(name=f"fake_{name}")
    def fake(request: pytest.FixtureRequest) -> FakeServer:
        running: FakeServer = request.getfixturevalue(session_name)
        running.reset()
        return running

    return server, fake


for _name, _cls in FAKES.items():
    globals()[f"_fake_{_name}_server_fixture"], globals()[f"fake_{_name}_fixture"] = _fixtures(_name, _cls)


@pytest.fixture
def refused_url() -> str:
    """``http://127.0.0.1:<port>`` for a port that was just free: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
