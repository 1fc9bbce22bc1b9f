"""The operations this gateway serves: the one list in the repository.

``spec-sync`` cuts exactly ``FROM_UPSTREAM`` (and the components they reach) out of upstream's document;
``openapi/overlay.yaml`` adds ``OURS``; the app refuses to start, and a test fails naming it, when an
operation in the served contract has no handler. Serving a new upstream operation starts here.
"""

from __future__ import annotations

# Taken from upstream's document as it defines them (paths, parameters, schemas); our prose.
FROM_UPSTREAM: tuple[str, ...] = (
    "createTranscription",
    "createAsyncTranscription",
    "getAsyncTranscriptionJob",
    "openaiCreateTranscription",
    "azureCreateTranscription",
    "litellmOpenAITranscriptions",
    "langchainOpenAITranscriptions",
    "pydanticaiOpenAITranscriptions",
    # governance (bifrost_stt.gateway.governance, handlers/governance.py)
    "createVirtualKey",
    "listVirtualKeys",
    "getVirtualKey",
    "updateVirtualKey",
    "deleteVirtualKey",
    "getVirtualKeyQuota",
    "listBudgets",
    "listRateLimits",
    "clearCacheByRequestId",
    "clearCacheByCacheKey",
)
# Declared by openapi/overlay.yaml: our /health (upstream's has another shape) and the /openai/audio alias.
OURS: tuple[str, ...] = ("getHealth", "openaiCreateTranscriptionAlias")

SERVED: tuple[str, ...] = FROM_UPSTREAM + OURS

# Form fields the handlers turn into canonical request fields (handlers/inbound.py). Any other field the
# contract declares is validated and passed on to the provider as sent; spec-sync's report says which.
READ_FIELDS: frozenset[str] = frozenset({
    "model", "file", "fallbacks", "stream", "language", "prompt", "response_format", "temperature",
    "timestamp_granularities", "file_format",
})
