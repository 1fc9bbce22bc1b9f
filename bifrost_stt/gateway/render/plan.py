"""The response-format decision, in one place: what to ask a provider for, given what the client wants.

The provider is asked for the client's format when it renders it natively; otherwise for the richest thing
it gives that the gateway can render from (verbose_json with the timings needed, else json), and
``formats.render`` produces the client's format from the canonical result.
"""

from __future__ import annotations

from dataclasses import replace

from bifrost_stt.gateway.render import formats
from bifrost_stt.kernel.canonical import DIARIZE_SWITCH, DIARIZED_FORMAT, TranscriptionRequest
from bifrost_stt.kernel.capabilities import Capabilities
from bifrost_stt.kernel.errors import ClientError


def ask_provider(caps: Capabilities, request: TranscriptionRequest, provider: str = "") -> TranscriptionRequest:
    """Ask the provider for what it can give; the gateway renders the rest (``formats.render``).

    Timings a verbose_json client asked for by name (``timestamp_granularities``) that the provider cannot
    give are refused with a 400 naming them, rather than silently left out.
    """
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


def for_synthesized_stream(caps: Capabilities, request: TranscriptionRequest) -> TranscriptionRequest:
    """A non-streamed request whose answer the gateway turns into stream events (segments become deltas)."""
    rich = "verbose_json" if "verbose_json" in caps.native_formats else "json"
    wire = replace(request, stream=False, response_format=rich, timestamp_granularities=())
    return ask_provider(caps, wire)
