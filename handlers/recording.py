"""What the handlers tell the request's record: the request as asked, the answer as given.

A few lines at each call site; the record is ``None`` outside a recorded request (tests calling the
router directly), and then nothing happens. Never the audio, never a key.
"""

from __future__ import annotations

from typing import Any

from bifrost_stt.kernel.duration import audio_seconds, file_duration
from bifrost_stt.kernel.canonical import TranscriptionRequest, TranscriptionResult, Usage
from bifrost_stt.kernel.errors import GatewayError, envelope
from bifrost_stt.kernel.record import current


def note_request(request: TranscriptionRequest) -> None:
    record = current()
    if record is None:
        return
    record.requested_provider, record.requested_model = request.provider, request.model
    record.stream = request.stream
    params: dict[str, Any] = {"response_format": request.response_format}
    for name in ("language", "prompt", "temperature", "file_format"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    if request.timestamp_granularities:
        params["timestamp_granularities"] = list(request.timestamp_granularities)
    if request.fallbacks:
        params["fallbacks"] = list(request.fallbacks)
    record.params = params
    record.input_filename, record.input_bytes = request.audio.filename, request.audio.size
    if request.stream:
        # A stream's usage comes at its end, after the upload is released: read the file's length now.
        record.audio_seconds = file_duration(request.audio)


def note_result(request: TranscriptionRequest, result: TranscriptionResult) -> None:
    record = current()
    if record is None:
        return
    record.output_text = result.text
    record.audio_seconds = audio_seconds(result, audio=request.audio)


def note_stream_done(text: str, usage: Usage | None) -> None:
    record = current()
    if record is None:
        return
    record.output_text = text
    record.audio_seconds = audio_seconds(usage=usage, file_seconds=record.audio_seconds)


def note_stream_error(err: GatewayError) -> None:
    record = current()
    if record is not None:
        record.error = envelope(err)
