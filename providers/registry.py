"""The one table of provider kinds, as ``"module:factory"`` strings imported on first use (uvicorn style).

Adding a provider is one module exposing ``create(config, client)`` and one line in ``PROVIDERS``.
Importing this module imports no vendor code; ``load`` does, for the kinds actually configured.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

import httpx

from gateway.settings import ProviderConfig

Factory = Callable[[ProviderConfig, httpx.AsyncClient], object]

PROVIDERS: Mapping[str, str] = MappingProxyType(
    {
        "openai": "providers.openai_compat:create_openai",
        "azure": "providers.openai_compat:create_azure",
        "groq": "providers.openai_compat:create_groq",
    }
)


def known() -> frozenset[str]:
    """Every provider kind the gateway can build."""
    return frozenset(PROVIDERS)


def load(kind: str) -> Factory:
    """The factory for ``kind``; ``LookupError`` naming the known kinds when there is none."""
    try:
        target = PROVIDERS[kind]
    except KeyError:
        raise LookupError(f"unknown provider kind {kind!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    if not callable(factory):
        raise TypeError(f"{target} is not callable")
    return factory  # type: ignore[no-any-return]


def build(config: ProviderConfig, client: httpx.AsyncClient) -> object:
    """The provider object for ``config`` (``config.kind`` picks the implementation)."""
    return load(config.kind)(config, client)
