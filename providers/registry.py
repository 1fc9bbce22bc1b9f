"""The one table of provider kinds, as ``"module:factory"`` strings imported on first use (uvicorn style).

Adding a provider is one module exposing ``create(config, client)`` and one line in ``PROVIDERS``.
Importing this module imports no vendor code; ``load`` does, for the kinds actually configured.

What a kind can do is readable without building it (``capabilities``, for the README's matrix and the
CLI): the module named in its line holds a constant named after the kind in upper snake case
(``groq`` -> ``GROQ``, ``opencode-go`` -> ``OPENCODE_GO``), or, when the module implements only that
kind, ``CAPABILITIES``. The constant is a ``Capabilities`` or a value carrying one as ``.capabilities``
(an ``openai_compat.Vendor``); the provider object's ``capabilities`` is that same value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

import httpx

from bifrost_stt.kernel.capabilities import Capabilities, ConfigSpec, Price, Transcriber
from bifrost_stt.kernel.settings import ProviderConfig

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


def constant_name(kind: str) -> str:
    """``opencode-go`` -> ``OPENCODE_GO``: the prefix of a kind's module constants and environment variables."""
    return kind.upper().replace("-", "_")


def _declared(kind: str, suffix: str) -> object | None:
    """The module constant ``<KIND><suffix>`` of ``kind``'s module, or ``<suffix>`` when the module implements
    only that kind (``GROQ`` / ``CAPABILITIES``; ``AZURE_CONFIG`` / ``CONFIG``)."""
    load(kind)  # the same LookupError for an unknown kind
    module_name = PROVIDERS[kind].partition(":")[0]
    module = importlib.import_module(module_name)
    value = getattr(module, constant_name(kind) + suffix, None)
    sole = [k for k, target in PROVIDERS.items() if target.partition(":")[0] == module_name] == [kind]
    if value is None and sole:
        value = getattr(module, suffix.lstrip("_") or "CAPABILITIES", None)
    return value


def capabilities(kind: str) -> Capabilities:
    """What ``kind`` can do, read from its module without a client (see the module docstring)."""
    value = _declared(kind, "")
    caps = value if isinstance(value, Capabilities) else getattr(value, "capabilities", None)
    if not isinstance(caps, Capabilities):
        module_name = PROVIDERS[kind].partition(":")[0]
        raise LookupError(
            f"{module_name} declares no capabilities for {kind!r}: add a module constant "
            f"{constant_name(kind)} = Capabilities(...) (or a Vendor carrying them) and use it as the provider's "
            ".capabilities"
        )
    return caps


def config_spec(kind: str) -> ConfigSpec:
    """How ``kind`` is configured (``<KIND>_CONFIG`` in its module); the plain spec when it declares none or
    is not a kind of this registry."""
    if kind not in PROVIDERS:
        return ConfigSpec()
    value = _declared(kind, "_CONFIG")
    return value if isinstance(value, ConfigSpec) else ConfigSpec()


def prices(kind: str) -> Mapping[str, Price]:
    """``kind``'s list prices by model (``<KIND>_PRICES`` in its module); none when it declares none."""
    if kind not in PROVIDERS:
        return {}
    value = _declared(kind, "_PRICES")
    return value if isinstance(value, Mapping) else {}


def key_section_owners() -> Mapping[str, str]:
    """Every vendor key section any kind declares -> that kind (to say whose section a misplaced one is)."""
    return {name: kind for kind in sorted(PROVIDERS) for name in config_spec(kind).key_sections}


def env_vars(kind: str) -> tuple[str, str]:
    """The variables that configure ``kind`` without a file: (key variable, base URL variable)."""
    spec, prefix = config_spec(kind), constant_name(kind)
    return spec.env_key or f"{prefix}_API_KEY", spec.env_base_url or f"{prefix}_BASE_URL"


def env_hint(kind: str) -> str:
    """The environment variables that configure ``kind`` without a file, for messages."""
    spec = config_spec(kind)
    key_var, url_var = env_vars(kind)
    if spec.key_less:
        return url_var
    return " and ".join([key_var, *spec.env_required])
