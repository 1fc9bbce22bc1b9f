"""The governance room's pure parts: durations, the WAV meter, the price table, the config section, the
ticket's bookkeeping in the request record."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from bifrost_stt.gateway.config.load import from_document
from bifrost_stt.gateway.config.schema import ConfigError
from bifrost_stt.gateway.governance import decide, durations
from bifrost_stt.kernel.duration import audio_seconds, file_duration
from bifrost_stt.gateway.governance.pricing import PriceTable
from bifrost_stt.gateway.governance.service import Governance, Ticket
from bifrost_stt.kernel import record as records
from bifrost_stt.kernel.canonical import BytesAudio, TranscriptionResult, Usage
from bifrost_stt.kernel.governance import PriceConfig, VirtualKeyConfig, VKProviderConfig
from tests.audio import wav_bytes


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_windows_are_aligned_and_calendar_ones_follow_the_calendar() -> None:
    now = ts(2026, 12, 4, 20, 30, 15)
    assert durations.window("1h", now) == (ts(2026, 12, 4, 20), ts(2026, 12, 4, 21))
    assert durations.window("30s", now) == (ts(2026, 12, 4, 20, 30), ts(2026, 12, 4, 20, 30, 30))
    assert durations.window("1w", now) == (ts(2026, 11, 30), ts(2026, 12, 7))  # Monday to Monday
    assert durations.window("1M", now) == (ts(2026, 12, 1), ts(2027, 1, 1))
    assert durations.window("1Q", now) == (ts(2026, 10, 1), ts(2027, 1, 1))
    assert durations.window("1Y", now) == (ts(2026, 1, 1), ts(2027, 1, 1))
    for bad in ("", "0h", "1x", "h", "-1d", "1234567890s"):
        with pytest.raises(durations.DurationError):
            durations.parse(bad)


def test_wav_duration_from_the_header() -> None:
    assert file_duration(BytesAudio(wav_bytes(3.0, rate=8000))) == pytest.approx(3.0)
    assert file_duration(BytesAudio(wav_bytes(1.5, rate=16000))) == pytest.approx(1.5)
    assert file_duration(BytesAudio(b"ID3\x04" + bytes(100))) is None  # not audio PyAV can read
    assert file_duration(BytesAudio(b"RIFF\x00\x00")) is None


def test_audio_seconds_prefer_usage_then_duration_then_file() -> None:
    with_usage = TranscriptionResult(text="x", duration=9.0, usage=Usage(type="duration", seconds=4))
    assert audio_seconds(with_usage, file_seconds=3.0) == 4.0
    assert audio_seconds(TranscriptionResult(text="x", duration=9.0), file_seconds=3.0) == 9.0
    assert audio_seconds(TranscriptionResult(text="x"), file_seconds=3.0) == 3.0
    assert audio_seconds(TranscriptionResult(text="x"), file_seconds=None) is None


def test_prices_unknown_is_none_never_zero() -> None:
    table = PriceTable([PriceConfig(provider="azure", model="whisper", input_cost_per_audio_per_second=0.0002),
                        PriceConfig(provider="my-vllm", model="*", input_cost_per_audio_per_second=0.0)])
    assert table.cost("openai", "openai", ["whisper-1"], 60.0) == pytest.approx(0.006)
    assert table.cost("azure", "azure", ["whisper"], 10.0) == pytest.approx(0.002)
    assert table.cost("azure", "azure", ["other-deployment"], 10.0) is None
    assert table.cost("openai", "openai", ["whisper-1"], None) is None
    assert table.cost("my-vllm", "vllm", ["any"], 10.0) == 0.0  # free only when configured free
    tokens = Usage(type="tokens", audio_tokens=1000, output_tokens=100)
    assert table.cost("openai", "openai", ["gpt-4o-transcribe"], 5.0, tokens) == pytest.approx(0.006 + 0.001)


async def test_the_record_gets_the_cost_or_none() -> None:
    gov = Governance.__new__(Governance)
    gov.prices, gov.kind_of, gov._unpriced, gov.counters = PriceTable(), (lambda p: p), set(), None
    rec = records.RequestRecord(operation="createTranscription")
    with records.bind(rec):
        cost = await Ticket(gov, None, 3.0).settle(TranscriptionResult(text="x"), "openai", ("whisper-1",))
    assert cost == pytest.approx(0.0003) and rec.cost == cost and rec.audio_seconds == 3.0
    rec = records.RequestRecord(operation="createTranscription")
    with records.bind(rec):
        await Ticket(gov, None, 3.0).settle(TranscriptionResult(text="x"), "azure", ("whisper",))
    assert rec.cost is None and rec.audio_seconds == 3.0
    rec = records.RequestRecord(operation="createTranscription")
    with records.bind(rec):
        Ticket(gov, None, 3.0).settle_cache_hit()
    assert rec.cost == 0.0


def test_key_headers_and_rules() -> None:
    assert decide.key_from_headers({"x-bf-vk": "plain"}) == "plain"
    assert decide.key_from_headers({"authorization": "Bearer sk-bf-1"}) == "sk-bf-1"
    assert decide.key_from_headers({"authorization": "Bearer sk-openai"}) is None
    assert decide.key_from_headers({"x-goog-api-key": "sk-bf-2"}) == "sk-bf-2"
    vk = VirtualKeyConfig(id="a", name="a", provider_configs=(
        VKProviderConfig(provider="openai", allowed_models=("whisper-1",)), VKProviderConfig(provider="groq")))
    assert decide.blocked(vk, "openai", "whisper-1") is None
    assert decide.blocked(vk, "openai", "gpt-4o-transcribe") == "model_blocked"
    assert decide.blocked(vk, "azure", "x") == "provider_blocked"
    assert decide.allowed_fallbacks(vk, ("azure/x", "groq/y", "openai/z")) == ("groq/y",)


def load(governance: dict[str, Any], **top: Any) -> Any:
    return from_document({"governance": governance, **top}, {"VK": "sk-bf-from-env"}, frozenset({"openai"}))


def test_config_section_is_read_and_checked() -> None:
    cfg = load({
        "budgets": [{"id": "b", "max_limit": 1, "reset_duration": "1M"}],
        "rate_limits": [{"id": "r", "request_max_limit": 5, "request_reset_duration": "1m"}],
        "virtual_keys": [{"id": "k", "name": "n", "value": "env.VK", "budget_id": "b", "rate_limit_id": "r",
                          "provider_configs": [{"provider": "openai", "allowed_models": ["whisper-1"]}]}],
        "store": {"type": "redis", "config": {"addr": "10.0.0.1:6380", "password": "pw", "db": 2},
                  "on_unavailable": "fail_open"},
        "pricing": [{"provider": "azure", "model": "w", "input_cost_per_audio_per_second": 0.001}],
    }, client={"enforce_governance_header": True},
        config_store={"enabled": True, "type": "postgres",
                      "config": {"host": "db", "port": 5433, "user": "u", "password": "p@ss", "db_name": "g"}})
    gov = cfg.governance
    assert gov.enforce and gov.virtual_keys[0].value.reveal() == "sk-bf-from-env"
    assert gov.store.addr == "10.0.0.1:6380" and gov.store.on_unavailable == "fail_open"
    assert gov.config_store.url.reveal() == "postgresql+psycopg://u:p%40ss@db:5433/g"
    assert "sk-bf-from-env" not in repr(cfg) and "p@ss" not in repr(cfg)
    for bad, where in [
        ({"virtual_keys": [{"id": "k", "name": "n", "budget_id": "nope"}]}, "governance.virtual_keys[0].budget_id"),
        ({"budgets": [{"id": "b", "max_limit": 1, "reset_duration": "1x"}]}, "governance.budgets[0].reset_duration"),
        ({"rate_limits": [{"id": "r", "request_max_limit": 5}]}, "governance.rate_limits[0]"),
        ({"virtual_keys": [{"id": "k", "name": "n"}, {"id": "k", "name": "m"}]}, "governance.virtual_keys[1]"),
        ({"store": {"type": "memcached"}}, "governance.store.type"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(bad)
        assert info.value.path == where, info.value


def test_windows_move_on(monkeypatch: pytest.MonkeyPatch) -> None:
    start, end = durations.window("1m", time.time())
    assert end - start == 60 and start <= time.time() < end
