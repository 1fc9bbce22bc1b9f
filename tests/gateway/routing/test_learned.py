"""What the router learns from upstream answers: format refusals, remembered per (provider, model) for a
bounded time in a bounded map, and the asks they save. A scripted provider that refuses like a real one."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bifrost_stt.gateway.render import plan
from bifrost_stt.gateway.routing.admission import ProviderSlot
from bifrost_stt.gateway.routing.learned import Learned
from bifrost_stt.gateway.routing.router import Router
from bifrost_stt.kernel.canonical import BytesAudio, StreamDelta, StreamDone, TranscriptionRequest, TranscriptionResult
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, StreamItem
from bifrost_stt.kernel.errors import ClientError, UpstreamError
from bifrost_stt.kernel.settings import KeyConfig, ProviderConfig, Secret

ALL = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
CAPS = Capabilities(native_formats=ALL, native_stream=True, word_timestamps=True, segment_timestamps=True)
OPENAI_REFUSAL = "response_format '{fmt}' is not compatible with model 'gpt-4o-transcribe-api-ev3'. Use 'json' or 'text' instead."


def refusal(fmt: str, message: str = OPENAI_REFUSAL) -> UpstreamError:
    return UpstreamError(message.format(fmt=fmt), status=400, error_type="invalid_request_error",
                         param="response_format", code="unsupported_value")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Refusing:
    """Takes ``takes`` only; refuses anything else as OpenAI does (or with ``message``). Streams when asked."""

    takes: frozenset[str] = frozenset({"json", "text"})
    message: str = OPENAI_REFUSAL
    capabilities: Capabilities = CAPS
    asked: list[tuple[str, str | None, bool]] = field(default_factory=list)  # (model, format, stream)

    def _check(self, request: TranscriptionRequest, attempt: Attempt, stream: bool) -> None:
        self.asked.append((attempt.model, request.response_format, stream))
        if (request.response_format or "json") not in self.takes:
            raise refusal(request.response_format or "json", self.message)

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        self._check(request, attempt, False)
        return TranscriptionResult(text="hello there.")

    def streams(self, model: str) -> bool:
        return True

    async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamItem]:
        self._check(request, attempt, True)
        yield StreamDelta("hello")
        yield StreamDone("hello")


def slot(impl: Any, pid: str = "azure", learned: Learned | None = None) -> ProviderSlot:
    cfg = ProviderConfig(id=pid, kind="azure", keys=(KeyConfig(name="k", value=Secret("sk-x")),))
    return ProviderSlot(cfg, impl, drop_excess=False, learned=learned)


def request(fmt: str = "json", model: str = "eu-speech-main", provider: str = "azure", **kw: Any) -> TranscriptionRequest:
    return TranscriptionRequest(provider=provider, model=model, audio=BytesAudio(b"RIFF-audio"), response_format=fmt, **kw)


# ------------------------------------------------------------------------------------------- Learned


def test_learned_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    learned = Learned(ttl=60, clock=clock)
    assert learned.refuse("m", {"srt"}) == {"srt"}
    assert learned.refuse("m", {"vtt"}) == {"srt", "vtt"}  # added to what it knew
    clock.now += 59.9
    assert learned.refused("m") == {"srt", "vtt"}
    clock.now += 0.1
    assert learned.refused("m") == frozenset() and len(learned) == 0


def test_learned_is_bounded_least_recently_noted_first() -> None:
    learned = Learned(size=3)
    for name in ("a", "b", "c"):
        learned.refuse(name, {"srt"})
    learned.refuse("a", {"vtt"})  # noted again: now the most recent
    learned.refuse("d", {"srt"})
    assert len(learned) == 3 and learned.refused("b") == frozenset()
    assert learned.refused("a") == {"srt", "vtt"} and learned.refused("d") == {"srt"}


# ---------------------------------------------------------------------------------------------- plan


@pytest.mark.parametrize(
    ("error", "asked", "ruled_out"),
    [
        (refusal("verbose_json"), "verbose_json", {"srt", "verbose_json", "vtt"}),  # names what it takes
        (refusal("srt"), "srt", {"srt", "verbose_json", "vtt"}),
        (UpstreamError("response_format must be one of [json text verbose_json]", status=400, param="response_format"),
         "srt", {"srt", "vtt"}),  # Groq's wording
        (UpstreamError("unsupported format", status=400, param="response_format"), "vtt", {"vtt"}),  # names nothing
        (UpstreamError("Invalid value for response_format: 'srt'", status=400), "srt", {"srt"}),  # no param
    ],
)
def test_refusals_rule_out_formats(error: UpstreamError, asked: str, ruled_out: set[str]) -> None:
    assert plan.refused_formats(error, asked) == ruled_out


@pytest.mark.parametrize(
    ("error", "asked"),
    [
        (refusal("json"), "json"),  # json is the floor: nothing to fall back to
        (UpstreamError("Invalid file format.", status=400, param="file"), "srt"),  # another field
        (UpstreamError("response_format service down", status=503), "srt"),  # not a refusal
        (UpstreamError("response_format 'x'", status=400, param="response_format"), "diarized_json"),  # not ours to render
    ],
)
def test_what_is_no_format_refusal(error: UpstreamError, asked: str) -> None:
    assert plan.refused_formats(error, asked) is None


def test_what_refuses_the_stream_field() -> None:
    assert plan.refused_stream(UpstreamError("Unrecognized request argument supplied: stream", status=400))
    assert plan.refused_stream(UpstreamError("not supported", status=400, param="stream"))
    assert not plan.refused_stream(refusal("verbose_json"))
    assert not plan.refused_stream(UpstreamError("stream broke", status=502))
    assert plan.without(CAPS, {plan.STREAM}) is CAPS


def test_without_refused_verbose_json_there_are_no_timings() -> None:
    caps = plan.without(CAPS, {"srt", "verbose_json", "vtt"})
    assert caps.native_formats == {"json", "text"} and not caps.word_timestamps and not caps.segment_timestamps
    assert plan.without(CAPS, {"srt"}).word_timestamps and plan.without(CAPS, ()) is CAPS


# -------------------------------------------------------------------------------------------- router


async def test_the_refusal_is_remembered_per_provider_and_model_until_it_expires() -> None:
    clock = Clock()
    eu, us = Refusing(), Refusing()
    r = Router({"azure": slot(eu, learned=Learned(ttl=600, clock=clock)), "azure-us": slot(us, "azure-us")},
               rng=random.Random(1))
    await r.transcribe(request("srt"))
    assert eu.asked == [("eu-speech-main", "srt", False), ("eu-speech-main", "json", False)]
    await r.transcribe(request("srt"))
    await r.transcribe(request("srt", model="eu-speech-other"))  # another deployment: its own first guess
    assert eu.asked[2:] == [("eu-speech-main", "json", False), ("eu-speech-other", "srt", False),
                            ("eu-speech-other", "json", False)]
    await r.transcribe(request("srt", provider="azure-us"))  # another provider id: learns on its own
    assert us.asked == [("eu-speech-main", "srt", False), ("eu-speech-main", "json", False)]
    clock.now += 600
    eu.asked.clear()
    await r.transcribe(request("srt"))  # forgotten: asked as the client wants again
    assert eu.asked == [("eu-speech-main", "srt", False), ("eu-speech-main", "json", False)]


async def test_a_refusal_naming_nothing_walks_down_to_json_within_the_bound() -> None:
    impl = Refusing(message="unsupported response_format {fmt}")
    r = Router({"azure": slot(impl)}, rng=random.Random(1))
    result, _ = await r.transcribe(request("srt"))
    assert result.text == "hello there."
    assert [f for _, f, _ in impl.asked] == ["srt", "verbose_json", "json"]  # two re-asks, the bound
    impl.asked.clear()
    await r.transcribe(request("vtt"))
    assert [f for _, f, _ in impl.asked] == ["vtt", "json"]  # srt and verbose_json were remembered


async def test_a_model_that_refuses_everything_fails_with_the_upstreams_error() -> None:
    impl = Refusing(takes=frozenset({"text"}), message="unsupported response_format {fmt}")
    r = Router({"azure": slot(impl)}, rng=random.Random(1))
    with pytest.raises(UpstreamError) as info:
        await r.transcribe(request("srt"))
    assert info.value.status == 400 and "unsupported response_format json" in info.value.message
    assert len(impl.asked) == 3


async def test_timings_after_the_refusal_are_the_clients_400() -> None:
    impl = Refusing()
    r = Router({"azure": slot(impl)}, rng=random.Random(1))
    with pytest.raises(ClientError) as info:
        await r.transcribe(request("verbose_json", timestamp_granularities=("word",)))
    assert info.value.param == "timestamp_granularities" and len(impl.asked) == 1


async def test_a_stream_request_learns_too() -> None:
    impl = Refusing()
    r = Router({"azure": slot(impl)}, rng=random.Random(1))
    events, served = await r.stream(request(stream=True))
    got = [e async for e in events]
    assert got == [StreamDelta("hello"), StreamDone("hello")] and served.deployment == "eu-speech-main"
    assert impl.asked == [("eu-speech-main", "verbose_json", True), ("eu-speech-main", "json", True)]
    events, _ = await r.stream(request(stream=True))
    await events.aclose()  # type: ignore[attr-defined]
    assert impl.asked[2:] == [("eu-speech-main", "json", True)]
