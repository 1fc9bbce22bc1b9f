"""Process-wide event counters for what the gateway sheds or refuses on its own (no metrics library here).

    count("connections_shed")        one more
    snapshot() -> {"connections_shed": 3, ...}

The names in use: ``connections_shed`` (over server.max_connections), ``connections_timed_out`` (headers or
body too slow), ``spool_full`` (an upload hit a full disk), ``job_store_full`` (the async job store could not
write). A metrics exporter (gateway/observe) reads ``snapshot()``; until one exists the counts are only
visible there and in the log lines that accompany every increment. Cost: one dict update per event.
"""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def count(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] += n


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)
