"""Pure decisions: which virtual key a request carries, and what that key lets it reach.

Headers, as upstream reads them: ``x-bf-vk`` (any value), or an ``sk-bf-`` value in ``Authorization:
Bearer``, ``x-api-key``, ``api-key`` (the Azure route's key header) or ``x-goog-api-key``. A value without
the prefix in those shared headers is a provider key (``allow_direct_keys``), never a virtual key.
"""

from __future__ import annotations

from collections.abc import Mapping

from bifrost_stt.kernel.governance import VK_PREFIX, VirtualKeyConfig

_SHARED_HEADERS = ("x-api-key", "api-key", "x-goog-api-key")


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The virtual key a request carries (headers with lower-case names), or None."""
    value = headers.get("x-bf-vk")
    if value is not None and value.strip():
        return value.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith(VK_PREFIX):
            return token
    for name in _SHARED_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip().startswith(VK_PREFIX):
            return value.strip()
    return None


def is_virtual_key(value: str | None) -> bool:
    return bool(value) and value.startswith(VK_PREFIX)  # type: ignore[union-attr]


def blocked(vk: VirtualKeyConfig, provider: str, model: str) -> str | None:
    """None when ``vk`` may call ``provider``/``model``; else ``provider_blocked`` or ``model_blocked``.

    No provider configs: every provider and model. A provider config with no ``allowed_models``: every
    model of that provider. A model may be listed bare (``whisper-1``) or prefixed (``openai/whisper-1``).
    """
    if not vk.provider_configs:
        return None
    config = next((c for c in vk.provider_configs if c.provider == provider), None)
    if config is None:
        return "provider_blocked"
    allowed = config.allowed_models
    if allowed and "*" not in allowed and model not in allowed and f"{provider}/{model}" not in allowed:
        return "model_blocked"
    return None


def allowed_fallbacks(vk: VirtualKeyConfig, fallbacks: tuple[str, ...]) -> tuple[str, ...]:
    """The fallbacks (``provider/model``) the key allows, in order; the others are dropped."""
    kept = []
    for target in fallbacks:
        provider, _, model = target.partition("/")
        if blocked(vk, provider, model) is None:
            kept.append(target)
    return tuple(kept)
