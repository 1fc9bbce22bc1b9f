"""Pytest fixtures for the Mistral and ElevenLabs fakes; enabled from ``pytest_plugins`` in tests/conftest.py.

Each server starts once per session and is reset before every test that asks for it (requests, queued
replies and settings back to defaults), like tests.fakes.fixtures.

    fake_mistral      FakeMistral     (url, provider_config(), key(), requests, enqueue ...)
    fake_elevenlabs   FakeElevenLabs
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.mistral import FakeMistral


@pytest.fixture(scope="session")
def _fake_mistral_server() -> Iterator[FakeMistral]:
    server = FakeMistral()
    with server:
        yield server


@pytest.fixture(scope="session")
def _fake_elevenlabs_server() -> Iterator[FakeElevenLabs]:
    server = FakeElevenLabs()
    with server:
        yield server


@pytest.fixture
def fake_mistral(_fake_mistral_server: FakeMistral) -> FakeMistral:
    _fake_mistral_server.reset()
    return _fake_mistral_server


@pytest.fixture
def fake_elevenlabs(_fake_elevenlabs_server: FakeElevenLabs) -> FakeElevenLabs:
    _fake_elevenlabs_server.reset()
    return _fake_elevenlabs_server
