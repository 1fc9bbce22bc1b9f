"""The gateway hands freed heap back to the OS once idle (bifrost_stt.server.memory), never during load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from bifrost_stt.server import memory
from tests.fakes import hostile
from tests.fakes.hostile import Conn, Hostile
from tests.support import config_with, provider
from tests.audio import wav_bytes


def test_trim_runs_once_the_gateway_is_idle_and_not_while_a_request_is_in_flight(
    run_gateway: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(time.monotonic()) or True)
    monkeypatch.setattr(memory, "IDLE_DELAY", 0.3)
    release = threading.Event()

    def slow(conn: Conn) -> None:
        release.wait(10)
        hostile.json_answer(b'{"text": "ok"}')(conn)

    with Hostile(slow) as up:
        url = run_gateway(config_with(provider("openai", up.url)))
        assert httpx.get(f"{url}/health").status_code == 200
        time.sleep(1.5)
        assert len(calls) == 1  # idle after /health: one trim
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(httpx.post(
            f"{url}/openai/v1/audio/transcriptions", data={"model": "whisper-1"},
            files={"file": ("a.wav", wav_bytes(0.1), "audio/wav")}, timeout=10).status_code))
        worker.start()
        time.sleep(0.3)
        assert httpx.get(f"{url}/health").status_code == 200  # ends while the transcription is in flight
        time.sleep(1.5)
        assert len(calls) == 1  # not idle: no trim
        release.set()
        worker.join(10)
        assert done == [200]
        time.sleep(1.5)
        assert len(calls) == 2


def test_trim_is_callable_here() -> None:
    assert memory.trim() in (True, False)
