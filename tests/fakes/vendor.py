"""What every vendor fake offers tests besides its wire protocol: its key and a config pointing at it."""

from __future__ import annotations

from typing import Any

from bifrost_stt.kernel.settings import KeyConfig, NetworkConfig, ProviderConfig, Secret
from tests.fakes.server import FakeServer


class VendorFake(FakeServer):
    """Subclasses set ``vendor`` (the provider kind), ``own_key`` (the key the fake accepts) and
    ``key_name``; ``base_url`` is the server's URL unless the vendor's base carries a path."""

    vendor = ""
    own_key = ""
    key_name = "k1"

    @property
    def base_url(self) -> str:
        return self.url

    def key(self, name: str | None = None, **kw: Any) -> KeyConfig:
        """A KeyConfig holding this fake's own key."""
        return KeyConfig(name=name or self.key_name, value=Secret(self.own_key), **kw)

    def provider_config(
        self, id: str | None = None, *, timeout: float = 5.0, base_url: str | None = None, **network: Any
    ) -> ProviderConfig:
        """A ProviderConfig pointing at this fake, with one valid key."""
        return ProviderConfig(
            id=id or self.vendor, kind=self.vendor, keys=(self.key(),),
            network=NetworkConfig(base_url=base_url or self.base_url, default_request_timeout_in_seconds=timeout,
                                  **network),
        )
