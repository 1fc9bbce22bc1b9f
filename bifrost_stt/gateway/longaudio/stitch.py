"""One answer from many: the pieces' canonical results joined as if one call had heard the whole file.

    text        the pieces' texts in audio order, one space apart (none between CJK characters)
    segments    shifted by their piece's offset, ids renumbered from 0, starts and ends never going back
    words       shifted likewise
    overlap     where two pieces overlap (a cut with no pause), each segment and word is kept once: from
                the piece whose side of the cut holds its middle; a piece without timings loses the words
                its text repeats from the end of the previous piece's text
    duration    the whole file's; ``usage`` summed field by field (what the provider billed, overlap included)
    language    the first piece's that says one
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from bifrost_stt.gateway.longaudio.piece import Piece
from bifrost_stt.kernel.canonical import Segment, TranscriptionResult, Usage, Word

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
MAX_REPEATED_WORDS = 40


def join_text(parts: Sequence[str]) -> str:
    out = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if out and not (_CJK.match(out[-1]) and _CJK.match(part[0])):
            out += " "
        out += part
    return out


def _keeps(piece: Piece, start: float, end: float) -> bool:
    """Whether an item heard at ``[start, end]`` (whole-file seconds) belongs to ``piece``."""
    if not (piece.overlap_before or piece.overlap_after):
        return True
    middle = (start + end) / 2
    if piece.overlap_before and middle < piece.keep_from:
        return False
    if piece.overlap_after and middle >= piece.keep_to:
        return False
    return True


def _drop_repeat(previous: str, text: str) -> str:
    """``text`` without its longest leading run of words that ends ``previous`` (an overlap heard twice)."""
    before, words = previous.split(), text.split()
    for n in range(min(len(before), len(words), MAX_REPEATED_WORDS), 0, -1):
        if [w.strip(".,!?;:").lower() for w in before[-n:]] == [w.strip(".,!?;:").lower() for w in words[:n]]:
            return " ".join(words[n:])
    return text


def stitch(parts: Sequence[tuple[Piece, TranscriptionResult]], rate: int) -> TranscriptionResult:
    """The pieces' results (in audio order) as one result."""
    segments: list[Segment] = []
    words: list[Word] = []
    texts: list[str] = []
    last_segment_end = last_word_end = 0.0
    for piece, result in parts:
        offset = piece.offset(rate)
        kept_segments = []
        for seg in result.segments:
            start, end = seg.start + offset, seg.end + offset
            if not _keeps(piece, start, end):
                continue
            start = max(start, last_segment_end)
            end = max(end, start)
            last_segment_end = end
            kept = replace(seg, id=len(segments), start=round(start, 3), end=round(end, 3),
                           seek=seg.seek + int(round(offset * 100)))
            segments.append(kept)
            kept_segments.append(kept)
        for word in result.words:
            start, end = word.start + offset, word.end + offset
            if not _keeps(piece, start, end):
                continue
            start = max(start, last_word_end)
            end = max(end, start)
            last_word_end = end
            words.append(replace(word, start=round(start, 3), end=round(end, 3)))
        text = result.text
        if piece.overlap_before or piece.overlap_after:
            if kept_segments or (result.segments and not result.words):
                text = join_text([s.text for s in kept_segments])
            elif result.words:
                text = join_text([w.word for w in result.words
                                  if _keeps(piece, w.start + offset, w.end + offset)])
            elif piece.overlap_before and texts:
                text = _drop_repeat(texts[-1], text)
        texts.append(text)
    results = [r for _, r in parts]
    last = parts[-1][0] if parts else None
    return TranscriptionResult(
        text=join_text(texts),
        language=next((r.language for r in results if r.language), None),
        duration=round(last.end / rate, 3) if last is not None and any(r.duration is not None for r in results)
        else None,
        task=results[0].task if results else "transcribe",
        segments=tuple(segments),
        words=tuple(words),
        logprobs=tuple(lp for r in results for lp in r.logprobs),
        usage=sum_usage([r.usage for r in results]),
    )


def sum_usage(usages: Sequence[Usage | None]) -> Usage | None:
    present = [u for u in usages if u is not None]
    if not present:
        return None

    def total(name: str) -> int | None:
        values = [getattr(u, name) for u in present if getattr(u, name) is not None]
        return sum(values) if values else None

    return Usage(
        type=present[0].type,
        input_tokens=total("input_tokens"),
        output_tokens=total("output_tokens"),
        total_tokens=total("total_tokens"),
        text_tokens=total("text_tokens"),
        audio_tokens=total("audio_tokens"),
        seconds=total("seconds"),
    )
