"""Model names as clients send them -> (provider id, model), the way upstream Bifrost reads them.

``provider/model`` is split on the first ``/`` only when the prefix is a provider id the gateway knows
(``distil-whisper/distil-large-v3`` stays one model name). What follows the prefix is the provider's own model
string, slashes included (``huggingface/hf-inference/openai/whisper-large-v3`` -> huggingface,
``hf-inference/openai/whisper-large-v3``); the provider reads it. Routes that speak a vendor's own dialect give a
bare model a default provider; the unified route requires the prefix.
"""

from __future__ import annotations

from collections.abc import Collection

from bifrost_stt.providers.registry import env_hint
from bifrost_stt.kernel.errors import ClientError


def split_model(model: str, known: Collection[str]) -> tuple[str | None, str]:
    prefix, sep, rest = model.partition("/")
    if sep and rest and prefix in known:
        return prefix, rest
    return None, model


def resolve_model(
    model: str,
    *,
    known: Collection[str],
    configured: Collection[str],
    default_provider: str | None,
    param: str = "model",
) -> tuple[str, str]:
    """Return (provider, model) or raise a 400 that says what to send or configure."""
    model = model.strip()
    if not model:
        raise ClientError(f"{param} is required", param=param)
    provider, name = split_model(model, known)
    if provider is None:
        if default_provider is None:
            raise ClientError(
                f"{param} must be in provider/model format (for example openai/whisper-1); "
                f"got {model!r}. Known providers: {', '.join(sorted(known))}",
                param=param,
            )
        provider = default_provider
    if provider not in configured:
        raise ClientError(
            f"provider {provider!r} is not configured: set {env_hint(provider)} in the environment "
            f"or add providers.{provider} to the config file (see docs/configuration.md)",
            param=param,
            code="provider_not_configured",
            provider=provider,
            model=name,
        )
    return provider, name
