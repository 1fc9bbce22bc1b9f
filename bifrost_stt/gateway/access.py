"""Who may call what: upstream's ``governance.auth_config`` (HTTP basic auth with one admin credential).

    /api/* and /metrics    the admin credential, by path prefix (every management operation, whoever adds it)
    inference routes       a credential too, unless ``disable_auth_on_inference``: the admin's, or whatever
                           ``accept_inference`` accepts (governance plugs virtual keys in there)
    /health, /openapi.json, /docs   always open

With no admin credential configured everything is open (the start-up log says so once). Credentials are
compared in constant time and never logged; a refusal says what is missing, not what was sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping

from bifrost_stt.kernel.settings import AuthConfig

ADMIN_PREFIXES = ("/api/",)
ADMIN_PATHS = frozenset({"/api", "/metrics", "/metrics/"})
REALM = 'Basic realm="bifrost-stt", charset="UTF-8"'

# Headers already lower-cased -> True when they carry a credential that may call inference routes.
InferenceCheck = Callable[[Mapping[str, str]], bool]


def is_admin_path(path: str) -> bool:
    return path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)


class Access:
    def __init__(self, auth: AuthConfig) -> None:
        self.auth = auth
        self.active = auth.active
        self._user = auth.admin_username.encode("utf-8")
        self._password = auth.admin_password.reveal().encode("utf-8")
        # The hook governance fills: a virtual key (x-bf-vk, Bearer sk-bf-..., ...) may call inference routes.
        self.accept_inference: InferenceCheck = lambda headers: False

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        """``Authorization: Basic`` with the admin's username and password."""
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # both compared, always: no early exit that would time the username
        ok_user = hmac.compare_digest(user, self._user)
        ok_password = hmac.compare_digest(password, self._password)
        return bool(sep) and ok_user and ok_password

    def refusal(self, path: str, inference: bool, headers: Mapping[str, str]) -> str | None:
        """None when the request may go on; otherwise what the 401 says."""
        if not self.active:
            return None
        if is_admin_path(path):
            return None if self.is_admin(headers) else "this route needs the admin credential (HTTP basic auth)"
        if inference and not self.auth.disable_auth_on_inference:
            if self.is_admin(headers) or self.accept_inference(headers):
                return None
            return "inference routes need a credential: the admin's (HTTP basic auth) or a virtual key"
        return None
