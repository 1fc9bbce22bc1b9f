"""Long audio: when a target cannot take a request's audio whole, serve it in pieces and stitch the answer.

    router.transcribe(request) ── LongAudio.prepare(request, targets) ── None: send it whole, as always
                                        │ over the primary's bytes or duration
                                        ▼
                         probe + decode once (probe.py) ── plan cuts (cuts.py)
                                        ▼
           pieces, at most max_parallel_chunks at once: encode (encode.py) → the router's whole-request path
           (admission, keys, retries, fallbacks) → canonical result
                                        ▼
                              stitch.py: one result, as if the provider had heard the whole file

Pieces are sized to fit every configured target of the request (primary and fallbacks), so a piece may fall
back like any request. The first piece that still fails fails the request, its error naming the piece and its
time range; the other pieces are cancelled. Nothing partial is ever returned.

Cost on the request path: a request whose primary declares no duration cap and whose file is within its byte
limit pays nothing. A target with a duration cap (gpt-4o-transcribe, vLLM) costs a header probe per request
(about a millisecond); a container that does not declare its duration (a browser's WebM) is decoded to learn it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from bifrost_stt.gateway.longaudio.piece import Piece
from bifrost_stt.gateway.longaudio.stitch import join_text, stitch, sum_usage
from bifrost_stt.kernel import progress, record
from bifrost_stt.kernel.duration import readable
from bifrost_stt.kernel.capabilities import Capabilities
from bifrost_stt.kernel.canonical import (
    DIARIZED_FORMAT,
    BytesAudio,
    FileAudio,
    StreamDelta,
    StreamDone,
    StreamEvent,
    TranscriptionRequest,
    TranscriptionResult,
)
from bifrost_stt.kernel.errors import GatewayError, Overloaded, PayloadTooLarge
from bifrost_stt.kernel.settings import LongAudioConfig

if TYPE_CHECKING:  # PyAV and numpy (~30 MB resident) are imported on first use, not with the gateway
    from bifrost_stt.gateway.longaudio.probe import Pcm

log = logging.getLogger("bifrost_stt.longaudio")
S = TypeVar("S")
T = TypeVar("T")
DURATION_MARGIN = 0.95  # a piece is at most this share of a duration cap (caps are approximate: "~1,400 s")
PROMPT_TAIL_CHARS = 200


@dataclass(frozen=True, slots=True)
class Target:
    """What one target of a request (primary or fallback) accepts; None: no limit declared."""

    provider: str
    model: str
    max_bytes: int | None
    max_seconds: float | None


def _target(provider: str, model: str, caps: Capabilities) -> Target:
    limit = caps.max_file_mb * 1024 * 1024 if caps.max_file_mb is not None else None
    return Target(provider, model, limit, caps.max_duration_s)


Call = Callable[[TranscriptionRequest], Awaitable[tuple[TranscriptionResult, S]]]


class LongAudio:
    def __init__(self, config: LongAudioConfig, *, spool_dir: str | None = None) -> None:
        self.config = config
        self.spool_dir = spool_dir
        # Decoding and encoding are CPU work: a few threads of their own (not the loop's default executor),
        # as many as there are cores. More would not be faster, and each thread that runs FFmpeg keeps its
        # own malloc arena (several MB of resident memory apiece).
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                        thread_name_prefix="bifrost-stt-longaudio")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the long-audio threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def prepare(
        self, request: TranscriptionRequest, chain: Sequence[tuple[str, str, Capabilities | None]]
    ) -> Split | None:
        """A plan of pieces when the primary target cannot take the audio whole; else None.

        ``chain``: (provider, model, capabilities) of the primary and each fallback, capabilities None for
        a provider that is not configured (skipped; an unconfigured primary is the router's error to give).
        """
        if not self.config.enabled or not chain or chain[0][2] is None:
            return None
        targets = [_target(p, m, caps) for p, m, caps in chain if caps is not None]
        primary, audio = targets[0], request.audio
        too_big = primary.max_bytes is not None and audio.size > primary.max_bytes
        if not too_big and primary.max_seconds is None:
            return None
        if not isinstance(audio, (FileAudio, BytesAudio)):
            return None  # an AudioSource we cannot read blocking: sent whole, the provider decides
        from bifrost_stt.gateway.longaudio import probe  # PyAV: loaded by the first request that needs it

        source = readable(audio)
        if not too_big:
            try:
                seconds = await self.run(probe.duration, source)
            except probe.Undecodable:
                return None  # not audio PyAV knows: the provider decides, as for any request
            assert primary.max_seconds is not None
            if seconds is not None and seconds <= primary.max_seconds:
                return None
            source = readable(audio)
        try:
            pcm = await self.run(probe.decode, source, self.spool_dir, self.config.max_audio_seconds)
        except probe.TooLong:
            raise PayloadTooLarge(
                f"the audio is longer than the {self.config.max_audio_seconds:g} s this gateway splits "
                "(long_audio.max_audio_seconds)", param="file", code="audio_too_long",
            ) from None
        except probe.Undecodable as exc:
            if too_big:
                assert primary.max_bytes is not None
                raise PayloadTooLarge(
                    f"{primary.provider} accepts files up to {primary.max_bytes / 1048576:.0f} MB and this one is "
                    f"{audio.size / 1048576:.1f} MB; the gateway could not decode it to split it ({exc})",
                    param="file", code="file_too_large",
                ) from None
            return None
        except OSError as exc:
            raise _disk_error(exc, self.spool_dir) from None
        if not too_big and primary.max_seconds is not None and pcm.seconds <= primary.max_seconds:
            pcm.close()
            return None
        try:
            pieces = self._plan(pcm, targets)
        except BaseException:
            pcm.close()
            raise
        log.info("long audio: %.1f s (%d bytes) for %s/%s in %d pieces", pcm.seconds, audio.size,
                 primary.provider, primary.model, len(pieces))
        return Split(self, request, pcm, pieces)

    def _plan(self, pcm: Pcm, targets: Sequence[Target]) -> list[Piece]:
        from bifrost_stt.gateway.longaudio import encode
        from bifrost_stt.gateway.longaudio.cuts import plan

        cfg = self.config
        max_piece = math.inf
        for target in targets:
            if target.max_seconds is not None:
                max_piece = min(max_piece, target.max_seconds * DURATION_MARGIN)
            if target.max_bytes is not None:
                max_piece = min(max_piece, encode.max_seconds_for(target.max_bytes, cfg.piece_format, pcm.rate))
        if max_piece <= cfg.overlap_seconds * 3:
            raise PayloadTooLarge(
                f"{targets[0].provider} accepts pieces of at most {max_piece:.1f} s; too short to split this audio",
                param="file", code="file_too_large",
            )
        max_piece = min(max_piece, pcm.seconds + 1)
        return plan(pcm.samples, pcm.rate, pcm.read, max_piece=max_piece, parallel=cfg.max_parallel_chunks,
                    min_piece=cfg.min_piece_seconds, window=cfg.search_window_seconds, overlap=cfg.overlap_seconds)


def _disk_error(exc: OSError, spool_dir: str | None) -> GatewayError:
    """503 naming the spool directory (the decoded audio and pieces are unlinked files: nothing is left)."""
    return Overloaded(
        f"the gateway could not write the decoded audio to the spool directory "
        f"{spool_dir or tempfile.gettempdir()} ({exc.strerror or exc}); free space there or set client.spool_dir",
        code="spool_full",
    )


class Split:
    """One request's pieces; ``close`` frees the decoded audio (``async with`` does it)."""

    def __init__(self, owner: LongAudio, request: TranscriptionRequest, pcm: Pcm, pieces: list[Piece]) -> None:
        self._owner = owner
        self.request = request
        self.pcm = pcm
        self.pieces = pieces

    async def __aenter__(self) -> Split:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pcm.close()

    @property
    def parallel(self) -> int:
        return 1 if self._owner.config.carry_prompt else self._owner.config.max_parallel_chunks

    def _piece_request(self, piece: Piece, audio: FileAudio, previous: str | None) -> TranscriptionRequest:
        request = self.request
        prompt = request.prompt
        if previous:
            tail = previous[-PROMPT_TAIL_CHARS:]
            prompt = f"{prompt} {tail}" if prompt else tail
        # Timings let the pieces be placed in the file (and an overlap be heard once): the richest format the
        # target gives (plan_format downgrades it per target); granularities only when the client named them.
        # diarized_json stays itself: its speakers come from the target's own diarization.
        fmt = request.response_format if request.response_format == DIARIZED_FORMAT else "verbose_json"
        asked = request.timestamp_granularities if request.response_format == "verbose_json" else ()
        return replace(request, audio=audio, prompt=prompt, response_format=fmt,
                       timestamp_granularities=asked, stream=False, file_format=None)

    async def _one(self, piece: Piece, call: Call[S], previous: str | None) -> tuple[TranscriptionResult, S]:
        from bifrost_stt.gateway.longaudio import encode

        owner = self._owner
        try:
            audio = await owner.run(encode.encode, self.pcm, piece.start, piece.end,
                                            owner.config.piece_format, piece.index, owner.spool_dir)
        except OSError as exc:
            raise _disk_error(exc, owner.spool_dir) from None
        try:
            return await call(self._piece_request(piece, audio, previous))
        except GatewayError as err:
            err.message = (f"piece {piece.index + 1} of {len(self.pieces)} ({piece.span(self.pcm.rate)}) "
                           f"failed: {err.message}")
            err.args = (err.message,)
            raise
        finally:
            audio.close()

    async def results(self, call: Call[S]) -> AsyncGenerator[tuple[Piece, TranscriptionResult, S], None]:
        """Each piece's result in audio order, as soon as it and every piece before it are done.

        At most ``parallel`` pieces are encoded or in flight at once. The first failure (in audio order
        among those that failed) is raised after every other piece is cancelled.
        """
        total = len(self.pieces)
        current = record.current()
        if current is not None:
            current.pieces = total
        progress.report(0, total)
        if self.parallel == 1:
            previous: str | None = None
            for done, piece in enumerate(self.pieces, 1):
                carry = previous if self._owner.config.carry_prompt else None
                result, served = await self._one(piece, call, carry)
                previous = result.text
                progress.report(done, total)
                yield piece, result, served
            return
        slots = asyncio.Semaphore(self.parallel)
        finished = 0

        async def run(piece: Piece) -> tuple[TranscriptionResult, S]:
            nonlocal finished
            async with slots:
                outcome = await self._one(piece, call, None)
            finished += 1
            progress.report(finished, total)
            return outcome

        tasks = [asyncio.ensure_future(run(piece)) for piece in self.pieces]
        try:
            for piece, task in zip(self.pieces, tasks):
                while True:
                    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
                    if failed:
                        raise failed[0].exception()  # type: ignore[misc]
                    if task.done():
                        break
                    await asyncio.wait([t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED)
                result, served = task.result()
                yield piece, result, served
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def transcribe(self, call: Call[S]) -> tuple[TranscriptionResult, list[S]]:
        parts: list[tuple[Piece, TranscriptionResult]] = []
        served: list[S] = []
        async for piece, result, by in self.results(call):
            parts.append((piece, result))
            served.append(by)
        return stitch(parts, self.pcm.rate), served

    async def stream(self, call: Call[S]) -> tuple[AsyncIterator[StreamEvent], S]:
        """Deltas in audio order as pieces complete; returns once the first piece is done (its error, if
        any, is raised here, before a response is started) with the first piece's served."""
        results = self.results(call)
        try:
            first = await anext(results)
        except BaseException:
            await results.aclose()
            self.close()
            raise
        return _events(first, results, self.pcm.rate, self.close), first[2]


async def _events(
    first: tuple[Piece, TranscriptionResult, S],
    rest: AsyncGenerator[tuple[Piece, TranscriptionResult, S], None],
    rate: int,
    close: Callable[[], None],
) -> AsyncIterator[StreamEvent]:
    parts = [(first[0], first[1])]
    try:
        text = stitch(parts, rate).text
        if text:
            yield StreamDelta(text)
        async for piece, result, _ in rest:
            parts.append((piece, result))
            joined = stitch(parts, rate).text
            delta = joined[len(text):] if joined.startswith(text) else " " + join_text([result.text])
            text = joined
            if delta.strip():
                yield StreamDelta(delta)
        yield StreamDone(text=text, usage=sum_usage([r.usage for _, r in parts]))
    finally:
        try:
            await rest.aclose()
        finally:
            close()
