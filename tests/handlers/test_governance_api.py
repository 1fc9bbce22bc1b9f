"""The governance operations through real HTTP: a key created over the API works at once on inference,
its value is shown once, changes and deletion take effect, quota/budgets/rate-limits show real usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.handlers.test_governance import VK, default_governance, gateway_config, post, refused

API = "/api/governance"


def test_create_use_update_delete_a_key(run_gateway: Any, fake_openai: Any, fake_groq: Any, fake_azure: Any,
                                        tmp_path: Path) -> None:
    fakes = {"openai": fake_openai, "groq": fake_groq, "azure": fake_azure}
    url = run_gateway(gateway_config(fakes, tmp_path))
    with httpx.Client(base_url=url, timeout=10) as api:
        r = api.post(f"{API}/virtual-keys", json={
            "name": "mobile-app",
            "provider_configs": [{"provider": "groq", "allowed_models": ["whisper-large-v3"]}],
            "budget": {"max_limit": 5, "reset_duration": "1M"},
            "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h",
                           "audio_seconds_max_limit": 600, "audio_seconds_reset_duration": "1d"},
        })
        assert r.status_code == 200, r.text
        created = r.json()["virtual_key"]
        value, vk_id = created["value"], created["id"]
        assert value.startswith("sk-bf-") and len(value) > 20
        assert created["budget"]["max_limit"] == 5 and created["rate_limit"]["request_max_limit"] == 1

        # shown once: list and get mask it
        listed = api.get(f"{API}/virtual-keys").json()
        assert listed["count"] == 5 and value not in str(listed)
        got = api.get(f"{API}/virtual-keys/{vk_id}").json()["virtual_key"]
        assert got["name"] == "mobile-app" and got["value"] != value and got["value"].endswith(value[-4:])

        # works at once, with its rules
        assert post(url, "groq/whisper-large-v3", headers={"x-bf-vk": value}).status_code == 200
        refused(post(url, "openai/whisper-1", headers={"x-bf-vk": value}), 403, "provider_blocked")
        refused(post(url, "groq/whisper-large-v3", headers={"x-bf-vk": value}), 429, "rate_limited")

        quota = api.get(f"{API}/virtual-keys/quota", headers={"authorization": f"Bearer {value}"}).json()
        assert quota["virtual_key_name"] == "mobile-app" and quota["is_active"] is True
        assert quota["rate_limit"]["request_current_usage"] == 1
        assert abs(quota["budgets"][0]["current_usage"] - 0.2 * 0.111 / 3600) < 1e-12  # 0.2 s at $0.111/h
        r = api.get(f"{API}/virtual-keys/quota")
        refused(r, 401, "virtual_key_required")

        # deactivate, then delete
        r = api.put(f"{API}/virtual-keys/{vk_id}", json={"is_active": False, "name": "mobile-app-old"})
        assert r.status_code == 200 and r.json()["virtual_key"]["is_active"] is False
        refused(post(url, "groq/whisper-large-v3", headers={"x-bf-vk": value}), 403, "virtual_key_blocked")
        assert api.delete(f"{API}/virtual-keys/{vk_id}").json() == {"message": "virtual key deleted"}
        refused(post(url, "groq/whisper-large-v3", headers={"x-bf-vk": value}), 403, "virtual_key_not_found")
        refused(api.get(f"{API}/virtual-keys/{vk_id}"), 404, "virtual_key_not_found")
        refused(api.delete(f"{API}/virtual-keys/{vk_id}"), 404, "virtual_key_not_found")


def test_budgets_and_rate_limits_show_current_usage(run_gateway: Any, fake_openai: Any, fake_groq: Any,
                                                    fake_azure: Any, tmp_path: Path) -> None:
    from tests.audio import wav_bytes

    fakes = {"openai": fake_openai, "groq": fake_groq, "azure": fake_azure}
    url = run_gateway(gateway_config(fakes, tmp_path, governance=default_governance()))
    assert post(url, headers={"x-bf-vk": VK}, audio=wav_bytes(6.0), response_format="text").status_code == 200
    with httpx.Client(base_url=url, timeout=10) as api:
        budgets = api.get(f"{API}/budgets").json()
        assert budgets["count"] == 1
        assert abs(budgets["budgets"][0]["current_usage"] - 0.0006) < 1e-9  # 6 s of whisper-1
        limits = api.get(f"{API}/rate-limits").json()["rate_limits"]
        assert limits[0]["request_current_usage"] == 1 and limits[0]["request_max_limit"] == 100
        bad = api.post(f"{API}/virtual-keys", json={"name": "x", "budget": {"max_limit": 1, "reset_duration": "1x"}})
        assert bad.status_code == 400


def test_a_cache_hit_counts_for_the_rate_limit_but_costs_nothing(
    run_gateway: Any, fake_openai: Any, fake_groq: Any, fake_azure: Any, tmp_path: Path
) -> None:
    from tests.audio import wav_bytes

    fakes = {"openai": fake_openai, "groq": fake_groq, "azure": fake_azure}
    url = run_gateway(gateway_config(fakes, tmp_path, governance=default_governance()))
    audio, headers = wav_bytes(3.0), {"x-bf-vk": VK, "x-bf-cache-key": f"gov-{tmp_path.name}"}
    first = post(url, headers=headers, audio=audio, response_format="text")
    second = post(url, headers=headers, audio=audio, response_format="text")
    assert first.status_code == second.status_code == 200, second.text
    assert len(fake_openai.requests) == 1  # the second was served from the cache
    with httpx.Client(base_url=url, timeout=10) as api:
        budget = api.get(f"{API}/budgets").json()["budgets"][0]
        limit = api.get(f"{API}/rate-limits").json()["rate_limits"][0]
    assert abs(budget["current_usage"] - 0.0003) < 1e-9  # 3 s of whisper-1, once
    assert limit["request_current_usage"] == 2
