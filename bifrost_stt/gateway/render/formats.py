"""Render a canonical TranscriptionResult into every response format of the contract.

Upstream only passes formats through, so a provider without srt/vtt (Groq, ElevenLabs, Deepgram,
Gemini) cannot answer them. The gateway asks such providers for timings instead and renders here.

Subtitle decisions (kept in the constants below):
- cues come from segments, else from words grouped into cues, else one untimed cue for the whole text;
- a cue holds at most ``MAX_LINES`` lines of ``LINE_WIDTH`` display columns (combining marks count 0,
  East Asian wide characters and emoji count 2); longer text is split into more cues whose times are
  shared in proportion to their width;
- word cues also break after sentence-ending punctuation, at pauses over ``MAX_PAUSE`` seconds and
  before exceeding ``MAX_CUE_SECONDS`` seconds;
- every cue, the last included, ends with a blank line (``"...text\\n\\n"``), as OpenAI's and
  openai/whisper's writers do; timestamps round half-up to the millisecond, never go negative, never
  end before they start, and hours do not wrap (``100:00:00,000`` is valid);
- ``-->`` inside cue text becomes ``->`` (as openai/whisper does) so a cue cannot fake a timing line.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from bifrost_stt.kernel.canonical import Logprob, Segment, StreamDelta, StreamDone, TranscriptionResult, Usage, Word
from bifrost_stt.gateway.render.diarized import diarized_body

LINE_WIDTH = 42  # display columns per subtitle line (broadcast guideline, Netflix/BBC use 37–42)
MAX_LINES = 2
MAX_PAUSE = 1.0  # seconds of silence between words that start a new cue
MAX_CUE_SECONDS = 7.0
STREAM_CHUNK = 80  # characters: a synthesized stream splits longer sentences at spaces

RICH_FORMATS = frozenset({"srt", "vtt", "verbose_json"})
_SENTENCE_END = ".!?。！？…"
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


# --- public API ---------------------------------------------------------------------------------


def render(
    result: TranscriptionResult, response_format: str, *, granularities: Sequence[str] = ()
) -> dict[str, Any] | str:
    """The body for ``response_format``: a dict for the JSON formats, a str for text/srt/vtt.

    A provider's own rendering of the same format is returned unchanged: it is what the client
    would have got from that provider directly, and re-rendering could only lose detail. JSON bodies
    also keep the keys the provider sent that the canonical type does not name (``result.extra``), so
    a native json/verbose_json answer reaches the client with every key and value it had.
    """
    if result.native is not None and result.native_format == response_format:
        return result.native
    if response_format == "json":
        return _with_extra(_json_body(result), result)
    if response_format == "verbose_json":
        return _with_extra(_verbose_json_body(result, granularities), result)
    if response_format == "diarized_json":
        body = diarized_body(result, _duration(result))
        if result.usage is not None:
            body["usage"] = usage_dict(result.usage)
        return body
    if response_format == "text":
        return result.text
    if response_format == "srt":
        return render_srt(build_cues(result))
    if response_format == "vtt":
        return render_vtt(build_cues(result))
    raise ValueError(f"unknown response_format {response_format!r}")


def needs_rich(response_format: str, granularities: Sequence[str] = ()) -> bool:
    """Whether the provider must be asked for timings (verbose_json) to render this format.

    srt/vtt need cue timings and verbose_json needs segments (its default) or words; json and text
    need only the transcript. ``granularities`` only refine which timings, never whether.
    """
    return response_format in RICH_FORMATS


def usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    """The contract's usage object, None fields omitted (shared by JSON bodies and the SSE done event)."""
    if usage is None:
        return None
    out: dict[str, Any] = {"type": usage.type}
    if usage.input_tokens is not None:
        out["input_tokens"] = usage.input_tokens
    details = {
        k: v
        for k, v in (("text_tokens", usage.text_tokens), ("audio_tokens", usage.audio_tokens))
        if v is not None
    }
    if details:
        out["input_token_details"] = details
    for name in ("output_tokens", "total_tokens", "seconds"):
        value = getattr(usage, name)
        if value is not None:
            out[name] = value
    return out


def synthesize_stream(result: TranscriptionResult) -> Iterator[StreamDelta | StreamDone]:
    """Deltas for a provider that cannot stream, then the done event.

    Deltas are slices of ``result.text`` (one per segment when the segments can be found in it in
    order, else per sentence, long sentences cut at spaces), so concatenating them gives the text
    exactly, whatever spacing the provider put in its segments.
    """
    text, segments = _transcript(result)
    for piece in _stream_pieces(text, segments):
        yield StreamDelta(delta=piece)
    yield StreamDone(text=text, usage=result.usage, logprobs=result.logprobs)


def _transcript(result: TranscriptionResult) -> tuple[str, Sequence[Segment]]:
    """The plain transcript and its segments, also when the provider answered with subtitles or text.

    A stream carries the transcript, never SRT/VTT markup: a native subtitle body is parsed back into
    segments, and a native text body loses the newline vendors end it with.
    """
    if result.native is not None and result.native_format in ("srt", "vtt"):
        segments = parse_subtitles(result.native)
        return " ".join(s.text for s in segments if s.text), segments
    if result.native is not None and result.native_format == "text":
        return result.text.strip(), result.segments
    return result.text, result.segments


# --- JSON bodies --------------------------------------------------------------------------------


def _with_extra(body: dict[str, Any], result: TranscriptionResult) -> dict[str, Any]:
    """The provider's own additional keys after ours; never one of ours overwritten."""
    for key, value in result.extra.items():
        body.setdefault(key, value)
    return body


def _logprob_dict(lp: Logprob) -> dict[str, Any]:
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)}


def _json_body(result: TranscriptionResult) -> dict[str, Any]:
    return _with_logprobs_and_usage({"text": result.text}, result)


def _with_logprobs_and_usage(body: dict[str, Any], result: TranscriptionResult) -> dict[str, Any]:
    """The tail json and verbose_json share: logprobs and usage, each only when present."""
    if result.logprobs:
        body["logprobs"] = [_logprob_dict(lp) for lp in result.logprobs]
    usage = usage_dict(result.usage)
    if usage is not None:
        body["usage"] = usage
    return body


def _segment_dict(seg: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": seg.id,
        "seek": seg.seek,
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "tokens": list(seg.tokens),
    }
    for name in ("temperature", "avg_logprob", "compression_ratio", "no_speech_prob"):
        value = getattr(seg, name)
        if value is not None:
            out[name] = value
    return out


def _duration(result: TranscriptionResult) -> float:
    if result.duration is not None:
        return result.duration
    ends = [s.end for s in result.segments] + [w.end for w in result.words]
    return max(ends, default=0.0)


def _verbose_json_body(result: TranscriptionResult, granularities: Sequence[str]) -> dict[str, Any]:
    """OpenAI's verbose_json: segments by default, words only when asked for.

    When segments are asked for but the provider gave only words, segments are built from the same
    word groups the subtitle cues use, so the client still gets sentence-level timings.
    """
    body: dict[str, Any] = {
        "task": result.task,
        "language": result.language or "",
        "duration": _duration(result),
        "text": result.text,
    }
    if not granularities or "segment" in granularities:
        segments = result.segments or tuple(
            Segment(id=i, start=start, end=end, text=text)
            for i, (start, end, text) in enumerate(_word_groups(result.words))
        )
        if segments:
            body["segments"] = [_segment_dict(s) for s in segments]
    if "word" in granularities and result.words:
        body["words"] = [
            {"word": w.word, "start": w.start, "end": w.end, **({"speaker": w.speaker} if w.speaker is not None else {})}
            for w in result.words
        ]
    return _with_logprobs_and_usage(body, result)


# --- display width and wrapping -------------------------------------------------------------------


@functools.cache
def _char_width(c: str) -> int:
    if unicodedata.category(c) in ("Mn", "Me", "Cf"):  # combining marks, ZWJ, direction marks
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def width(text: str) -> int:
    """Display columns: what a subtitle line's length means to a reader, not bytes or code points."""
    return len(text) if text.isascii() else sum(map(_char_width, text))


def _clusters(token: str) -> list[str]:
    """Split a token where a line may break without tearing a character from its marks or ZWJ partner."""
    out: list[str] = []
    for c in token:
        if out and (_char_width(c) == 0 or out[-1].endswith(_ZWJ) or 0x1F3FB <= ord(c) <= 0x1F3FF):
            out[-1] += c
        else:
            out.append(c)
    return out


def _units(text: str) -> list[tuple[str, str]]:
    """(separator, piece) pairs: words joined by a space; over-long tokens (CJK runs, which have
    no spaces) split after their punctuation, then into characters, and joined by nothing."""
    units: list[tuple[str, str]] = []
    for token in text.split():
        if width(token) <= LINE_WIDTH:
            units.append((" ", token))
            continue
        parts = [p for p in re.split(r"(?<=[，。、！？；：,.!?;:])", token) if p]
        pieces = [q for p in parts for q in ([p] if width(p) <= LINE_WIDTH else _clusters(p))]
        units.extend((" " if i == 0 else "", q) for i, q in enumerate(pieces))
    return units


def _join(units: Sequence[tuple[str, str]]) -> str:
    return "".join(sep + piece for sep, piece in units).lstrip(" ")


def _balance(units: list[tuple[str, str]], widths: list[int]) -> list[str]:
    """Two lines (MAX_LINES) with the most even widths: fewer ragged cues than a greedy fill."""
    total = sum(widths) + sum(len(sep) for sep, _ in units[1:])
    if total <= LINE_WIDTH:
        return [_join(units)]
    best, best_k, left = total, 1, 0
    for k in range(1, len(units)):
        left += widths[k - 1] + (len(units[k - 1][0]) if k > 1 else 0)
        worst = max(left, total - left - len(units[k][0]))
        if worst < best:
            best, best_k = worst, k
    return [_join(units[:best_k]), _join(units[best_k:])]


def wrap(text: str) -> list[list[str]]:
    """Text as cues' line lists: lines of at most LINE_WIDTH columns, at most MAX_LINES per cue."""
    units = _units(text.replace("-->", "->"))
    widths = [width(piece) for _, piece in units]
    starts: list[int] = []  # index of each line's first unit (greedy fill)
    used = 0
    for i, (sep, _) in enumerate(units):
        if starts and used + len(sep) + widths[i] <= LINE_WIDTH:
            used += len(sep) + widths[i]
        else:
            starts.append(i)
            used = widths[i]
    bounds = [*starts[::MAX_LINES], len(units)]
    return [_balance(units[a:b], widths[a:b]) for a, b in zip(bounds, bounds[1:])]


def _timed_cues(start: float, end: float, text: str) -> list[Cue]:
    """One cue, or several sharing [start, end] in proportion to their width when text is long."""
    chunks = wrap(text)
    end = max(end, start)
    weights = [max(1, sum(width(line) for line in chunk)) for chunk in chunks]
    total, done = sum(weights), 0
    cues: list[Cue] = []
    for chunk, weight in zip(chunks, weights, strict=True):
        a = start + (end - start) * done / total
        done += weight
        cues.append(Cue(a, start + (end - start) * done / total, tuple(chunk)))
    return cues


# --- cues -----------------------------------------------------------------------------------------


def _word_sep(prev: str, word: str) -> str:
    """Space between words, except around CJK (no spaces) and before detached punctuation."""
    if width(prev[-1:]) == 2 or width(word[:1]) == 2 or word[:1] in ",.;:!?%)]}、。，！？":
        return ""
    return " "


def _word_groups(words: Sequence[Word]) -> list[tuple[float, float, str]]:
    """Words grouped into (start, end, text) cues; see the module docstring for the break rules."""
    groups: list[tuple[float, float, str]] = []
    start = end = 0.0
    text = ""
    for w in words:
        word = w.word.strip()
        if not word:
            continue
        if text:
            joined = text + _word_sep(text, word) + word
            if (
                text.rstrip("\"'”’»)")[-1:] in tuple(_SENTENCE_END)
                or w.start - end > MAX_PAUSE
                or w.end - start > MAX_CUE_SECONDS
                or (width(joined) > LINE_WIDTH and len(wrap(joined)) > 1)
            ):
                groups.append((start, end, text))
                text = ""
            else:
                text, end = joined, max(end, w.end)
                continue
        start, end, text = w.start, max(w.start, w.end), word
    if text:
        groups.append((start, end, text))
    return groups


def build_cues(result: TranscriptionResult) -> list[Cue]:
    """Subtitle cues from segments, else words, else one untimed cue spanning the known duration."""
    if result.segments:
        spans = [(s.start, s.end, s.text) for s in result.segments]
    elif result.words and any(w.word.strip() for w in result.words):
        spans = _word_groups(result.words)
    else:
        spans = [(0.0, result.duration or 0.0, result.text)]
    return [cue for start, end, text in spans if text.strip() for cue in _timed_cues(start, end, text)]


def _millis(seconds: float) -> int:
    """Whole milliseconds, half-up on the decimal value (0.9995 → 1000, not float's 999.4999…)."""
    try:
        ms = Decimal(repr(float(seconds))) * 1000
        return max(0, int(ms.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
    except (InvalidOperation, ValueError, OverflowError):  # nan / inf
        return 0


def _format_ms(ms: int, sep: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_timestamp(seconds: float, sep: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or with ``sep="."`` (VTT); hours grow past 99 instead of wrapping."""
    return _format_ms(_millis(seconds), sep)


def _timing(cue: Cue, sep: str) -> str:
    start = _millis(cue.start)
    end = max(start, _millis(cue.end))  # rounding must never put the end before the start
    return f"{_format_ms(start, sep)} --> {_format_ms(end, sep)}"


def render_srt(cues: Sequence[Cue]) -> str:
    """SubRip: numbered cues from 1, each followed by a blank line; no cues → empty string."""
    return "".join(
        f"{i}\n{_timing(c, ',')}\n" + "\n".join(c.lines) + "\n\n" for i, c in enumerate(cues, 1)
    )


def render_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT: the header and a blank line, then unnumbered cues each followed by a blank line."""
    return "WEBVTT\n\n" + "".join(f"{_timing(c, '.')}\n" + "\n".join(c.lines) + "\n\n" for c in cues)


# --- parsing a provider's native subtitles ------------------------------------------------------

_STAMP = r"((?:\d+:)?\d{1,2}:\d{2}[,.]\d{1,3})"
_TIMING = re.compile(rf"{_STAMP}\s*-->\s*{_STAMP}")


def _seconds(stamp: str) -> float:
    total = 0.0
    for part in stamp.replace(",", ".").split(":"):
        total = total * 60 + float(part)
    return total


def parse_subtitles(text: str) -> list[Segment]:
    """Segments from SRT or WebVTT text (cue numbers, header, NOTE blocks and settings ignored)."""
    segments: list[Segment] = []
    for block in re.split(r"\r?\n\s*\r?\n", text):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            match = _TIMING.search(line)
            if match:
                body = " ".join(part.strip() for part in lines[i + 1 :] if part.strip())
                start, end = _seconds(match[1]), _seconds(match[2])
                segments.append(Segment(id=len(segments), start=start, end=end, text=body))
                break
    return segments


parse_srt = parse_vtt = parse_subtitles


# --- synthesized streaming ------------------------------------------------------------------------


def _sentence_pieces(text: str) -> list[str]:
    """Slices of text ending after sentence punctuation and its spaces; long ones cut after a space."""
    pieces: list[str] = []
    for sentence in re.findall(rf"[^{_SENTENCE_END}]*[{_SENTENCE_END}]*\s*", text):
        while len(sentence) > STREAM_CHUNK:
            cut = sentence.rfind(" ", 0, STREAM_CHUNK) + 1 or STREAM_CHUNK
            pieces.append(sentence[:cut])
            sentence = sentence[cut:]
        if sentence:
            pieces.append(sentence)
    return pieces


def _stream_pieces(text: str, segments: Sequence[Segment]) -> list[str]:
    pieces: list[str] = []
    cursor = 0
    for seg in segments:
        needle = seg.text.strip()
        at = text.find(needle, cursor) if needle else -1
        if at < 0:
            if needle:
                break  # segments disagree with the text: fall back to sentences for the rest
            continue
        pieces.append(text[cursor : at + len(needle)])
        cursor = at + len(needle)
    rest = text[cursor:]
    if pieces and not rest.strip():
        pieces[-1] += rest
    else:
        pieces.extend(_sentence_pieces(rest))
    return [p for p in pieces if p]
