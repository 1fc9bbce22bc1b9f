"""Where to cut: pieces no longer than a target allows, each cut at the quietest stretch before its limit.

For each cut the planner looks at a search window around the piece's planned end (never past its limit:
before it, when the piece is planned at its longest) and measures the
signal energy (RMS) of every 100 ms stretch in it, 10 ms apart. The cut lands in the middle of the longest
run of stretches as quiet as the quietest one, so in a pause between words, never in loud audio while a
quieter stretch exists in the window (music, tones and noise count as audio: energy, not a voice detector,
decides); of several such pauses, the one nearest the planned end. When even the quietest stretch is loud (no pause in the whole window: a tone, continuous noise,
fast speech), the two pieces overlap by ``overlap`` seconds around the cut, and the stitcher keeps each
word once, from the piece whose half of the overlap holds its middle (``Piece.keep_from`` / ``keep_to``).

Pieces are planned evenly: the audio is divided into as many pieces as its limits require, or more (up to
``parallel``, none shorter than ``min_piece``) so that they can be transcribed at the same time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bifrost_stt.gateway.longaudio.piece import Piece

STRETCH = 0.1  # seconds over which energy is measured
HOP = 0.01  # seconds between measured stretches
SILENT_DBFS = -50.0  # quieter than this is a pause, whatever the rest sounds like
QUIET_BELOW_MEDIAN_DB = 20.0  # or this much quieter than the window's median stretch
TIE_DB = 1.0  # stretches within this of the quietest are as good as it

Reader = Callable[[int, int], "np.ndarray[Any, np.dtype[np.int16]]"]


@dataclass(frozen=True, slots=True)
class Cut:
    at: int  # sample
    quiet: bool  # False: no pause found, the neighbours overlap around it


def quietest(samples: np.ndarray[Any, np.dtype[np.int16]], rate: int, aim: int | None = None) -> Cut:
    """The middle of a run of the quietest 100 ms stretches in ``samples`` (offset from its start).

    Runs at least half as long as the longest one are candidates (a real pause, not a dip between two
    syllables); of those, the one nearest ``aim`` (an offset; default the end) wins.
    """
    width, hop = max(1, int(STRETCH * rate)), max(1, int(HOP * rate))
    if len(samples) <= width:
        return Cut(len(samples) // 2, quiet=False)
    squares = np.concatenate(([0.0], np.cumsum(samples.astype(np.float64) ** 2)))
    starts = np.arange(0, len(samples) - width + 1, hop)
    rms = np.sqrt((squares[starts + width] - squares[starts]) / width)
    floor = float(rms.min())
    good = rms <= floor * 10 ** (TIE_DB / 20) + 1.0  # +1: digital silence ties with itself exactly
    runs: list[tuple[int, int]] = []  # (first stretch, length)
    for i, ok in enumerate(good):
        if ok and runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        elif ok:
            runs.append((i, 1))
    longest = max(length for _, length in runs)
    target = len(samples) if aim is None else aim
    middles = [int(starts[first + length // 2]) + width // 2 for first, length in runs if length * 2 >= longest]
    middle = min(middles, key=lambda m: abs(m - target))
    level = 20 * math.log10(max(floor, 1e-9) / 32768)
    median = float(np.median(rms))
    quiet = level <= SILENT_DBFS or floor <= median * 10 ** (-QUIET_BELOW_MEDIAN_DB / 20)
    return Cut(middle, quiet=quiet)


def plan(
    total: int,
    rate: int,
    read: Reader,
    *,
    max_piece: float,
    parallel: int,
    min_piece: float,
    window: float,
    overlap: float,
) -> list[Piece]:
    """Pieces covering ``[0, total)`` samples, none longer than ``max_piece`` seconds (overlap included)."""
    limit = int(max_piece * rate)
    if limit <= int(overlap * rate) * 2:
        raise ValueError(f"pieces of at most {max_piece:g} s cannot hold a {overlap:g} s overlap")
    count = max(math.ceil(total / limit), min(parallel, int(total / (min_piece * rate))), 1)
    half = int(overlap * rate / 2)
    pieces: list[Piece] = []
    start, keep_from, overlap_before = 0, 0.0, False
    while True:
        left = count - len(pieces)
        if left <= 1 and total - start <= limit:
            pieces.append(Piece(len(pieces), start, total, keep_from, total / rate, overlap_before, False))
            return pieces
        left = max(left, math.ceil((total - start) / limit))  # an earlier cut came early: plan one more
        hard = start + limit - half  # the cut furthest out that still keeps this piece under the limit
        ideal = min(start + (total - start) // left, hard)
        span = int(min(window * rate, (ideal - start) / 2))
        hi = min(hard, ideal + span // 2)  # around the even split, never past the limit
        lo = max(start + 1, hi - span)
        cut = quietest(read(lo, hi - lo), rate, aim=ideal - lo)
        at = lo + cut.at
        end = at if cut.quiet else at + half
        pieces.append(Piece(len(pieces), start, end, keep_from, at / rate, overlap_before, not cut.quiet))
        start = at if cut.quiet else at - half
        keep_from, overlap_before = at / rate, not cut.quiet
