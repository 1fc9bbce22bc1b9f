"""One piece of a split request: which samples it sends and which of what it hears it keeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    start: int  # first sample sent
    end: int  # one past the last sample sent
    keep_from: float  # seconds in the whole file: what the piece heard before this belongs to the previous one
    keep_to: float  # seconds: what it heard from here on belongs to the next one
    overlap_before: bool = False
    overlap_after: bool = False

    def offset(self, rate: int) -> float:
        return self.start / rate

    def span(self, rate: int) -> str:
        """``12:00.0–24:31.5``, for errors and logs."""
        return f"{clock(self.start / rate)}–{clock(self.end / rate)}"


def clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"
