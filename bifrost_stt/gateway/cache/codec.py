"""A cache entry's payload: the canonical answer and who gave it, as JSON bytes (readable in Redis too).

The canonical ``TranscriptionResult`` is stored rather than a rendered body, so one entry serves every route
(JSON or text/plain) and both a streamed and a non-streamed request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bifrost_stt.kernel.canonical import Logprob, Segment, TranscriptionResult, Usage, Word

VERSION = 1


@dataclass(frozen=True, slots=True)
class Origin:
    """Which target answered the request that filled the entry (the x-bifrost-* headers of a hit)."""

    provider: str
    model: str
    deployment: str
    fallback_index: int = 0
    reported: str = ""  # the provider as extra_fields name it (a custom provider's kind); "" = provider


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(type(value).__name__)


def encode(result: TranscriptionResult, origin: Origin) -> bytes:
    return orjson.dumps({"v": VERSION, "result": result, "origin": origin}, default=_default)


def decode(payload: bytes) -> tuple[TranscriptionResult, Origin]:
    """The stored answer; ``ValueError`` for a payload this version cannot read (treated as a miss)."""
    try:
        doc = orjson.loads(payload)
        if doc.get("v") != VERSION:
            raise ValueError(f"cache entry version {doc.get('v')!r}")
        raw = doc["result"]
        usage = raw.get("usage")
        result = TranscriptionResult(
            text=raw["text"],
            language=raw.get("language"),
            duration=raw.get("duration"),
            task=raw.get("task") or "transcribe",
            segments=tuple(Segment(**{**s, "tokens": tuple(s.get("tokens") or ())}) for s in raw.get("segments") or ()),
            words=tuple(Word(**w) for w in raw.get("words") or ()),
            logprobs=tuple(_logprob(lp) for lp in raw.get("logprobs") or ()),
            usage=Usage(**usage) if usage else None,
            native=raw.get("native"),
            native_format=raw.get("native_format"),
            extra=raw.get("extra") or {},
        )
        return result, Origin(**doc["origin"])
    except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"unreadable cache entry ({type(exc).__name__})") from exc


def _logprob(raw: Mapping[str, Any]) -> Logprob:
    return Logprob(token=raw["token"], logprob=raw["logprob"], bytes=tuple(raw.get("bytes") or ()))
