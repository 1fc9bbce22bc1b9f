"""diarized_json from canonical results: one shape, vendor speaker ids as A, B, ..."""

from __future__ import annotations

from bifrost_stt.gateway.render.diarized import SpeakerLabels, diarized_segments
from bifrost_stt.gateway.render.formats import render
from bifrost_stt.kernel.canonical import Segment, TranscriptionResult, Usage, Word


def test_vendor_numbering_becomes_letters_in_order_of_first_appearance() -> None:
    label = SpeakerLabels()
    assert [label(s) for s in ("speaker_1", "speaker_0", "speaker_1", "SPEAKER_02", "3")] == ["A", "B", "A", "C", "D"]
    named = SpeakerLabels()
    assert [named(s) for s in ("Alice", "0", "Bob")] == ["Alice", "A", "Bob"]  # names are kept


def test_words_by_one_speaker_become_one_segment() -> None:
    words = (Word("Hi", 0.0, 0.4, "speaker_0"), Word("there.", 0.4, 0.8, "speaker_0"),
             Word("Hello", 1.0, 1.5, "speaker_1"), Word("again", 1.6, 2.0, "speaker_0"))
    result = TranscriptionResult(text="Hi there. Hello again", words=words, usage=Usage(type="duration", seconds=2))
    body = render(result, "diarized_json")
    assert isinstance(body, dict)
    assert body["segments"] == [
        {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0, "end": 0.8, "text": "Hi there.", "speaker": "A"},
        {"type": "transcript.text.segment", "id": "seg_1", "start": 1.0, "end": 1.5, "text": "Hello", "speaker": "B"},
        {"type": "transcript.text.segment", "id": "seg_2", "start": 1.6, "end": 2.0, "text": "again", "speaker": "A"},
    ]
    assert body["task"] == "transcribe" and body["duration"] == 2.0 and body["usage"] == {"type": "duration", "seconds": 2}


def test_segments_with_speakers_win_and_no_speaker_is_one_speaker() -> None:
    labelled = TranscriptionResult(text="a b", segments=(Segment(0, 0.0, 1.0, " a", speaker="1"),
                                                        Segment(1, 1.0, 2.0, " b", speaker="0")),
                                   words=(Word("a", 0.0, 1.0, "x"),))
    assert [(s["text"], s["speaker"]) for s in diarized_segments(labelled)] == [("a", "A"), ("b", "B")]
    plain = TranscriptionResult(text="just text", duration=3.0)
    assert diarized_segments(plain) == [
        {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0, "end": 3.0, "text": "just text", "speaker": "A"}
    ]
    assert diarized_segments(TranscriptionResult(text="")) == []


def test_verbose_json_words_carry_their_speaker() -> None:
    result = TranscriptionResult(text="Hi", words=(Word("Hi", 0.0, 0.5, "speaker_0"), Word("yo", 0.5, 1.0)))
    body = render(result, "verbose_json", granularities=("word",))
    assert isinstance(body, dict)
    assert body["words"] == [{"word": "Hi", "start": 0.0, "end": 0.5, "speaker": "speaker_0"},
                             {"word": "yo", "start": 0.5, "end": 1.0}]
