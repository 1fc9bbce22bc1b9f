"""``response_format=diarized_json``: one speaker-labelled shape, whichever provider diarized.

The shape is the one OpenAI's diarizing model answers, which upstream Bifrost also passes on::

    {"task": "transcribe", "duration": 3.2, "text": "...",
     "segments": [{"type": "transcript.text.segment", "id": "seg_0", "start": 0.0, "end": 1.4,
                   "text": "...", "speaker": "A"}, ...],
     "usage": {...}}

Where the segments come from, in order: the provider's segments when they carry speakers; else runs of
consecutive words with the same speaker; else one segment for the whole text. Speaker labels: vendors number
speakers in their own way (``0``, ``speaker_0``, ``SPEAKER_00``, ``speaker 1``); those become ``A``, ``B``,
... in order of first appearance. Any other label (a known speaker's name, an ``A`` already) is kept.
A result with no speaker at all is one speaker, ``A``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from string import ascii_uppercase
from typing import Any

from bifrost_stt.kernel.canonical import TranscriptionResult, Word

SEGMENT_TYPE = "transcript.text.segment"
_NUMBERED = re.compile(r"(?:speaker[ _-]?)?(\d+)", re.IGNORECASE)


def _letters(index: int) -> str:
    """A, B, ..., Z, AA, AB, ...: spreadsheet column names, so any number of speakers has a label."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = ascii_uppercase[rest] + label
    return label


class SpeakerLabels:
    """Vendor speaker ids -> the labels a client sees, stable within one result."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, raw: str | None) -> str:
        key = "" if raw is None else str(raw).strip()
        if key in self._seen:
            return self._seen[key]
        numbered = key == "" or _NUMBERED.fullmatch(key) is not None
        label = _letters(sum(1 for v in self._seen.values() if _is_generated(v))) if numbered else key
        self._seen[key] = label
        return label


def _is_generated(label: str) -> bool:
    return label.isalpha() and label.isupper()


def _turns(words: Sequence[Word]) -> list[tuple[float, float, str, str | None]]:
    """Consecutive words with the same speaker, joined as (start, end, text, speaker)."""
    turns: list[tuple[float, float, str, str | None]] = []
    for word in words:
        text = word.word.strip()
        if turns and turns[-1][3] == word.speaker:
            start, _, joined, speaker = turns[-1]
            turns[-1] = (start, word.end, f"{joined} {text}" if joined else text, speaker)
        else:
            turns.append((word.start, word.end, text, word.speaker))
    return turns


def diarized_segments(result: TranscriptionResult) -> list[dict[str, Any]]:
    label = SpeakerLabels()
    spans: list[tuple[float, float, str, str | None]]
    if result.segments and any(s.speaker is not None for s in result.segments):
        spans = [(s.start, s.end, s.text.strip(), s.speaker) for s in result.segments]
    elif any(w.speaker is not None for w in result.words):
        spans = _turns(result.words)
    elif result.segments:
        spans = [(s.start, s.end, s.text.strip(), None) for s in result.segments]
    elif result.text.strip():
        end = result.duration if result.duration is not None else max((w.end for w in result.words), default=0.0)
        spans = [(0.0, end, result.text.strip(), None)]
    else:
        spans = []
    return [
        {"type": SEGMENT_TYPE, "id": f"seg_{i}", "start": start, "end": max(end, start), "text": text,
         "speaker": label(speaker)}
        for i, (start, end, text, speaker) in enumerate(spans)
    ]


def diarized_body(result: TranscriptionResult, duration: float) -> dict[str, Any]:
    """The diarized_json body without usage (the caller adds what every JSON body shares)."""
    return {"task": result.task, "duration": duration, "text": result.text, "segments": diarized_segments(result)}



