"""Long audio end to end: a real gateway, a fake upstream that hears what each piece holds (tests.fakes.listener).

Speech is espeak-ng sentences separated by pauses (tests.speech); the stretch without any pause is a rising
tone whose pitch tells the fake the absolute time. Every test asserts what the client got back and what each
piece looked like when it reached the upstream (its size and length under the target's limits).
"""

from __future__ import annotations

import io
import json
import re
import time
import wave
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import httpx
import numpy as np
import pytest

from bifrost_stt.kernel.settings import AudioLimit, GatewayConfig, LongAudioConfig
from tests.fakes.listener import RATE, FakeListener, chirp, decode, voiced
from tests.speech import sentence_durations, speech_wav
from tests.support import config_with

SENTENCES = [
    "Good morning.", "Cats sleep all day long.", "The train leaves the station at seven tonight.",
    "Please bring an umbrella because it may rain later this afternoon.", "Bread rises slowly.",
    "Our team finished the quarterly report two full days before the deadline arrived.",
    "Music fills the empty hall.",
    "Seven tall ships sailed quietly across the cold northern sea at dawn yesterday morning.",
    "Yes.", "A small red kite flew over the park.",
]
GAP, LEAD = 1.5, 0.3
URL = "/v1/audio/transcriptions"


@pytest.fixture
def listener() -> Any:
    with FakeListener() as fake:
        yield fake


def voices() -> dict[str, float]:
    out = {}
    for sentence in SENTENCES:
        (start, end), = voiced(decode(speech_wav([sentence], gap=0, lead=0).read_bytes()))
        out[sentence] = end - start
    return out


def placements() -> list[float]:
    """Where each sentence starts in ``speech_wav(SENTENCES, gap=GAP, lead=LEAD)``."""
    starts, at = [], LEAD
    for length in sentence_durations(SENTENCES):
        starts.append(at)
        at += length + GAP
    return starts


def gateway(run_gateway: Any, fake: FakeListener, **long_audio: Any) -> str:
    base = config_with(fake.provider_config(timeout=30.0))
    limits = long_audio.pop("limits", {})
    cfg = LongAudioConfig(min_piece_seconds=5.0, limits=MappingProxyType(limits), **long_audio)
    return str(run_gateway(replace(base, long_audio=cfg)))


def post(url: str, audio: bytes, *, model: str = "openai/whisper-1", timeout: float = 60.0, **fields: str) -> httpx.Response:
    return httpx.post(url + URL, data={"model": model, **fields}, files={"file": ("talk.wav", audio, "audio/wav")},
                      timeout=timeout)


def in_order_once(text: str) -> None:
    positions = [text.find(s) for s in SENTENCES]
    assert all(p >= 0 for p in positions), text
    assert positions == sorted(positions), text
    assert all(text.count(s) == 1 for s in SENTENCES), text
    assert "<fragment>" not in text, text


def test_over_the_byte_limit_is_split_at_pauses_and_stitched(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    assert len(audio) > 1024 * 1024
    listener.voices, listener.max_bytes = voices(), 1024 * 1024
    url = gateway(run_gateway, listener, max_parallel_chunks=2, limits={"openai": AudioLimit(max_file_mb=1)})

    response = post(url, audio, response_format="verbose_json")

    assert response.status_code == 200, response.text
    body = response.json()
    in_order_once(body["text"])
    assert listener.violations == []
    assert len(listener.pieces) == body["extra_fields"]["pieces"] >= 2
    segments = body["segments"]
    assert [s["text"].strip() for s in segments] == SENTENCES
    assert [s["id"] for s in segments] == list(range(len(SENTENCES)))
    for segment, start in zip(segments, placements()):
        assert abs(segment["start"] - start) < 0.5, (segment, start)
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    assert abs(body["duration"] - len(decode(audio)) / RATE) < 0.1
    assert body["usage"]["seconds"] == sum(int(np.ceil(s)) for _, s in listener.pieces)


def test_over_a_duration_cap_pieces_stay_under_it(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices, listener.max_seconds = voices(), 14.0
    url = gateway(run_gateway, listener, max_parallel_chunks=4,
                  limits={"openai/gpt-4o-transcribe": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio, model="openai/gpt-4o-transcribe")  # a model without timings: text only

    assert response.status_code == 200, response.text
    assert listener.violations == []
    assert len(listener.pieces) >= 3
    assert all(request.field("response_format") == "json" for request in listener.requests)
    in_order_once(response.json()["text"])


def test_srt_cues_are_continuous_across_pieces(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices = voices()
    url = gateway(run_gateway, listener, max_parallel_chunks=3, limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio, response_format="srt")

    assert response.status_code == 200, response.text
    cues = [c.split("\n") for c in response.json()["text"].strip().split("\n\n")]
    assert [c[0] for c in cues] == [str(i) for i in range(1, len(cues) + 1)]  # numbered on across pieces
    in_order_once(" ".join(" ".join(c[2:]) for c in cues))
    times = [[_seconds(t) for t in c[1].split(" --> ")] for c in cues]
    assert all(a <= b for a, b in times) and all(p[1] <= n[0] for p, n in zip(times, times[1:]))
    for start in placements():  # every sentence begins a cue within 0.5 s of where it was placed
        assert min(abs(a - start) for a, _ in times) < 0.5, start


def _seconds(stamp: str) -> float:
    h, m, rest = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest.replace(",", "."))


def test_a_stretch_without_pauses_overlaps_and_is_heard_once(run_gateway: Any, listener: FakeListener) -> None:
    seconds = 50.0
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(chirp(seconds).tobytes())
    listener.mode, listener.max_seconds = "chirp", 12.0
    url = gateway(run_gateway, listener, max_parallel_chunks=8, limits={"openai": AudioLimit(max_duration_seconds=12.0)})

    response = httpx.post(url + "/openai/v1/audio/transcriptions", files={"file": ("tone.wav", out.getvalue())},
                          data={"model": "whisper-1", "response_format": "verbose_json",
                                "timestamp_granularities[]": ["word", "segment"]}, timeout=60)

    assert response.status_code == 200, response.text
    body = response.json()
    assert listener.violations == []
    assert body["extra_fields"]["pieces"] == len(listener.pieces) >= 5
    expected = [f"t{n}" for n in range(int(seconds))]
    assert body["text"].split() == expected
    assert [w["word"] for w in body["words"]] == expected
    assert [s["text"].strip() for s in body["segments"]] == expected
    for n, word in enumerate(body["words"]):
        assert abs(word["start"] - n) < 0.05, word
    assert [s["id"] for s in body["segments"]] == list(range(len(expected)))


def test_a_failing_piece_fails_the_request_naming_its_time_range(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices, listener.fail_when = voices(), "Bread rises slowly."
    url = gateway(run_gateway, listener, max_parallel_chunks=3, limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio)

    assert response.status_code == 500, response.text
    message = response.json()["error"]["message"]
    found = re.fullmatch(r"piece (\d+) of (\d+) \(0:(\d\d\.\d)–0:(\d\d\.\d)\) failed: the model failed on this audio", message)
    assert found, message
    bread = placements()[SENTENCES.index("Bread rises slowly.")]
    assert float(found[3]) <= bread < float(found[4])  # the range that holds the sentence that failed
    assert "text" not in response.json()


def test_streaming_gives_deltas_in_audio_order(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices = voices()
    url = gateway(run_gateway, listener, max_parallel_chunks=3,
                  limits={"openai/gpt-4o-transcribe": AudioLimit(max_duration_seconds=14.0)})

    with httpx.stream("POST", url + URL, data={"model": "openai/gpt-4o-transcribe", "stream": "true"},
                      files={"file": ("talk.wav", audio, "audio/wav")}, timeout=60) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]

    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    done = events[-1]
    assert done["type"] == "transcript.text.done"
    assert len(deltas) == done["extra_fields"]["pieces"] == len(listener.pieces) >= 3
    assert "".join(deltas) == done["text"]
    in_order_once(done["text"])


def test_switched_off_a_file_over_the_limit_is_refused_as_before(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    url = gateway(run_gateway, listener, enabled=False, limits={"openai": AudioLimit(max_file_mb=1)})

    response = post(url, audio)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert listener.pieces == []


def test_audio_within_the_limits_goes_whole(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES[:3], gap=GAP, lead=LEAD).read_bytes()
    listener.voices = voices()
    url = gateway(run_gateway, listener, limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio)

    assert response.status_code == 200, response.text
    assert "pieces" not in response.json()["extra_fields"]
    assert listener.requests[0].file.data == audio  # the client's own bytes, untouched


def test_an_async_job_reports_pieces_done_while_it_runs(run_gateway: Any, listener: FakeListener, tmp_path: Any) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices, listener.latency_per_second = voices(), 0.04  # ~0.5 s per piece
    base = config_with(listener.provider_config(timeout=30.0), job_store_path=str(tmp_path / "jobs.sqlite3"))
    cfg = LongAudioConfig(min_piece_seconds=5.0, max_parallel_chunks=1,
                          limits=MappingProxyType({"openai": AudioLimit(max_duration_seconds=14.0)}))
    url = run_gateway(replace(base, long_audio=cfg))

    submitted = httpx.post(url + "/v1/async/audio/transcriptions", data={"model": "openai/whisper-1"},
                           files={"file": ("talk.wav", audio, "audio/wav")}, timeout=30)
    assert submitted.status_code == 202, submitted.text
    seen, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        job = httpx.get(url + submitted.headers["location"], timeout=10).json()
        if "progress" in job:
            seen.append((job["progress"]["pieces_done"], job["progress"]["pieces_total"]))
        if job["status"] in ("completed", "failed"):
            break
        time.sleep(0.05)

    assert job["status"] == "completed", job
    total = job["result"]["extra_fields"]["pieces"]
    assert total == len(listener.pieces) >= 3
    in_order_once(job["result"]["text"])
    assert {t for _, t in seen} == {total}
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done) & set(range(1, total))) >= 1, seen  # seen part-way through


def test_audio_longer_than_the_gateway_splits_is_refused(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    url = gateway(run_gateway, listener, max_audio_seconds=20.0, limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio)

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "audio_too_long" and "20 s" in response.json()["error"]["message"]
    assert listener.pieces == []


def test_without_timings_an_overlap_loses_the_words_it_repeats(run_gateway: Any, listener: FakeListener) -> None:
    seconds = 40.0
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(chirp(seconds).tobytes())
    listener.mode = "chirp"
    url = gateway(run_gateway, listener, max_parallel_chunks=8,
                  limits={"openai/gpt-4o-transcribe": AudioLimit(max_duration_seconds=12.0)})

    response = post(url, out.getvalue(), model="openai/gpt-4o-transcribe")  # json only: no timings to go by

    assert response.status_code == 200, response.text
    assert all(request.field("response_format") == "json" for request in listener.requests)
    assert response.json()["text"].split() == [f"t{n}" for n in range(int(seconds))]


@pytest.mark.parametrize("vendor,model", [
    ("groq", "whisper-large-v3"), ("deepgram", "nova-3"), ("elevenlabs", "scribe_v1"),
    ("gemini", "gemini-2.5-flash"), ("mistral", "voxtral-mini-latest"),
    ("huggingface", "openai/whisper-large-v3"), ("vllm", "whisper-small"), ("fireworks", "whisper-v3"),
])
def test_every_provider_takes_pieces(run_gateway: Any, request: pytest.FixtureRequest, vendor: str, model: str) -> None:
    fake = request.getfixturevalue(f"fake_{vendor}")
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    base = config_with(fake.provider_config(timeout=30.0))
    cfg = LongAudioConfig(min_piece_seconds=5.0, max_parallel_chunks=3,
                          limits=MappingProxyType({vendor: AudioLimit(max_duration_seconds=14.0)}))
    url = run_gateway(replace(base, long_audio=cfg))

    response = post(url, audio, model=f"{vendor}/{model}")

    assert response.status_code == 200, response.text
    pieces = response.json()["extra_fields"]["pieces"]
    assert pieces >= 3 and len(fake.requests) == pieces
    assert all(len(r.body) < len(audio) / 2 for r in fake.requests)  # each piece, not the whole file
    one = fake.transcript.strip()
    assert response.json()["text"].count(one) == pieces


def test_pieces_carry_language_prompt_and_temperature(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices = voices()
    url = gateway(run_gateway, listener, max_parallel_chunks=3, limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = httpx.post(url + "/openai/v1/audio/transcriptions", files={"file": ("talk.wav", audio)},
                          data={"model": "whisper-1", "language": "en", "prompt": "Notes.", "temperature": "0.2"},
                          timeout=60)

    assert response.status_code == 200, response.text
    assert len(listener.requests) >= 3
    for piece in listener.requests:
        assert (piece.field("language"), piece.field("prompt"), piece.field("temperature")) == ("en", "Notes.", "0.2")
        assert piece.file is not None and piece.file.filename.startswith("piece-") and piece.file.data[:4] == b"fLaC"


def test_carry_prompt_gives_each_piece_the_end_of_the_previous_text(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices = voices()
    url = gateway(run_gateway, listener, carry_prompt=True, limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio, prompt="Notes.")

    assert response.status_code == 200, response.text
    prompts = [r.field("prompt") for r in listener.requests]
    assert prompts[0] == "Notes." and len(prompts) >= 3
    for before, prompt in zip(listener.requests, prompts[1:]):  # one at a time: arrival order is audio order
        heard = " ".join(t for _, _, t in listener.hear(decode(before.file.data)))
        assert prompt == f"Notes. {heard[-200:]}"
    in_order_once(response.json()["text"])


def test_opus_pieces(run_gateway: Any, listener: FakeListener) -> None:
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD).read_bytes()
    listener.voices, listener.max_seconds = voices(), 14.0
    url = gateway(run_gateway, listener, max_parallel_chunks=3, piece_format="opus",
                  limits={"openai": AudioLimit(max_duration_seconds=14.0)})

    response = post(url, audio, response_format="verbose_json")

    assert response.status_code == 200, response.text
    assert listener.violations == []
    assert all(r.file is not None and r.file.data[:4] == b"OggS" and r.file.filename.endswith(".ogg")
               for r in listener.requests)
    assert [s["text"].strip() for s in response.json()["segments"]] == SENTENCES
