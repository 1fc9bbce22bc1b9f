"""The routing policy in isolation: a scripted provider object, injected rng and sleep, no network.

Each test asserts what the caller got and which calls (key, model, retry) reached the provider.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from bifrost_stt.kernel.canonical import BytesAudio, StreamDelta, StreamDone, StreamEvent, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.errors import ClientError, Overloaded, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from bifrost_stt.gateway.routing.admission import ProviderSlot
from bifrost_stt.gateway.routing.router import Router, backoff_delay
from bifrost_stt.gateway.routing.streams import HeldStream
from bifrost_stt.kernel.errors import scrub
from bifrost_stt.kernel.settings import ConcurrencyConfig, KeyConfig, NetworkConfig, ProviderConfig, Secret
from bifrost_stt.kernel.capabilities import Attempt, Capabilities

CAPS = Capabilities(native_formats=frozenset({"json", "text", "verbose_json"}), native_stream=True,
                    word_timestamps=True, segment_timestamps=True)
OK = TranscriptionResult(text="hello")


@dataclass
class Call:
    key: str | None
    value: str | None
    model: str
    retry: int
    fallback_index: int
    audio: bytes


@dataclass
class ScriptedProvider:
    """Answers each call with the next scripted outcome (an exception is raised; "ok" succeeds)."""

    script: list[Any] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    capabilities: Capabilities = CAPS
    gate: asyncio.Event | None = None  # when set, calls wait for it (to hold slots open)

    async def _record(self, request: TranscriptionRequest, attempt: Attempt) -> Any:
        key = attempt.key
        self.calls.append(Call(key.name if key else None, key.value.reveal() if key else None, attempt.model,
                               attempt.retry, attempt.fallback_index, await request.audio.read()))
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.script.pop(0) if self.script else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        await self._record(request, attempt)
        return OK

    def streams(self, model: str) -> bool:
        return True

    async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamEvent]:
        await self._record(request, attempt)
        self.stream_closed = False
        try:
            yield StreamDelta("hel")
            yield StreamDelta("lo")
            yield StreamDone("hello")
        finally:
            self.stream_closed = True


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hook: Any = None

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.hook is not None:
            self.hook()


def key(name: str, *, weight: float = 1.0, models: Sequence[str] = ("*",), enabled: bool = True,
        aliases: dict[str, str] | None = None) -> KeyConfig:
    return KeyConfig(name=name, value=Secret(f"sk-{name}-secret-value"), weight=weight, models=tuple(models),
                     enabled=enabled, aliases=aliases or {})


def config(pid: str = "openai", *, keys: Sequence[KeyConfig] = (), max_retries: int = 0, initial: int = 500,
           maximum: int = 5000, concurrency: int = 10, buffer: int = 10, direct: bool = False) -> ProviderConfig:
    return ProviderConfig(
        id=pid, kind=pid, keys=tuple(keys) or (key(f"{pid}-k"),), allow_direct_keys=direct,
        network=NetworkConfig(max_retries=max_retries, retry_backoff_initial=initial, retry_backoff_max=maximum),
        concurrency=ConcurrencyConfig(concurrency=concurrency, buffer_size=buffer),
    )


def router(*providers: tuple[ProviderConfig, ScriptedProvider], drop: bool = False, seed: int = 7,
           sleeps: Sleeps | None = None) -> Router:
    slots = {cfg.id: ProviderSlot(cfg, impl, drop_excess=drop) for cfg, impl in providers}
    return Router(slots, rng=random.Random(seed), sleep=sleeps or Sleeps())


def request(model: str = "whisper-1", provider: str = "openai", **kw: Any) -> TranscriptionRequest:
    return TranscriptionRequest(provider=provider, model=model, audio=BytesAudio(b"RIFF-audio-bytes"), **kw)


def upstream(status: int, message: str = "boom", **kw: Any) -> UpstreamError:
    return UpstreamError(message, status=status, **kw)


# ------------------------------------------------------------------------------------------ backoff


@pytest.mark.parametrize("retry,base_ms", [(1, 500), (2, 1000), (3, 2000), (4, 4000), (5, 5000), (9, 5000)])
def test_backoff_doubles_up_to_the_max_with_20_percent_jitter(retry: int, base_ms: int) -> None:
    rng = random.Random(1)
    delays = [backoff_delay(retry, 500, 5000, rng) for _ in range(500)]
    assert min(delays) >= base_ms * 0.8 / 1000 and max(delays) <= base_ms * 1.2 / 1000
    assert max(delays) - min(delays) > base_ms * 0.3 / 1000  # jitter really spreads


async def test_retries_until_success_with_bounded_backoff() -> None:
    impl = ScriptedProvider([upstream(500), upstream(503), upstream(502)])
    sleeps = Sleeps()
    r = router((config(max_retries=3, initial=20, maximum=100), impl), sleeps=sleeps)
    result, served = await r.transcribe(request())
    assert result.text == "hello" and served.fallback_index == 0
    assert [c.retry for c in impl.calls] == [0, 1, 2, 3]
    for delay, base in zip(sleeps.delays, (0.02, 0.04, 0.08), strict=True):
        assert base * 0.8 <= delay <= base * 1.2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_client_side_statuses_are_not_retried(status: int) -> None:
    impl = ScriptedProvider([upstream(status, "no")])
    sleeps = Sleeps()
    r = router((config(max_retries=3), impl), sleeps=sleeps)
    with pytest.raises(UpstreamError) as info:
        await r.transcribe(request())
    assert info.value.status == status
    assert len(impl.calls) == 1 and sleeps.delays == []


@pytest.mark.parametrize("err", [upstream(429), upstream(500), upstream(502), upstream(503), upstream(504),
                                 UpstreamUnavailable("could not reach openai (reset)"),
                                 UpstreamTimeout("openai did not answer"),
                                 upstream(400, "Rate limit reached for requests")])
async def test_retryable_failures_are_retried(err: UpstreamError) -> None:
    impl = ScriptedProvider([err])
    r = router((config(max_retries=1, initial=1, maximum=1), impl))
    assert (await r.transcribe(request()))[0].text == "hello"
    assert len(impl.calls) == 2


async def test_max_retries_caps_the_calls_and_the_last_error_is_returned() -> None:
    impl = ScriptedProvider([upstream(503, "one"), upstream(503, "two"), upstream(503, "three")])
    r = router((config(max_retries=2, initial=1, maximum=1), impl))
    with pytest.raises(UpstreamError) as info:
        await r.transcribe(request())
    assert len(impl.calls) == 3 and info.value.message == "three"
    assert [a["message"] for a in info.value.extra["attempts"]] == ["one", "two", "three"]


async def test_default_is_no_retry() -> None:
    impl = ScriptedProvider([upstream(503)])
    with pytest.raises(UpstreamError):
        await router((config(), impl)).transcribe(request())
    assert len(impl.calls) == 1


@pytest.mark.parametrize("retry_after,expected", [("0.05", 0.05), ("30", 0.1), ("0", None), ("soon", None)])
async def test_retry_after_is_honoured_up_to_the_max(retry_after: str, expected: float | None) -> None:
    impl = ScriptedProvider([upstream(429, headers={"retry-after": retry_after})])
    sleeps = Sleeps()
    r = router((config(max_retries=1, initial=20, maximum=100), impl), sleeps=sleeps)
    await r.transcribe(request())
    (delay,) = sleeps.delays
    if expected is None:  # our own backoff applies
        assert 0.016 <= delay <= 0.024
    else:
        assert delay == pytest.approx(expected)


async def test_the_slot_is_not_held_through_the_backoff_sleep() -> None:
    impl = ScriptedProvider([upstream(503)])
    sleeps = Sleeps()
    r = router((config(max_retries=1, concurrency=1, buffer=1), impl), drop=True, sleeps=sleeps)
    seen: list[bool] = []
    sleeps.hook = lambda: seen.append(r.slots["openai"]._slots.locked())
    await r.transcribe(request())
    assert seen == [False]


# --------------------------------------------------------------------------------------------- keys


async def test_rate_limit_rotates_through_keys_not_yet_limited() -> None:
    keys = [key("a"), key("b"), key("c")]
    impl = ScriptedProvider([upstream(429), upstream(429)])
    r = router((config(keys=keys, max_retries=2, initial=1, maximum=1), impl))
    await r.transcribe(request())
    names = [c.key for c in impl.calls]
    assert len(names) == 3 and len(set(names)) == 3, names


async def test_rate_limit_with_one_key_retries_that_key() -> None:
    impl = ScriptedProvider([upstream(429)])
    await router((config(keys=[key("only")], max_retries=1, initial=1, maximum=1), impl)).transcribe(request())
    assert [c.key for c in impl.calls] == ["only", "only"]


@pytest.mark.parametrize("seed", range(5))
async def test_network_errors_and_5xx_retry_the_same_key(seed: int) -> None:
    impl = ScriptedProvider([UpstreamUnavailable("reset"), upstream(500), UpstreamTimeout("slow")])
    r = router((config(keys=[key("a"), key("b"), key("c")], max_retries=3, initial=1, maximum=1), impl), seed=seed)
    await r.transcribe(request())
    assert len({c.key for c in impl.calls}) == 1 and len(impl.calls) == 4


async def test_weighted_choice_follows_weights() -> None:
    impl = ScriptedProvider()
    r = router((config(keys=[key("heavy", weight=9), key("light", weight=1)]), impl))
    for _ in range(1000):
        await r.transcribe(request())
    share = sum(c.key == "heavy" for c in impl.calls) / 1000
    assert 0.86 <= share <= 0.94


async def test_models_allow_list_enabled_and_aliases() -> None:
    keys = [key("disabled", enabled=False), key("whisper-only", models=["whisper-1"], aliases={"whisper-1": "dep-w"}),
            key("gpt", models=["gpt-4o-transcribe"])]
    impl = ScriptedProvider()
    r = router((config(keys=keys), impl))
    for _ in range(20):
        await r.transcribe(request("whisper-1"))
    _, served = await r.transcribe(request("gpt-4o-transcribe"))
    assert {(c.key, c.model) for c in impl.calls[:20]} == {("whisper-only", "dep-w")}
    assert (impl.calls[-1].key, impl.calls[-1].model) == ("gpt", "gpt-4o-transcribe")
    assert served.deployment == "gpt-4o-transcribe"


async def test_model_no_key_allows_is_400_and_all_keys_disabled_is_503() -> None:
    impl = ScriptedProvider()
    r = router((config(keys=[key("w", models=["whisper-1"]), key("off", enabled=False)]), impl))
    with pytest.raises(ClientError) as info:
        await r.transcribe(request("gpt-4o-transcribe"))
    assert info.value.status == 400 and info.value.code == "model_not_allowed"
    assert "gpt-4o-transcribe" in info.value.message and "models" in info.value.message

    r = router((config(keys=[key("off", enabled=False)]), impl))
    with pytest.raises(Overloaded) as info2:
        await r.transcribe(request())
    assert info2.value.status == 503 and info2.value.code == "no_enabled_key"
    assert impl.calls == []


async def test_direct_key_replaces_configured_keys_only_when_allowed_and_only_for_its_provider() -> None:
    openai, groq = ScriptedProvider([upstream(500)]), ScriptedProvider()
    r = router((config(direct=True, keys=[key("conf", aliases={"whisper-1": "dep"})]), openai),
               (config("groq", direct=True), groq))
    req = request(direct_key=Secret("sk-client-own-key"), fallbacks=("groq/whisper-large-v3",))
    await r.transcribe(req)
    assert (openai.calls[0].key, openai.calls[0].value, openai.calls[0].model) == ("client-supplied", "sk-client-own-key", "dep")
    assert groq.calls[0].value == "sk-groq-k-secret-value"  # never the client's key at another vendor

    plain = ScriptedProvider()
    await router((config(), plain)).transcribe(request(direct_key=Secret("sk-client-own-key")))
    assert plain.calls[0].value == "sk-openai-k-secret-value"


async def test_auth_failure_names_the_key_and_hides_every_trace_of_its_value() -> None:
    secret = "sk-prod-4f9a2c71e0b3"
    impl = ScriptedProvider([upstream(401, f"Incorrect API key provided: sk-pro************e0b3. Also {secret}.")])
    r = router((config(keys=[KeyConfig(name="prod", value=Secret(secret))], max_retries=2), impl))
    with pytest.raises(UpstreamError) as info:
        await r.transcribe(request())
    message = info.value.message
    assert "(key 'prod')" in message
    assert "e0b3" not in message and secret not in message and "sk-pro" not in message
    assert message.startswith("Incorrect API key provided: **********")
    assert len(impl.calls) == 1


def test_scrub_leaves_ordinary_text_alone() -> None:
    assert scrub("model `whisper-1` not found, try again later.", ["sk-secret"]) == \
        "model `whisper-1` not found, try again later."
    assert scrub("key sk-...wxyz is bad", []) == "key ********** is bad"


# ---------------------------------------------------------------------------------------- fallbacks


async def test_fallback_uses_its_own_provider_and_model() -> None:
    openai, groq = ScriptedProvider([upstream(503)]), ScriptedProvider()
    r = router((config(), openai), (config("groq"), groq))
    result, served = await r.transcribe(request(fallbacks=("groq/whisper-large-v3",)))
    assert result.text == "hello"
    assert (served.provider, served.model, served.deployment, served.fallback_index) == \
        ("groq", "whisper-large-v3", "whisper-large-v3", 1)
    assert [(c.model, c.fallback_index) for c in groq.calls] == [("whisper-large-v3", 1)]
    assert openai.calls[0].audio == groq.calls[0].audio == b"RIFF-audio-bytes"


async def test_any_primary_failure_falls_back_even_a_400() -> None:
    openai, groq = ScriptedProvider([upstream(400, "bad")]), ScriptedProvider()
    _, served = await router((config(), openai), (config("groq"), groq)).transcribe(
        request(fallbacks=("groq/whisper-large-v3",)))
    assert served.provider == "groq"


async def test_all_failing_returns_the_primary_error_listing_every_attempt() -> None:
    openai = ScriptedProvider([upstream(429, "slow down"), upstream(429, "slow down again")])
    groq = ScriptedProvider([upstream(500, "groq broke")])
    r = router((config(max_retries=1, initial=1, maximum=1), openai), (config("groq"), groq))
    with pytest.raises(UpstreamError) as info:
        await r.transcribe(request(fallbacks=("mistral/voxtral", "groq/whisper-large-v3")))
    err = info.value
    assert (err.status, err.message, err.provider, err.model) == (429, "slow down again", "openai", "whisper-1")
    assert err.extra["attempts"] == [
        {"provider": "openai", "model": "whisper-1", "status": 429, "message": "slow down"},
        {"provider": "openai", "model": "whisper-1", "status": 429, "message": "slow down again"},
        {"provider": "mistral", "model": "voxtral", "status": 0,
         "message": "skipped: provider 'mistral' is not configured"},
        {"provider": "groq", "model": "whisper-large-v3", "status": 500, "message": "groq broke"},
    ]


async def test_a_single_failed_attempt_without_fallbacks_lists_nothing() -> None:
    impl = ScriptedProvider([upstream(500)])
    with pytest.raises(UpstreamError) as info:
        await router((config(), impl)).transcribe(request())
    assert "attempts" not in info.value.extra


async def test_overloaded_primary_falls_back_and_is_listed() -> None:
    openai, groq = ScriptedProvider(gate=asyncio.Event()), ScriptedProvider()
    r = router((config(concurrency=1, buffer=1), openai), (config("groq"), groq), drop=True)
    holder = asyncio.create_task(r.transcribe(request()))
    await asyncio.sleep(0)
    _, served = await r.transcribe(request(fallbacks=("groq/whisper-large-v3",)))
    assert served.provider == "groq" and len(openai.calls) == 1
    openai.gate.set()  # type: ignore[union-attr]
    await holder


async def test_cancellation_never_falls_back_and_frees_the_slot() -> None:
    openai, groq = ScriptedProvider(gate=asyncio.Event()), ScriptedProvider()
    r = router((config(concurrency=1), openai), (config("groq"), groq))
    task = asyncio.create_task(r.transcribe(request(fallbacks=("groq/whisper-large-v3",))))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert groq.calls == [] and not r.slots["openai"]._slots.locked()


# ---------------------------------------------------------------------------------------- admission


async def test_buffer_full_is_503_at_once_and_waiters_get_in_later() -> None:
    impl = ScriptedProvider(gate=asyncio.Event())
    r = router((config(concurrency=1, buffer=1), impl))
    first = asyncio.create_task(r.transcribe(request()))
    second = asyncio.create_task(r.transcribe(request()))
    await asyncio.sleep(0.01)
    assert len(impl.calls) == 1 and r.slots["openai"].waiting == 1
    with pytest.raises(Overloaded) as info:
        await r.transcribe(request())
    assert info.value.status == 503 and "queue is full" in info.value.message
    impl.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, second)
    assert len(impl.calls) == 2


async def test_drop_excess_refuses_when_no_slot_is_free_without_waiting() -> None:
    impl = ScriptedProvider(gate=asyncio.Event())
    r = router((config(concurrency=1, buffer=100), impl), drop=True)
    first = asyncio.create_task(r.transcribe(request()))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as info:
        await asyncio.wait_for(r.transcribe(request()), 1)  # refused, not queued
    assert "drop_excess_requests" in info.value.message and r.slots["openai"].waiting == 0
    impl.gate.set()  # type: ignore[union-attr]
    await first
    await r.transcribe(request())  # the slot came back


async def test_a_stream_holds_its_slot_until_it_ends() -> None:
    impl = ScriptedProvider()
    r = router((config(concurrency=1, buffer=1), impl), drop=True)
    events, served = await r.stream(request("gpt-4o-transcribe", stream=True))
    assert isinstance(events, HeldStream) and served.model == "gpt-4o-transcribe"
    with pytest.raises(Overloaded):
        await r.transcribe(request())
    assert [e async for e in events] == [StreamDelta("hel"), StreamDelta("lo"), StreamDone("hello")]
    await r.transcribe(request())


async def test_closing_a_stream_early_closes_upstream_and_frees_the_slot() -> None:
    impl = ScriptedProvider()
    r = router((config(concurrency=1), impl), drop=True)
    events, _ = await r.stream(request("gpt-4o-transcribe", stream=True))
    assert await events.__anext__() == StreamDelta("hel")
    assert await events.__anext__() == StreamDelta("lo")
    await events.aclose()  # type: ignore[attr-defined]
    assert impl.stream_closed is True
    await r.transcribe(request())


async def test_stream_errors_before_the_first_event_retry_and_fall_back() -> None:
    openai, groq = ScriptedProvider([upstream(503), upstream(503)]), ScriptedProvider()
    r = router((config(max_retries=1, initial=1, maximum=1), openai), (config("groq"), groq))
    events, served = await r.stream(request("gpt-4o-transcribe", stream=True, fallbacks=("groq/whisper-large-v3",)))
    assert [e async for e in events][-1] == StreamDone("hello")
    assert served.fallback_index == 1 and len(openai.calls) == 2
    assert not r.slots["openai"]._slots.locked() and not r.slots["groq"]._slots.locked()


async def test_a_bug_in_a_provider_is_not_swallowed_and_frees_the_slot() -> None:
    impl = ScriptedProvider([RuntimeError("oops")])
    r = router((config(concurrency=1), impl))
    with pytest.raises(RuntimeError):
        await r.transcribe(request())
    assert not r.slots["openai"]._slots.locked()


@pytest.mark.parametrize("exc", [KeyError("start"), ValueError("could not convert"), TypeError("None")])
async def test_an_answer_the_provider_cannot_read_is_a_502_that_falls_back(exc: Exception) -> None:
    broken, good = ScriptedProvider([exc]), ScriptedProvider()
    r = router((config("openai", concurrency=1), broken), (config("groq"), good))
    with pytest.raises(UpstreamUnavailable) as info:
        await r.transcribe(request())
    assert info.value.status == 502 and "could not read" in info.value.message
    assert not r.slots["openai"]._slots.locked()
    broken.script.append(exc)
    _, served = await r.transcribe(request(fallbacks=("groq/whisper-large-v3",)))
    assert served.provider == "groq"


# ------------------------------------------------------------------------------------------ capabilities


@dataclass
class RecordingProvider(ScriptedProvider):
    """Also records the request each call received (the planned format and granularities)."""

    seen: list[TranscriptionRequest] = field(default_factory=list)

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        self.seen.append(request)
        return await super().transcribe(request, attempt)


@pytest.mark.parametrize(
    "asked,native,planned",
    [
        ("srt", {"json", "verbose_json"}, "verbose_json"),  # timings needed: the richest form
        ("text", {"json", "verbose_json"}, "json"),  # no timings needed: plain json will do
        ("vtt", {"json"}, "json"),
        ("srt", {"json", "srt", "verbose_json"}, "srt"),  # native: passed through
    ],
)
async def test_the_provider_is_asked_for_what_it_can_give(asked: str, native: set[str], planned: str) -> None:
    caps = Capabilities(native_formats=frozenset(native), native_stream=False, word_timestamps=True,
                        segment_timestamps=True)
    impl = RecordingProvider(capabilities=caps)
    await router((config(), impl)).transcribe(request(response_format=asked))
    assert impl.seen[0].response_format == planned


async def test_timestamps_the_provider_cannot_give_are_refused_naming_the_field() -> None:
    caps = Capabilities(native_formats=frozenset({"json"}), native_stream=False, word_timestamps=False,
                        segment_timestamps=False)
    impl = RecordingProvider(capabilities=caps)
    with pytest.raises(ClientError) as info:
        await router((config(), impl)).transcribe(
            request(response_format="verbose_json", timestamp_granularities=("word",))
        )
    assert info.value.param == "timestamp_granularities" and "word" in info.value.message
    assert impl.calls == []


async def test_a_file_over_the_providers_limit_is_413_and_falls_back() -> None:
    small = RecordingProvider(capabilities=Capabilities(
        native_formats=frozenset({"json"}), native_stream=False, word_timestamps=False,
        segment_timestamps=False, max_file_mb=1))
    big = RecordingProvider()
    r = router((config("openai"), small), (config("groq"), big))
    req = TranscriptionRequest(provider="openai", model="m", audio=BytesAudio(bytes(2 * 1024 * 1024)),
                               fallbacks=("groq/whisper-large-v3",))
    result, served = await r.transcribe(req)
    assert served.provider == "groq" and small.calls == [] and len(big.calls) == 1
    with pytest.raises(Exception) as info:
        await r.transcribe(TranscriptionRequest(provider="openai", model="m", audio=BytesAudio(bytes(2 * 1024 * 1024))))
    assert getattr(info.value, "status", None) == 413 and "1 MB" in str(info.value)


async def test_a_custom_provider_is_reported_by_its_configured_name() -> None:
    cfg = ProviderConfig(id="office-whisper", kind="openai", keys=(key("k"),))
    impl = ScriptedProvider([upstream(401, "bad key")])
    r = Router({"office-whisper": ProviderSlot(cfg, impl, drop_excess=False)}, rng=random.Random(1), sleep=Sleeps())
    with pytest.raises(UpstreamError) as info:
        await r.transcribe(request(provider="office-whisper"))
    assert info.value.provider == "office-whisper"
    _, served = await r.transcribe(request(provider="office-whisper"))
    assert served.reported == served.provider == "office-whisper"


async def test_granularities_do_not_matter_for_formats_that_show_no_timings() -> None:
    caps = Capabilities(native_formats=frozenset({"json", "text"}), native_stream=False, word_timestamps=False,
                        segment_timestamps=False)
    impl = RecordingProvider(capabilities=caps)
    await router((config(), impl)).transcribe(request(response_format="text", timestamp_granularities=("word",)))
    assert impl.seen[0].response_format == "text"


async def test_segments_are_available_when_the_provider_gives_words() -> None:
    caps = Capabilities(native_formats=frozenset({"json", "verbose_json"}), native_stream=False,
                        word_timestamps=True, segment_timestamps=False)
    impl = RecordingProvider(capabilities=caps)
    await router((config(), impl)).transcribe(
        request(response_format="verbose_json", timestamp_granularities=("word", "segment"))
    )
    assert impl.seen[0].response_format == "verbose_json"


async def test_allowed_requests_without_transcription_refuses_and_falls_back() -> None:
    closed = ScriptedProvider()
    cfg = ProviderConfig(id="openai", kind="openai", keys=(key("k"),), allowed_requests=frozenset({"chat"}))
    open_ = ScriptedProvider()
    r = Router({"openai": ProviderSlot(cfg, closed, drop_excess=False),
                "groq": ProviderSlot(config("groq"), open_, drop_excess=False)}, rng=random.Random(1), sleep=Sleeps())
    with pytest.raises(ClientError, match="allowed_requests"):
        await r.transcribe(request())
    _, served = await r.transcribe(request(fallbacks=("groq/whisper-large-v3",)))
    assert served.provider == "groq" and closed.calls == []


async def test_allowed_requests_without_transcription_stream_streams_through_the_gateway() -> None:
    impl = ScriptedProvider()
    cfg = ProviderConfig(id="openai", kind="openai", keys=(key("k"),),
                         allowed_requests=frozenset({"transcription"}))
    r = Router({"openai": ProviderSlot(cfg, impl, drop_excess=False)}, rng=random.Random(1), sleep=Sleeps())
    events, _ = await r.stream(request(stream=True))
    got = [e async for e in events]
    assert isinstance(got[-1], StreamDone) and got[-1].text == "hello"
    assert not hasattr(impl, "stream_closed")  # the native stream was never opened


async def test_a_mid_stream_error_leaves_scrubbed_and_names_the_provider_kind() -> None:
    k = key("prod")
    secret = k.value.reveal()

    class EchoingStream(ScriptedProvider):
        async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamEvent]:
            yield StreamDelta("hel")
            raise UpstreamError(f"Incorrect API key provided: {secret}; also sk-SECR****3456", status=401)

    r = router((config(keys=[k]), EchoingStream()))
    events, _ = await r.stream(request(stream=True))
    with pytest.raises(UpstreamError) as info:
        async for _ in events:
            pass
    assert secret not in info.value.message and "3456" not in info.value.message
    assert info.value.provider == "openai"
