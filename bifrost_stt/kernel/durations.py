"""Durations as upstream Bifrost writes them: a number of seconds (``300``, ``1.5``) or a Go duration
(``5m``, ``1h30m``, ``500ms``). Used by the config file and by per-request headers alike."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds for ``text``; ``ValueError`` (with a message fit for a client) when it is neither form."""
    value = text.strip()
    if _NUMBER.fullmatch(value):
        seconds = float(value)
    else:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise ValueError(f"{text!r} is neither a number of seconds nor a duration such as 5m, 1h30m or 500ms")
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite duration")
    return seconds
