"""Reset durations ("30s", "5m", "1h", "1d", "1w", "1M", "1Q", "1Y") and the counter window a moment falls in.

Windows are fixed and aligned, so every instance computes the same window for the same moment without
talking to the others: seconds to weeks from the Unix epoch (weeks start on Monday), months, quarters and
years on the UTC calendar. A counter's key carries its window's start; a new window is a new counter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

_DURATION = re.compile(r"^\s*([1-9][0-9]{0,8})\s*(s|m|h|d|w|M|Q|Y)\s*$")
_FIXED = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MONDAY = 4 * 86400  # 1970-01-01 was a Thursday: shifting by four days starts weeks on Monday


class DurationError(ValueError):
    pass


@lru_cache(maxsize=256)
def parse(text: str) -> tuple[int, str]:
    """``"1h"`` → ``(1, "h")``. Raises ``DurationError`` naming the accepted forms."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise DurationError(
            f"{text!r} is not a reset duration; use a count (1 to 999999999) and one of s m h d w M Q Y (e.g. 1h, 1M)"
        )
    return int(match.group(1)), match.group(2)


def window(text: str, now: float) -> tuple[int, int]:
    """The window ``[start, end)`` (epoch seconds) of duration ``text`` that contains ``now``."""
    count, unit = parse(text)
    if unit in _FIXED:
        size = count * _FIXED[unit]
        offset = _MONDAY if unit == "w" else 0
        start = int((now - offset) // size) * size + offset
        return start, start + size
    months = count * {"M": 1, "Q": 3, "Y": 12}[unit]
    moment = datetime.fromtimestamp(now, UTC)
    index = moment.year * 12 + moment.month - 1
    first = max(index - index % months, _EPOCH_MONTH)  # a window longer than the calendar starts in 1970
    return _month_start(first), _month_start(min(first + months, _LAST_MONTH))


_EPOCH_MONTH = 1970 * 12
_LAST_MONTH = 9999 * 12 + 11  # datetime's last month: windows that would end later end there


def _month_start(index: int) -> int:
    return int(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp())


def describe(text: str) -> str:
    """``"1h"`` → ``"1h"`` as upstream words it in messages ("resets every 1h")."""
    count, unit = parse(text)
    return f"{count}{unit}"
