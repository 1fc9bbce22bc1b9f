"""What upstream answers taught the router about one provider's models, kept for a bounded time.

Providers declare what their models take from name patterns (``gpt-4o-transcribe``: json/text only). A name
the pattern misses (an Azure deployment named by its owner, ``eu-speech-main``; a model newer than the
pattern) is asked for a format it may refuse. The router then asks again for one the gateway renders from
and notes the refusal here, so the next request for that model goes straight to a format it takes.

One ``Learned`` per provider slot (so per configured provider id), keyed by the upstream model or
deployment actually called. Entries expire after ``ttl`` seconds (a redeployed model may take more
formats again) and at most ``size`` models are kept (least recently noted dropped first), so memory is
bounded whatever names clients send. Per process: each worker learns on its own (one extra upstream call
per worker and model at most, per ``ttl``). Cost per request: one dict lookup.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

TTL_SECONDS = 3600.0
MAX_MODELS = 512


class Learned:
    """A bounded TTL map: upstream model -> response formats it refused."""

    def __init__(
        self, *, ttl: float = TTL_SECONDS, size: int = MAX_MODELS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._size = max(1, size)
        self._clock = clock
        self._refused: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._refused)

    def refused(self, model: str) -> frozenset[str]:
        """The formats ``model`` refused within the last ``ttl`` seconds (empty when none or expired)."""
        entry = self._refused.get(model)
        if entry is None:
            return frozenset()
        expires, formats = entry
        if self._clock() >= expires:
            del self._refused[model]
            return frozenset()
        return formats

    def refuse(self, model: str, formats: Iterable[str]) -> frozenset[str]:
        """Note that ``model`` refused ``formats`` (added to what it refused before); returns all it refused."""
        known = self.refused(model) | frozenset(formats)
        self._refused[model] = (self._clock() + self._ttl, known)
        self._refused.move_to_end(model)
        while len(self._refused) > self._size:
            self._refused.popitem(last=False)
        return known
