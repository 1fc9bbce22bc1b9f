"""Rendering tests: exact bodies are golden files in ``golden/``.

Regenerate them after an intended change with ``UPDATE_GOLDEN=1 pytest tests/gateway/test_formats.py``
and review the diff before committing; without the variable a mismatch fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bifrost_stt.kernel.canonical import (
    Logprob,
    Segment,
    StreamDelta,
    StreamDone,
    TranscriptionResult,
    Usage,
    Word,
)
from bifrost_stt.gateway.render.formats import (
    LINE_WIDTH,
    MAX_LINES,
    build_cues,
    format_timestamp,
    needs_rich,
    parse_srt,
    parse_vtt,
    render,
    synthesize_stream,
    usage_dict,
    width,
)

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, actual: dict[str, Any] | str) -> None:
    """Compare with golden/<name>; write it instead when UPDATE_GOLDEN is set."""
    text = actual if isinstance(actual, str) else json.dumps(actual, indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
        return
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    with path.open(encoding="utf-8", newline="") as f:  # newline="": a stray \r must show
        assert text == f.read()


USAGE = Usage(type="tokens", input_tokens=120, output_tokens=30, total_tokens=150, audio_tokens=110, text_tokens=10)

SEGMENTS = TranscriptionResult(
    text="Hello there. General Kenobi! You are a bold one.",
    language="english",
    duration=6.5,
    segments=(
        Segment(0, 0.0, 1.2, " Hello there.", tokens=(50364, 2425), temperature=0.0, avg_logprob=-0.2,
                compression_ratio=1.1, no_speech_prob=0.01),
        Segment(1, 1.2, 1.9, "   "),  # whitespace-only: no cue
        Segment(2, 1.9, 3.4, " General Kenobi!", seek=300),
        Segment(3, 3.6, 6.25, " You are a bold one."),
    ),
    words=(Word("Hello", 0.0, 0.5), Word("there.", 0.6, 1.2)),
    logprobs=(Logprob("Hello", -0.01, (72, 101)),),
    usage=USAGE,
)

WORDS = TranscriptionResult(
    text="",
    words=tuple(
        Word(w, s, e)
        for w, s, e in [
            ("So", 0.0, 0.2), ("this", 0.25, 0.4), ("is", 0.45, 0.5), ("it.", 0.55, 0.9),  # sentence end
            ("After", 1.0, 1.3), ("a", 1.35, 1.4), ("pause", 1.45, 1.8),
            ("we", 3.5, 3.6), ("keep", 3.65, 3.9), ("talking", 3.95, 4.3), ("about", 4.35, 4.6),  # > 1 s gap
            ("subtitles", 4.65, 5.1), ("and", 5.15, 5.3), ("how", 5.35, 5.5), ("long", 5.55, 5.8),
            ("their", 5.85, 6.0), ("lines", 6.05, 6.3), ("should", 6.35, 6.6), ("really", 6.65, 6.9),
            ("be,", 6.95, 7.2), ("because", 7.25, 7.6), ("readers", 7.65, 8.0), ("need", 8.05, 8.2),
            ("time", 8.25, 8.5), ("slowly", 9.0, 14.0), ("spoken", 14.1, 16.0), ("words", 16.1, 18.0),
        ]
    ),
)

HOURS = TranscriptionResult(
    text="Late. Very late.",
    segments=(
        Segment(0, 3 * 3600 + 25 * 60 + 7.5, 3 * 3600 + 25 * 60 + 9.25, "Late."),
        Segment(1, 100 * 3600 + 59 * 60 + 59.9995, 123 * 3600 + 0.0004, "Very late."),
    ),
)

UNICODE = TranscriptionResult(
    text="",
    duration=12.0,
    segments=(
        Segment(0, 0.0, 4.0, "今天天气很好，我们一起去公园散步吧。然后去吃饭、看电影，最后一起回家休息，明天继续努力工作学习。"),
        Segment(1, 4.0, 6.0, "Party time 🎉👩‍👩‍👧‍👦👍🏽 with café, naïve, and e\u0301te\u0301 (combining) accents everywhere"),
        Segment(2, 6.0, 9.0, "שלום עולם, זהו מבחן של כתוביות בעברית שצריכות להישבר בצורה נכונה לשתי שורות"),
        Segment(3, 9.0, 12.0, "مرحبا بالعالم"),
    ),
)

NO_TIMINGS = TranscriptionResult(text="Just some text without any timing information at all, long enough to wrap.",
                                 duration=4.0)


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
@pytest.mark.parametrize(
    "name,result",
    [("segments", SEGMENTS), ("words", WORDS), ("hours", HOURS), ("unicode", UNICODE), ("no_timings", NO_TIMINGS)],
)
def test_golden(name: str, result: TranscriptionResult, fmt: str) -> None:
    ext = {"json": "json", "verbose_json": "verbose.json", "text": "txt", "srt": "srt", "vtt": "vtt"}[fmt]
    check_golden(f"{name}.{ext}", render(result, fmt))


def test_srt_shape_matches_openai() -> None:
    assert render(SEGMENTS, "srt").startswith("1\n00:00:00,000 --> 00:00:01,200\nHello there.\n\n2\n")
    assert render(SEGMENTS, "srt").endswith("You are a bold one.\n\n")
    assert render(SEGMENTS, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nHello there.\n\n")


def test_timestamps() -> None:
    assert format_timestamp(3 * 3600 + 25 * 60 + 7.5) == "03:25:07,500"
    assert format_timestamp(100 * 3600 + 0.001) == "100:00:00,001"
    assert format_timestamp(30 * 3600, ".") == "30:00:00.000"  # no wrap at 24 h
    assert format_timestamp(0.9995) == "00:00:01,000"
    assert format_timestamp(59.9995) == "00:01:00,000"
    assert format_timestamp(0.0004) == "00:00:00,000"
    assert format_timestamp(-2.5) == "00:00:00,000"
    assert format_timestamp(float("nan")) == "00:00:00,000"


def test_rounding_never_ends_before_start() -> None:
    result = TranscriptionResult(text="x", segments=(Segment(0, 1.0005, 1.0004, "x"), Segment(1, -1, -0.5, "y")))
    assert render(result, "srt") == (
        "1\n00:00:01,001 --> 00:00:01,001\nx\n\n2\n00:00:00,000 --> 00:00:00,000\ny\n\n"
    )


def test_empty_segments_are_skipped() -> None:
    result = TranscriptionResult(text="a", segments=(Segment(0, 0, 1, ""), Segment(1, 1, 2, " \n"),
                                                     Segment(2, 2, 3, " a ")))
    assert render(result, "srt") == "1\n00:00:02,000 --> 00:00:03,000\na\n\n"


def test_empty_text() -> None:
    empty = TranscriptionResult(text="")
    assert render(empty, "srt") == ""
    assert render(empty, "vtt") == "WEBVTT\n\n"
    assert render(empty, "text") == ""
    assert render(empty, "json") == {"text": ""}
    assert render(empty, "verbose_json") == {"task": "transcribe", "language": "", "duration": 0.0, "text": ""}


def test_no_timings_without_duration_is_a_zero_cue() -> None:
    assert render(TranscriptionResult(text="hi"), "srt") == "1\n00:00:00,000 --> 00:00:00,000\nhi\n\n"


@pytest.mark.parametrize("result", [SEGMENTS, WORDS, UNICODE, NO_TIMINGS])
def test_cues_fit_and_keep_every_character(result: TranscriptionResult) -> None:
    cues = build_cues(result)
    for cue in cues:
        assert 1 <= len(cue.lines) <= MAX_LINES
        assert all(0 < width(line) <= LINE_WIDTH for line in cue.lines)
        assert cue.start <= cue.end
    assert all(a.start <= b.start for a, b in zip(cues, cues[1:]))
    source = result.segments and " ".join(s.text for s in result.segments) or result.text
    if result.words and not result.segments:
        source = " ".join(w.word for w in result.words)
    squeeze = lambda s: "".join(s.split())  # noqa: E731
    assert squeeze("".join("".join(c.lines) for c in cues)) == squeeze(source)


def test_long_segment_splits_with_proportional_contiguous_timings() -> None:
    text = " ".join(["word"] * 60)  # 299 columns: four cues of up to two 42-column lines
    cues = build_cues(TranscriptionResult(text=text, segments=(Segment(0, 10.0, 20.0, text),)))
    assert len(cues) == 4
    assert cues[0].start == 10.0 and cues[-1].end == 20.0
    assert all(a.end == b.start for a, b in zip(cues, cues[1:]))


def test_native_passes_through_unchanged() -> None:
    native = "1\n00:00:00,000 --> 00:00:01,000\n  provider's own  \n\n"
    result = TranscriptionResult(text="other", native=native, native_format="srt", segments=SEGMENTS.segments)
    assert render(result, "srt") is native
    assert render(result, "vtt") != native  # another format is rendered, not passed through


@pytest.mark.parametrize(
    "granularities,keys",
    [
        ((), {"segments"}),
        (("segment",), {"segments"}),
        (("word",), {"words"}),
        (("word", "segment"), {"segments", "words"}),
    ],
)
def test_verbose_json_granularities(granularities: tuple[str, ...], keys: set[str]) -> None:
    body = render(SEGMENTS, "verbose_json", granularities=granularities)
    assert isinstance(body, dict)
    assert {"segments", "words"} & body.keys() == keys
    assert body["language"] == "english" and body["duration"] == 6.5


def test_verbose_json_builds_segments_from_words_and_duration_from_timings() -> None:
    body = render(WORDS, "verbose_json")
    assert isinstance(body, dict)
    assert body["duration"] == 18.0
    assert [s["text"] for s in body["segments"]][:2] == ["So this is it.", "After a pause"]
    assert render(NO_TIMINGS, "verbose_json", granularities=("word", "segment")) == {
        "task": "transcribe", "language": "", "duration": 4.0, "text": NO_TIMINGS.text,
    }


def test_usage_dict() -> None:
    assert usage_dict(None) is None
    assert usage_dict(Usage(type="duration", seconds=7)) == {"type": "duration", "seconds": 7}
    assert usage_dict(USAGE) == {
        "type": "tokens", "input_tokens": 120, "input_token_details": {"text_tokens": 10, "audio_tokens": 110},
        "output_tokens": 30, "total_tokens": 150,
    }


def test_needs_rich() -> None:
    assert needs_rich("srt", ()) and needs_rich("vtt", ()) and needs_rich("verbose_json", ("word",))
    assert not needs_rich("json", ()) and not needs_rich("text", ())


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        render(SEGMENTS, "ssml")


def test_parse_round_trip() -> None:
    for parse, fmt in ((parse_srt, "srt"), (parse_vtt, "vtt")):
        body = render(HOURS, fmt)
        assert isinstance(body, str)
        parsed = parse(body)
        assert [(s.start, s.end, s.text) for s in parsed] == [
            (12307.5, 12309.25, "Late."), (363600.0, 442800.0, "Very late."),
        ]
    assert [s.text for s in parse_vtt("WEBVTT\n\nNOTE hi\n\n00:01.000 --> 00:02.500 align:start\nA\nB\n")] == ["A B"]


def _deltas(result: TranscriptionResult) -> list[str]:
    events = list(synthesize_stream(result))
    assert isinstance(events[-1], StreamDone)
    assert events[-1].text == result.text and events[-1].usage is result.usage
    assert all(isinstance(e, StreamDelta) and e.delta for e in events[:-1])
    return [e.delta for e in events[:-1] if isinstance(e, StreamDelta)]


@pytest.mark.parametrize(
    "result,expected",
    [
        (SEGMENTS, ["Hello there.", " General Kenobi!", " You are a bold one."]),
        (TranscriptionResult(text="  Lead. Tail  ", segments=(Segment(0, 0, 1, "Lead."), Segment(1, 1, 2, "Tail"))),
         ["  Lead.", " Tail  "]),
        # segments that disagree with the text: sentences of the text instead
        (TranscriptionResult(text="One. Two? Three", segments=(Segment(0, 0, 1, "Uno."),)), ["One. ", "Two? ", "Three"]),
        (TranscriptionResult(text="你好。世界！"), ["你好。", "世界！"]),
        (TranscriptionResult(text=""), []),
    ],
)
def test_synthesize_stream(result: TranscriptionResult, expected: list[str]) -> None:
    assert _deltas(result) == expected


def test_synthesize_stream_cuts_long_sentences() -> None:
    text = " ".join(["blah"] * 100) + "."
    deltas = _deltas(TranscriptionResult(text=text))
    assert len(deltas) > 1 and all(len(d) <= 80 for d in deltas) and "".join(deltas) == text


@given(
    text=st.text(alphabet=st.sampled_from(list("ab .!?。\n 🎉é\u0301")), max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
)
def test_synthesize_stream_concatenates_to_text(text: str, cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    segments = tuple(Segment(i, 0, 0, text[a:b]) for i, (a, b) in enumerate(zip(bounds, bounds[1:])))
    for result in (TranscriptionResult(text=text, segments=segments), TranscriptionResult(text=text)):
        assert "".join(_deltas(result)) == text


def test_blank_words_fall_back_to_the_text() -> None:
    result = TranscriptionResult(text="hi there", duration=2.0, words=(Word(" ", 0, 1),))
    assert render(result, "srt") == "1\n00:00:00,000 --> 00:00:02,000\nhi there\n\n"


@pytest.mark.parametrize(
    "native,fmt",
    [
        ("1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n2\n00:00:01,000 --> 00:00:02,000\nGeneral Kenobi!\n\n", "srt"),
        ("WEBVTT\n\n00:00.000 --> 00:01.000\nHello there.\n\n00:01.000 --> 00:02.000\nGeneral Kenobi!\n\n", "vtt"),
        ("Hello there. General Kenobi!\n", "text"),
    ],
)
def test_synthesized_stream_of_a_native_text_body_carries_the_transcript(native: str, fmt: str) -> None:
    """A stream is transcript text: subtitle markup and the vendor's trailing newline stay out of it."""
    events = list(synthesize_stream(TranscriptionResult(text=native, native=native, native_format=fmt)))
    done = events[-1]
    assert isinstance(done, StreamDone) and done.text == "Hello there. General Kenobi!"
    assert "".join(e.delta for e in events[:-1] if isinstance(e, StreamDelta)) == done.text


@pytest.mark.parametrize("fmt", ["json", "verbose_json"])
def test_json_bodies_keep_the_providers_own_keys(fmt: str) -> None:
    result = TranscriptionResult(text="hi", extra={"x_groq": {"id": "req_1"}, "text": "not ours to overwrite"})
    body = render(result, fmt)
    assert isinstance(body, dict)
    assert body["x_groq"] == {"id": "req_1"} and body["text"] == "hi"
