"""Governance refusals, each a Bifrost error with upstream's status and code.

    401 virtual_key_required     enforcement is on and the request carries no virtual key
    403 virtual_key_not_found    no such key;  virtual_key_blocked: the key is inactive
    403 provider_blocked         the key does not allow the provider; model_blocked: nor the model
    402 budget_exceeded          "<name> budget exceeded: 1.2345 >= 1.0000 dollars"
    429 rate_limited             with Retry-After (seconds until the window resets)
    503 governance_unavailable   the counter store cannot be reached and the policy is fail_closed
"""

from __future__ import annotations

import math

from bifrost_stt.kernel.errors import AuthenticationError, ClientError, Overloaded


class VirtualKeyRequired(AuthenticationError):
    def __init__(self) -> None:
        super().__init__(
            "a virtual key is required: send it as x-bf-vk, Authorization: Bearer sk-bf-..., x-api-key or api-key",
            code="virtual_key_required",
        )


class Forbidden(ClientError):
    status = 403
    error_type = "permission_denied"

    def __init__(self, message: str, code: str, **kw: str | None) -> None:
        super().__init__(message, code=code, **kw)  # type: ignore[arg-type]


class BudgetExceeded(ClientError):
    status = 402
    error_type = "budget_exceeded"

    def __init__(self, name: str, used: float, limit: float) -> None:
        super().__init__(f"{name} budget exceeded: {used:.4f} >= {limit:.4f} dollars", code="budget_exceeded")


class RateLimited(ClientError):
    status = 429
    error_type = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(message, code="rate_limited", headers={"Retry-After": str(seconds)})


class GovernanceUnavailable(Overloaded):
    def __init__(self) -> None:
        super().__init__(
            "the governance counter store cannot be reached; retry in a moment",
            code="governance_unavailable", headers={"Retry-After": "1"},
        )
