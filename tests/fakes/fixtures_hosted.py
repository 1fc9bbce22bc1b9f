"""Pytest fixtures for the hosted / self-hosted fakes (enabled from tests/conftest.py's pytest_plugins).

Each server starts once per session and is reset before every test that asks for it.

    fake_huggingface   FakeHuggingFace (base_url ends in /hf-inference)
    fake_vllm          FakeVLLM        (key-less unless api_keys is set)
    fake_fireworks     FakeFireworks
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.huggingface import FakeHuggingFace
from tests.fakes.vllm import FakeFireworks, FakeVLLM


@pytest.fixture(scope="session")
def _fake_huggingface_server() -> Iterator[FakeHuggingFace]:
    with FakeHuggingFace() as server:
        yield server


@pytest.fixture(scope="session")
def _fake_vllm_server() -> Iterator[FakeVLLM]:
    with FakeVLLM() as server:
        yield server


@pytest.fixture(scope="session")
def _fake_fireworks_server() -> Iterator[FakeFireworks]:
    with FakeFireworks() as server:
        yield server


@pytest.fixture
def fake_huggingface(_fake_huggingface_server: FakeHuggingFace) -> FakeHuggingFace:
    _fake_huggingface_server.reset()
    return _fake_huggingface_server


@pytest.fixture
def fake_vllm(_fake_vllm_server: FakeVLLM) -> FakeVLLM:
    _fake_vllm_server.reset()
    return _fake_vllm_server


@pytest.fixture
def fake_fireworks(_fake_fireworks_server: FakeFireworks) -> FakeFireworks:
    _fake_fireworks_server.reset()
    return _fake_fireworks_server
