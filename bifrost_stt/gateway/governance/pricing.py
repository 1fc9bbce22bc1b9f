"""The price table: what one transcription cost, from its audio seconds (or audio tokens) and the model.

Defaults are the providers' published list prices for their transcription models (USD, late 2025); a
``governance.pricing`` row in the config overrides a default or adds a model (a provider id or kind, a model
or deployment name, or ``*`` for every model of the provider). A model with no price has an unknown cost:
``cost()`` returns ``None``, never 0, so a missing price never passes for a free call. Models billed by
token (OpenAI's gpt-4o transcribe family) use the usage's audio/text tokens when the provider reports them,
else their per-second equivalent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bifrost_stt.kernel.canonical import Usage
from bifrost_stt.kernel.governance import PriceConfig


@dataclass(frozen=True, slots=True)
class Price:
    per_second: float | None = None
    per_audio_token: float | None = None
    per_output_token: float | None = None


def _minute(usd: float) -> float:
    return usd / 60.0


def _hour(usd: float) -> float:
    return usd / 3600.0


# (provider kind, model) -> price. Sources: each provider's pricing page.
DEFAULTS: dict[tuple[str, str], Price] = {
    ("openai", "whisper-1"): Price(per_second=_minute(0.006)),
    ("openai", "gpt-4o-transcribe"): Price(per_second=_minute(0.006), per_audio_token=6.0e-6, per_output_token=10.0e-6),
    ("openai", "gpt-4o-mini-transcribe"): Price(per_second=_minute(0.003), per_audio_token=3.0e-6,
                                               per_output_token=5.0e-6),
    ("groq", "whisper-large-v3"): Price(per_second=_hour(0.111)),
    ("groq", "whisper-large-v3-turbo"): Price(per_second=_hour(0.04)),
    ("groq", "distil-whisper-large-v3-en"): Price(per_second=_hour(0.02)),
    ("deepgram", "nova-3"): Price(per_second=_minute(0.0043)),
    ("deepgram", "nova-2"): Price(per_second=_minute(0.0043)),
    ("mistral", "voxtral-mini-latest"): Price(per_second=_minute(0.001)),
    ("mistral", "voxtral-mini-2507"): Price(per_second=_minute(0.001)),
    ("fireworks", "whisper-v3"): Price(per_second=_minute(0.0015)),
    ("fireworks", "whisper-v3-turbo"): Price(per_second=_minute(0.0009)),
}


class PriceTable:
    def __init__(self, overrides: Iterable[PriceConfig] = ()) -> None:
        self._prices = dict(DEFAULTS)
        for row in overrides:
            self._prices[(row.provider, row.model)] = Price(
                per_second=row.input_cost_per_audio_per_second,
                per_audio_token=row.input_cost_per_audio_token,
                per_output_token=row.output_cost_per_token,
            )

    def price(self, provider: str, kind: str, models: Iterable[str]) -> Price | None:
        """The most specific row: the provider id before its kind, a named model before ``*``."""
        names = [m for m in models if m]
        for who in dict.fromkeys((provider, kind)):
            for model in names:
                found = self._prices.get((who, model))
                if found is not None:
                    return found
            found = self._prices.get((who, "*"))
            if found is not None:
                return found
        return None

    def cost(
        self, provider: str, kind: str, models: Iterable[str], seconds: float | None, usage: Usage | None = None
    ) -> float | None:
        """USD for one call, or None when the price or the amount is unknown."""
        price = self.price(provider, kind, models)
        if price is None:
            return None
        if usage is not None and usage.audio_tokens is not None and price.per_audio_token is not None:
            total = usage.audio_tokens * price.per_audio_token
            if usage.output_tokens is not None and price.per_output_token is not None:
                total += usage.output_tokens * price.per_output_token
            return total
        if seconds is not None and price.per_second is not None:
            return seconds * price.per_second
        return None
