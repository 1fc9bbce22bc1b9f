"""The response-format decision, in one place: what to ask a provider for, given what the client wants.

The provider is asked for the client's format when it renders it natively; otherwise for the richest thing
it gives that the gateway can render from (verbose_json with the timings needed, else json), and
``formats.render`` produces the client's format from the canonical result.

What a provider renders is first guessed from its declared capabilities (per model, from name patterns),
then corrected by its answers: an upstream that refuses the format it was asked for (``refused_formats``)
is asked again for one the gateway renders from, and the router remembers the refusal for a while
(``routing/learned.py``); ``without`` is what the capabilities become once a refusal is known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from bifrost_stt.gateway.render import formats
from bifrost_stt.kernel.canonical import DIARIZE_SWITCH, DIARIZED_FORMAT, TranscriptionRequest
from bifrost_stt.kernel.capabilities import Capabilities
from bifrost_stt.kernel.errors import ClientError, GatewayError

# What formats.render produces from a json / verbose_json answer alone: a refusal of one of these can be worked
# around by asking for another. (A format needing more, such as speaker labels, is not in this set.)
RENDERABLE = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
_FORMAT_NAMES = re.compile(r"\b(" + "|".join(sorted(RENDERABLE, key=len, reverse=True)) + r")\b")


def check_timings(caps: Capabilities, request: TranscriptionRequest, provider: str = "") -> None:
    """Timings a verbose_json client asked for by name (``timestamp_granularities``) that the provider cannot
    give are refused with a 400 naming them, rather than silently left out."""
    fmt = request.response_format
    asked = request.timestamp_granularities
    # segments can always be built from words (formats groups them), never words from segments
    has = {"word": caps.word_timestamps, "segment": caps.segment_timestamps or caps.word_timestamps}
    missing = [g for g in asked if not has.get(g, False)]
    if missing and fmt == "verbose_json":  # only verbose_json shows timings; other formats lose nothing
        raise ClientError(
            f"{provider or 'this provider'} cannot give {' or '.join(missing)} timestamps for model "
            f"{request.model!r}; drop timestamp_granularities={missing[0]} or use another provider/model",
            param="timestamp_granularities", code="unsupported_parameter",
        )


def ask_provider(caps: Capabilities, request: TranscriptionRequest, provider: str = "") -> TranscriptionRequest:
    """Ask the provider for what it can give; the gateway renders the rest (``formats.render``).

    Raises the 400 of ``check_timings`` for timings it cannot give.
    """
    check_timings(caps, request, provider)
    fmt = request.response_format
    asked = request.timestamp_granularities
    if fmt in caps.native_formats:
        return request
    if fmt == DIARIZED_FORMAT:  # speakers come on the words and segments of a rich answer
        check_diarization(caps, request, provider)
        timings = tuple(g for g, able in (("segment", caps.segment_timestamps), ("word", caps.word_timestamps)) if able)
        extra = request.extra if any(n == DIARIZE_SWITCH[0] for n, _ in request.extra) else (*request.extra, DIARIZE_SWITCH)
        rich = "verbose_json" if "verbose_json" in caps.native_formats else "json"
        return replace(request, response_format=rich, timestamp_granularities=timings, extra=extra)
    if "verbose_json" in caps.native_formats and formats.needs_rich(fmt, asked):
        grans: tuple[str, ...] = ()
        if caps.segment_timestamps:
            grans += ("segment",)
        if caps.word_timestamps and ("word" in asked or not caps.segment_timestamps):
            grans += ("word",)
        return replace(request, response_format="verbose_json", timestamp_granularities=grans)
    return replace(request, response_format="json", timestamp_granularities=())


def check_diarization(caps: Capabilities, request: TranscriptionRequest, provider: str) -> None:
    """response_format=diarized_json for a target that cannot label speakers is a 400 naming the format."""
    if request.response_format == DIARIZED_FORMAT and not caps.diarization:
        raise ClientError(
            f"{provider} cannot label speakers for model {request.model!r}, so response_format=diarized_json "
            "cannot be served; use a provider/model that diarizes (the diarization column of "
            "`bifrost-stt capabilities`) or another format",
            param="response_format", code="unsupported_response_format",
        )


def for_synthesized_stream(caps: Capabilities, request: TranscriptionRequest, provider: str = "") -> TranscriptionRequest:
    """A non-streamed request whose answer the gateway turns into stream events (segments become deltas)."""
    rich = "verbose_json" if "verbose_json" in caps.native_formats else "json"
    wire = replace(request, stream=False, response_format=rich, timestamp_granularities=())
    return ask_provider(caps, wire, provider)


def for_stream(caps: Capabilities, request: TranscriptionRequest, provider: str = "") -> TranscriptionRequest:
    """A stream request (``stream=true``) in a format the gateway can also stream from should the upstream
    answer JSON instead of events: what ``for_synthesized_stream`` asks for. Events carry the transcript
    only, so the client's format and timestamp_granularities do not shape a stream."""
    return replace(for_synthesized_stream(caps, request, provider), stream=True)


def refused_formats(err: GatewayError, asked: str | None) -> frozenset[str] | None:
    """The formats an upstream's answer rules out, or None when it is not a refusal of the format ``asked``
    that the gateway can work around by asking for another (json is the floor: never worked around).

    A refusal is a 400 about ``response_format`` (its param or its message). When the message names what
    the model takes (OpenAI: "Use 'json' or 'text' instead"; Groq: "must be one of [json text
    verbose_json]"), every other format is ruled out at once, so the next ask goes straight to one it takes.
    """
    fmt = asked or "json"
    if err.status != 400 or fmt == "json" or fmt not in RENDERABLE:
        return None
    if err.param != "response_format" and "response_format" not in err.message:
        return None
    named = set(_FORMAT_NAMES.findall(err.message)) - {fmt}
    ruled_out = (RENDERABLE - named) if named else {fmt}
    return frozenset(ruled_out - {"json"})


STREAM = "stream"  # noted with the refused formats when a model refuses ``stream=true`` itself
_STREAM_WORD = re.compile(r"\bstream\b")


def refused_stream(err: GatewayError) -> bool:
    """Whether an answer to a stream request refuses the ``stream`` field itself (a 400 naming it: a server
    that takes no such argument), rather than the format or anything else; the gateway then streams."""
    if err.status != 400 or err.param == "response_format":
        return False
    return err.param == STREAM or bool(_STREAM_WORD.search(err.message))


def without(caps: Capabilities, refused: Iterable[str]) -> Capabilities:
    """``caps`` once the ``refused`` formats are known: a model that refuses verbose_json gives no timings
    either (they only come with it)."""
    out = frozenset(refused)
    timed = "verbose_json" not in out
    if not out & caps.native_formats and timed:
        return caps
    return replace(
        caps,
        native_formats=caps.native_formats - out,
        word_timestamps=caps.word_timestamps and timed,
        segment_timestamps=caps.segment_timestamps and timed,
    )
