"""The price table: what one transcription cost, from its audio seconds (or audio tokens) and the model.

Defaults are the providers' published list prices (USD, late 2025), declared by each provider module
next to its capabilities (``<KIND>_PRICES``); a
``governance.pricing`` row in the config overrides a default or adds a model (a provider id or kind, a model
or deployment name, or ``*`` for every model of the provider). A model with no price has an unknown cost:
``cost()`` returns ``None``, never 0, so a missing price never passes for a free call. Models billed by
token (OpenAI's gpt-4o transcribe family) use the usage's audio/text tokens when the provider reports them,
else their per-second equivalent.
"""

from __future__ import annotations

from collections.abc import Iterable
from bifrost_stt.kernel.canonical import Usage
from bifrost_stt.kernel.capabilities import Price
from bifrost_stt.kernel.governance import PriceConfig


def default_prices() -> dict[tuple[str, str], Price]:
    """(provider kind, model) -> price, as each provider module declares them (``<KIND>_PRICES``)."""
    from bifrost_stt.providers import registry  # imported on use: the registry imports provider modules

    return {(kind, model): price for kind in sorted(registry.known()) for model, price in registry.prices(kind).items()}


class PriceTable:
    def __init__(self, overrides: Iterable[PriceConfig] = ()) -> None:
        self._prices = default_prices()
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
