"""Pytest fixtures for the Gemini and Deepgram fakes; enabled from ``tests/conftest.py``'s pytest_plugins.

Each server starts once per test session and is reset before every test that asks for it.

    fake_gemini     FakeGemini    (url, provider_config(), key(), requests, enqueue ...)
    fake_deepgram   FakeDeepgram
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.gemini import FakeGemini


@pytest.fixture(scope="session")
def _fake_gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture(scope="session")
def _fake_deepgram_server() -> Iterator[FakeDeepgram]:
    with FakeDeepgram() as server:
        yield server


@pytest.fixture
def fake_gemini(_fake_gemini_server: FakeGemini) -> FakeGemini:
    _fake_gemini_server.reset()
    return _fake_gemini_server


@pytest.fixture
def fake_deepgram(_fake_deepgram_server: FakeDeepgram) -> FakeDeepgram:
    _fake_deepgram_server.reset()
    return _fake_deepgram_server
