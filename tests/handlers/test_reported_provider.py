"""A named custom provider (custom_provider_config) is reported by its configured name everywhere: results,
headers, errors and logs, through a real gateway that validates every answer against the served contract."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bifrost_stt.gateway.config.load import load_config
from tests.audio import wav_bytes
from tests.fakes.openai import OPENAI_KEY, TRANSCRIPT, FakeOpenAI

NAME = "office-whisper"


@pytest.fixture
def gateway(run_gateway: Callable[..., str], fake_openai: FakeOpenAI, tmp_path: Any) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": {NAME: {
        "keys": [{"name": "office-key", "value": OPENAI_KEY, "weight": 1.0, "models": ["*"]}],
        "network_config": {"base_url": fake_openai.url},
        "custom_provider_config": {"base_provider_type": "openai"},
    }}}))
    return run_gateway(load_config(path, {}))


def post(url: str, **fields: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=10) as c:
        return c.post("/v1/audio/transcriptions", data={"model": f"{NAME}/whisper-1", **fields},
                      files={"file": ("speech.wav", wav_bytes(), "audio/wav")})


def test_a_result_names_the_custom_provider(gateway: str, fake_openai: FakeOpenAI) -> None:
    r = post(gateway, response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == TRANSCRIPT and body["extra_fields"]["provider"] == NAME
    assert r.headers["x-bifrost-provider"] == NAME
    assert fake_openai.last.field("model") == "whisper-1"
    assert fake_openai.last.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_an_error_and_its_log_name_the_custom_provider(
    gateway: str, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_openai, "keys", {"sk-someone-else"})  # restored after the test: the fake is shared
    with caplog.at_level(logging.INFO, logger="bifrost_stt"):
        r = post(gateway)
    assert r.status_code == 401
    body = r.json()
    assert body["extra_fields"]["provider"] == NAME and "office-key" in body["error"]["message"]
    assert OPENAI_KEY not in r.text
    failed = [rec.getMessage() for rec in caplog.records if "failed" in rec.getMessage()]
    assert failed and all(NAME in m and "openai/" not in m for m in failed)
