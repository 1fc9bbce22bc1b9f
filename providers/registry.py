"""The one table of provider kinds, as ``"module:factory"`` strings imported on first use (uvicorn style).

Adding a provider is one module exposing ``create(config, client)`` and one line in ``PROVIDERS``.
Importing this module imports no vendor code; ``load`` does, for the kinds actually configured.

What a kind can do is readable without building it (``capabilities``, for the README's matrix and the
CLI): the module named in its line holds a constant named after the kind in upper snake case
(``groq`` -> ``GROQ``, ``opencode-go`` -> ``OPENCODE_GO``), or, when the module implements only that
kind, ``CAPABILITIES``. The constant is a ``Capabilities`` or a value carrying one as ``.capabilities``
(an ``openai_compat.Vendor``); the provider object's ``capabilities`` is that same value.

A module whose provider takes settings of its own (besides upstream's section fields) declares them as a
``ProviderSection`` constant ``SECTION`` (``section``); the config loader reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

import httpx

from bifrost_stt.kernel.settings import ProviderConfig, ProviderSection
from bifrost_stt.kernel.capabilities import Capabilities, Transcriber

Factory = Callable[[ProviderConfig, httpx.AsyncClient], object]

PROVIDERS: Mapping[str, str] = MappingProxyType(
    {
        "openai": "bifrost_stt.providers.openai_compat:create_openai",
        "azure": "bifrost_stt.providers.openai_compat:create_azure",
        "groq": "bifrost_stt.providers.openai_compat:create_groq",
        "mistral": "bifrost_stt.providers.mistral:create",
        "elevenlabs": "bifrost_stt.providers.elevenlabs:create",
        "huggingface": "bifrost_stt.providers.huggingface:create",
        "vllm": "bifrost_stt.providers.openai_family:create_vllm",
        "fireworks": "bifrost_stt.providers.openai_family:create_fireworks",
        "gemini": "bifrost_stt.providers.gemini:create",
        "deepgram": "bifrost_stt.providers.deepgram:create",
        "local": "bifrost_stt.providers.local:create",
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


def build(config: ProviderConfig, client: httpx.AsyncClient) -> Transcriber:
    """The provider object for ``config`` (``config.kind`` picks the implementation).

    Every provider transcribes; a factory whose object does not is a bug caught here, at start-up.
    """
    provider = load(config.kind)(config, client)
    if not isinstance(provider, Transcriber):
        raise TypeError(f"provider kind {config.kind!r} built {type(provider).__name__}, which cannot transcribe")
    return provider


def capabilities_name(kind: str) -> str:
    """The module constant that declares ``kind``'s capabilities: ``opencode-go`` -> ``OPENCODE_GO``."""
    return kind.upper().replace("-", "_")


def capabilities(kind: str) -> Capabilities:
    """What ``kind`` can do, read from its module without a client (see the module docstring)."""
    load(kind)  # the same LookupError for an unknown kind
    module_name = PROVIDERS[kind].partition(":")[0]
    module = importlib.import_module(module_name)
    name = capabilities_name(kind)
    value = getattr(module, name, None)
    sole = [k for k, target in PROVIDERS.items() if target.partition(":")[0] == module_name] == [kind]
    if value is None and sole:
        value = getattr(module, "CAPABILITIES", None)
    caps = value if isinstance(value, Capabilities) else getattr(value, "capabilities", None)
    if not isinstance(caps, Capabilities):
        raise LookupError(
            f"{module_name} declares no capabilities for {kind!r}: add a module constant {name} = Capabilities(...)"
            " (or a Vendor carrying them) and use it as the provider's .capabilities"
        )
    return caps


def section(kind: str) -> ProviderSection | None:
    """The ``SECTION`` a kind's module declares (its own settings), or None; None for an unknown kind."""
    target = PROVIDERS.get(kind)
    if target is None:
        return None
    value = getattr(importlib.import_module(target.partition(":")[0]), "SECTION", None)
    return value if isinstance(value, ProviderSection) else None
