"""The running gateway: providers built from the registry, their pooled clients, and the router.

Clients are created in ``start()`` (from the app's lifespan) because the aiohttp engine behind them must be
born inside the running event loop, and closed in ``aclose()`` on shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

from bifrost_stt.gateway.cache.policy import Cache
from bifrost_stt.kernel.errors import Overloaded
from bifrost_stt.kernel.record import RequestRecord
from bifrost_stt.gateway.access import Access
from bifrost_stt.gateway.governance.decide import key_from_headers
from bifrost_stt.gateway.governance.service import Governance
from bifrost_stt.gateway.jobs.runner import JobRunner
from bifrost_stt.gateway.observe import logline, metrics, tracing
from bifrost_stt.gateway.stores.logs import LogSink
from bifrost_stt.gateway.longaudio import LongAudio
from bifrost_stt.gateway.routing.admission import ProviderSlot
from bifrost_stt.gateway.routing.router import Router
from bifrost_stt.kernel.capabilities import ModelCatalog
from bifrost_stt.kernel.settings import GatewayConfig
from bifrost_stt.providers import registry
from bifrost_stt.providers.http import make_client

log = logging.getLogger("bifrost_stt")


class Gateway:
    def __init__(self, config: GatewayConfig, *, provider_ids: frozenset[str] = frozenset()) -> None:
        self.config = config
        self._provider_ids = provider_ids  # every id the contract names, implemented here or not
        self._router: Router | None = None
        self._clients: list[Any] = []
        # Both are read on every request and cannot change while the gateway runs: computed once.
        self._configured = frozenset(config.providers)
        self._known = provider_ids | registry.known() | self._configured
        self.jobs = JobRunner(config.client)  # async transcription jobs; started and stopped with the gateway
        self.access = Access(config.auth)  # who may call what (admin basic auth; governance adds virtual keys)
        self.logs = LogSink(config.logs_store, config.client, on_drop=metrics.dropped)  # the request-log store
        self.governance = Governance(config.governance, kind_of=self._kind_of)  # virtual keys, budgets, limits
        if self.governance.enabled:
            # With admin auth on, a virtual key may call the inference routes too; governance checks the key
            # itself (unknown or blocked: its own 401/403).
            self.access.accept_inference = lambda headers: key_from_headers(headers) is not None
        self.cache = Cache(config.cache)  # the exact transcription cache; its store opens in start()

    def _kind_of(self, provider: str) -> str:
        """A provider id's registry kind (a custom provider's base type), for the price table."""
        cfg = self.config.providers.get(provider)
        return cfg.kind if cfg else provider

    @property
    def known_providers(self) -> frozenset[str]:
        """Provider ids a model prefix may name: the contract's ids, registry kinds, configured names."""
        return self._known

    @property
    def configured(self) -> frozenset[str]:
        return self._configured

    def bare_model(self, model: str, default_provider: str | None) -> tuple[str | None, str]:
        """Where a model without a provider prefix goes on a route whose default is ``default_provider``.

        Zero config: when the only configured provider knows its models (``ModelCatalog``: the local
        engine), a bare name goes to it, and a name it does not know (``whisper-1``, an Azure deployment)
        to its default model. Otherwise the route's default, with the name unchanged.
        """
        if default_provider is None or len(self._configured) != 1 or self._router is None:
            return default_provider, model
        (only,) = self._configured
        impl = self._router.slots[only].impl
        if not isinstance(impl, ModelCatalog):
            return default_provider, model
        return only, model if impl.knows(model) else impl.default_model

    @property
    def router(self) -> Router:
        if self._router is None:
            raise Overloaded("the gateway is starting; retry in a moment")
        return self._router

    async def start(self) -> None:
        slots: dict[str, ProviderSlot] = {}
        for provider_id, cfg in self.config.providers.items():
            client = make_client(cfg)
            self._clients.append(client)
            impl = registry.build(cfg, client)
            slots[provider_id] = ProviderSlot(cfg, impl, drop_excess=self.config.client.drop_excess_requests,
                                              limits=self.config.long_audio)
        self._router = Router(slots, long_audio=LongAudio(self.config.long_audio, spool_dir=self.config.client.spool_dir))
        log.info("providers ready: %s", ", ".join(sorted(slots)) or "none (configure one: see README)")
        metrics.keys_configured((pid, key.name) for pid, cfg in self.config.providers.items()
                                for key in cfg.keys if key.enabled)
        await self.governance.start()
        await self.jobs.start()
        await self.logs.start()
        tracing.setup()  # only when OTEL_* asks for traces
        await self.cache.start()  # a broken store is logged and serves misses: never a failed start

    def finish(self, record: RequestRecord, method: str = "POST") -> None:
        """A request ended: metrics, the request-log store (queued, never waits) and the request line.
        An observer's failure is logged and never reaches the client."""
        try:
            metrics.observe(record)
            self.logs.submit(record)
            logline.emit(record, method)
            tracing.emit(record, method)
        except Exception:
            log.exception("recording a finished request failed")

    async def aclose(self) -> None:
        await self.jobs.aclose()  # first: cancelling jobs ends their upstream calls before the clients close
        await self.logs.aclose()  # after the jobs: their records are queued by now
        metrics.worker_exit()
        await self.governance.aclose()
        await self.cache.aclose()
        for slot in (self._router.slots.values() if self._router is not None else ()):
            close = getattr(slot.impl, "aclose", None)  # providers holding more than a client (the local engine)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing provider %s failed", slot.config.id)
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                await client.aclose()
            except Exception:  # shutting down: a close failure must not hide the others
                log.exception("closing an upstream client failed")
        if self._router is not None and self._router.long_audio is not None:
            self._router.long_audio.close()
        self._router = None
