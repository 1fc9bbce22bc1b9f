"""Virtual keys, budgets and rate limits through real HTTP, in front of the fake upstreams.

Every refusal is checked as the client sees it (status, Bifrost envelope, code, Retry-After) and by what
reached the upstream (nothing, for a refusal before the call). The virtual key never reaches an upstream
nor a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from bifrost_stt.gateway.config.load import from_document
from bifrost_stt.kernel.settings import GatewayConfig
from bifrost_stt.providers import registry
from tests.audio import wav_bytes
from tests.fakes.openai import AZURE_KEY, GROQ_KEY, OPENAI_KEY
from tests.fakes.server import error_reply

VK = "sk-bf-test-team-a-5d1c0f"
VK_GROQ_ONLY = "sk-bf-test-groq-only-8e2a"
VK_OFF = "sk-bf-test-inactive-77aa"
PLAIN_VK = "team-b-plain-value"  # no sk-bf- prefix: only through x-bf-vk
UNIFIED = "/v1/audio/transcriptions"


def gateway_config(fakes: dict[str, Any], tmp: Path, *, governance: dict[str, Any] | None = None,
                   enforce: bool = True, **provider_extra: Any) -> GatewayConfig:
    """An upstream-shaped config file: providers at the fakes, governance as given, a private store."""
    openai, groq, azure = fakes["openai"], fakes["groq"], fakes["azure"]
    doc = {
        "client": {"enforce_auth_on_inference": enforce, "job_store_path": str(tmp / "jobs.sqlite3")},
        "providers": {
            "openai": {"keys": [{"name": "o", "value": OPENAI_KEY, "weight": 1}],
                       "network_config": {"base_url": openai.base_url}, **provider_extra},
            "groq": {"keys": [{"name": "g", "value": GROQ_KEY, "weight": 1}],
                     "network_config": {"base_url": groq.base_url}},
            "azure": {"keys": [{"name": "a", "value": AZURE_KEY, "weight": 1, "models": ["*"],
                                "azure_key_config": {"endpoint": azure.url}}]},
        },
        "config_store": {"enabled": True, "type": "sqlite", "config": {"path": str(tmp / "gov.sqlite3")}},
        "governance": governance if governance is not None else default_governance(),
    }
    return from_document(doc, {}, registry.known())


def default_governance() -> dict[str, Any]:
    return {
        "budgets": [{"id": "b-a", "max_limit": 10.0, "reset_duration": "1d"}],
        "rate_limits": [{"id": "rl-a", "request_max_limit": 100, "request_reset_duration": "1h"}],
        "virtual_keys": [
            {"id": "vk-a", "name": "team-a", "value": VK, "budget_id": "b-a", "rate_limit_id": "rl-a",
             "provider_configs": [{"provider": "openai", "allowed_models": ["whisper-1"]},
                                  {"provider": "groq"}, {"provider": "azure"}]},
            {"id": "vk-groq", "name": "groq-only", "value": VK_GROQ_ONLY,
             "provider_configs": [{"provider": "groq"}]},
            {"id": "vk-off", "name": "retired", "value": VK_OFF, "is_active": False},
            {"id": "vk-plain", "name": "team-b", "value": PLAIN_VK},
        ],
    }


@pytest.fixture
def fakes(fake_openai: Any, fake_groq: Any, fake_azure: Any) -> dict[str, Any]:
    return {"openai": fake_openai, "groq": fake_groq, "azure": fake_azure}


def post(url: str, model: str = "openai/whisper-1", *, headers: dict[str, str] | None = None,
         audio: bytes | None = None, path: str = UNIFIED, **data: Any) -> httpx.Response:
    files = {"file": ("speech.wav", audio if audio is not None else wav_bytes(), "audio/wav")}
    with httpx.Client(base_url=url, timeout=10) as client:
        return client.post(path, data={"model": model, **data}, files=files, headers=headers or {})


def refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["is_bifrost_error"] is True and body["status_code"] == status
    assert body["error"]["code"] == code, body
    return body  # type: ignore[no-any-return]


def all_upstream_traffic(fakes: dict[str, Any]) -> bytes:
    out = b""
    for fake in fakes.values():
        for req in fake.requests:
            out += req.path.encode() + b"\n" + b"".join(f"{k}: {v}\n".encode() for k, v in req.headers.items())
            out += req.body
    return out


# ------------------------------------------------------------------------------------------ statuses


def test_no_key_is_401_when_enforced(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path))
    refused(post(url), 401, "virtual_key_required")
    refused(post(url, headers={"authorization": "Bearer sk-some-provider-key"}), 401, "virtual_key_required")
    assert fakes["openai"].requests == []


def test_no_key_passes_when_not_enforced(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path, enforce=False))
    assert post(url).status_code == 200
    refused(post(url, headers={"x-bf-vk": "sk-bf-nobody"}), 403, "virtual_key_not_found")


def test_unknown_and_inactive_keys_are_403(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path))
    refused(post(url, headers={"x-bf-vk": "sk-bf-nobody"}), 403, "virtual_key_not_found")
    refused(post(url, headers={"authorization": "Bearer sk-bf-nobody"}), 403, "virtual_key_not_found")
    refused(post(url, headers={"x-bf-vk": VK_OFF}), 403, "virtual_key_blocked")
    assert fakes["openai"].requests == []


def test_provider_and_model_rules_are_403(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path))
    body = refused(post(url, headers={"x-bf-vk": VK_GROQ_ONLY}), 403, "provider_blocked")
    assert "groq-only" in body["error"]["message"] and VK_GROQ_ONLY not in body["error"]["message"]
    refused(post(url, "openai/gpt-4o-transcribe", headers={"x-bf-vk": VK}), 403, "model_blocked")
    assert fakes["openai"].requests == []
    assert post(url, "groq/whisper-large-v3", headers={"x-bf-vk": VK_GROQ_ONLY}).status_code == 200


@pytest.mark.parametrize("how", ["x-bf-vk", "bearer", "x-api-key", "plain-x-bf-vk"])
def test_every_key_header_works_and_the_key_never_reaches_upstream(
    run_gateway: Any, fakes: dict[str, Any], tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = run_gateway(gateway_config(fakes, tmp_path))
    headers = {"x-bf-vk": {"x-bf-vk": VK, "plain-x-bf-vk": PLAIN_VK}.get(how, "")} if "x-bf-vk" in how else \
        {"authorization": f"Bearer {VK}"} if how == "bearer" else {"x-api-key": VK}
    r = post(url, headers=headers)
    assert r.status_code == 200, r.text
    last = fakes["openai"].last
    assert last.headers["authorization"] == f"Bearer {OPENAI_KEY}"  # the configured key, not the client's
    traffic = all_upstream_traffic(fakes)
    assert VK.encode() not in traffic and PLAIN_VK.encode() not in traffic
    assert VK not in caplog.text and PLAIN_VK not in caplog.text


def test_a_plain_value_counts_only_in_x_bf_vk(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path))
    refused(post(url, headers={"x-api-key": PLAIN_VK}), 401, "virtual_key_required")
    refused(post(url, headers={"authorization": f"Bearer {PLAIN_VK}"}), 401, "virtual_key_required")


def test_azure_route_takes_the_key_in_api_key(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path))
    path = "/openai/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21"
    r = post(url, "whisper", path=path, headers={"api-key": VK})
    assert r.status_code == 200, r.text
    assert fakes["azure"].last.headers["api-key"] == AZURE_KEY
    refused(post(url, "whisper", path=path, headers={"api-key": VK_GROQ_ONLY}), 403, "provider_blocked")


def test_a_virtual_key_bearer_is_never_used_as_a_direct_provider_key(
    run_gateway: Any, fakes: dict[str, Any], tmp_path: Path
) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path, allow_direct_keys=True))
    assert post(url, headers={"authorization": f"Bearer {VK}"}).status_code == 200
    assert fakes["openai"].last.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_fallbacks_only_go_where_the_key_allows(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path))
    fakes["openai"].enqueue(error_reply(500, "boom", "server_error"), error_reply(500, "boom", "server_error"))
    # gpt-4o-transcribe is not allowed for this key: that fallback is dropped, groq's is kept
    r = post(url, headers={"x-bf-vk": VK}, fallbacks=["openai/gpt-4o-transcribe", "groq/whisper-large-v3"])
    assert r.status_code == 200, r.text
    assert r.headers["x-bifrost-provider"] == "groq"
    assert [q.field("model") for q in fakes["openai"].requests] == ["whisper-1"]
    # a key limited to groq cannot fall back to openai
    fakes["groq"].enqueue(error_reply(500, "boom", "server_error"))
    r = post(url, "groq/whisper-large-v3", headers={"x-bf-vk": VK_GROQ_ONLY}, fallbacks=["openai/whisper-1"])
    assert r.status_code == 500
    assert len(fakes["openai"].requests) == 1  # only the earlier call


# --------------------------------------------------------------------------------- limits and money


def limited(**rate_limit: Any) -> dict[str, Any]:
    gov = default_governance()
    gov["rate_limits"] = [{"id": "rl-a", **rate_limit}]
    return gov


def test_request_rate_limit_is_429_with_retry_after(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path, governance=limited(
        request_max_limit=2, request_reset_duration="1h")))
    assert [post(url, headers={"x-bf-vk": VK}).status_code for _ in range(2)] == [200, 200]
    r = post(url, headers={"x-bf-vk": VK})
    body = refused(r, 429, "rate_limited")
    assert body["error"]["message"] == \
        "rate limit violated for team-a: [request limit exceeded (2/2, resets every 1h)]"
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert len(fakes["openai"].requests) == 2


def test_budget_is_charged_by_audio_seconds_for_text_and_then_402(
    run_gateway: Any, fakes: dict[str, Any], tmp_path: Path
) -> None:
    """response_format=text: the upstream reports no duration; the file's 3 s are metered and priced
    (whisper-1: $0.006/min = $0.0003 for 3 s), so the second request finds the budget spent."""
    gov = default_governance()
    gov["budgets"] = [{"id": "b-a", "max_limit": 0.0002, "reset_duration": "1d"}]
    url = run_gateway(gateway_config(fakes, tmp_path, governance=gov))
    audio = wav_bytes(3.0, rate=8000)
    r = post(url, headers={"x-bf-vk": VK}, audio=audio, response_format="text")
    assert r.status_code == 200, r.text
    r = post(url, headers={"x-bf-vk": VK}, audio=audio, response_format="text")
    body = refused(r, 402, "budget_exceeded")
    assert body["error"]["message"] == "team-a budget exceeded: 0.0003 >= 0.0002 dollars"
    assert len(fakes["openai"].requests) == 1  # a key over budget never reaches the provider


def test_unknown_price_charges_nothing_but_is_not_free(run_gateway: Any, fakes: dict[str, Any],
                                                       tmp_path: Path) -> None:
    gov = default_governance()
    gov["budgets"] = [{"id": "b-a", "max_limit": 0.0000001, "reset_duration": "1d"}]
    url = run_gateway(gateway_config(fakes, tmp_path, governance=gov))
    path = "/openai/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21"
    for _ in range(2):  # an Azure deployment has no default price: unknown cost, nothing charged
        assert post(url, "whisper", path=path, headers={"api-key": VK}).status_code == 200


def test_audio_seconds_limit(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    url = run_gateway(gateway_config(fakes, tmp_path, governance=limited(
        audio_seconds_max_limit=2.5, audio_seconds_reset_duration="1h")))
    audio = wav_bytes(3.0)
    assert post(url, headers={"x-bf-vk": VK}, audio=audio, response_format="text").status_code == 200
    r = post(url, headers={"x-bf-vk": VK}, audio=audio)
    body = refused(r, 429, "rate_limited")
    assert body["error"]["message"] == \
        "rate limit violated for team-a: [audio seconds limit exceeded (3.0/2.5, resets every 1h)]"
    assert "retry-after" in r.headers


def test_redis_unreachable_fail_closed_and_fail_open(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path,
                                                     refused_url: str) -> None:
    addr = refused_url.removeprefix("http://")
    gov = limited(request_max_limit=5, request_reset_duration="1m")
    gov["store"] = {"type": "redis", "config": {"addr": addr, "timeout_seconds": 0.2}}
    url = run_gateway(gateway_config(fakes, tmp_path, governance=gov))
    r = post(url, headers={"x-bf-vk": VK})
    refused(r, 503, "governance_unavailable")
    assert fakes["openai"].requests == []
    gov["store"]["on_unavailable"] = "fail_open"
    (tmp_path / "open").mkdir()
    url = run_gateway(gateway_config(fakes, tmp_path / "open", governance=gov))
    assert post(url, headers={"x-bf-vk": VK}).status_code == 200


def test_a_stream_is_charged_when_it_ends(run_gateway: Any, fakes: dict[str, Any], tmp_path: Path) -> None:
    gov = default_governance()
    gov["budgets"].append({"id": "b-tiny", "max_limit": 0.00001, "reset_duration": "1d"})
    gov["virtual_keys"][3]["budget_id"] = "b-tiny"
    url = run_gateway(gateway_config(fakes, tmp_path, governance=gov))
    r = post(url, "openai/gpt-4o-mini-transcribe", headers={"x-bf-vk": PLAIN_VK}, stream="true")
    assert r.status_code == 200 and "transcript.text.done" in r.text
    # 27 audio tokens at $3/M and 11 text tokens at $5/M, from the final event's usage
    body = refused(post(url, "openai/gpt-4o-mini-transcribe", headers={"x-bf-vk": PLAIN_VK}), 402, "budget_exceeded")
    assert body["error"]["message"] == "team-b budget exceeded: 0.0001 >= 0.0000 dollars"
