"""Build the typed ``GatewayConfig`` from a config file in upstream Bifrost's shape, or from the environment.

Layers, lowest first: dataclass defaults → the file (or, without a file, ``<KIND>_API_KEY`` variables) →
``BIFROST_STT_HOST`` / ``_PORT`` / ``_MAX_BODY_MB`` → command-line overrides (``apply_overrides``).

A file (or an environment) that configures no provider gets the local engine when it is installed
(a kind whose ConfigSpec has ``installed``). An upstream user's config.json loads unchanged: sections that do not concern transcription are listed in
``ignored_sections``, settings we accept but cannot honour in ``unsupported_fields`` (the CLI logs both once).
Every mistake is a ``ConfigError`` naming its dotted path; no message ever contains a key's value.
The file's shape lives in ``bifrost_stt.gateway.config.schema`` as tables; this module only turns checked values into
dataclasses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bifrost_stt.gateway.config import governance as governance_section
from bifrost_stt.gateway.config.cache import build_cache
from bifrost_stt.gateway.config.schema import AUTH, CLIENT, KEY, PROVIDER, SERVER, TOP, UPSTREAM_PROVIDER_IDS
from bifrost_stt.kernel.capabilities import ConfigSpec
from bifrost_stt.kernel.fields import (
    ConfigError,
    Context,
    Field,
    as_object,
    header_value,
    read_section,
    section,
    suggestion,
)
from bifrost_stt.kernel.settings import (
    AuthConfig,
    AudioLimit,
    ClientConfig,
    LongAudioConfig,
    ConcurrencyConfig,
    GatewayConfig,
    KeyConfig,
    LogsStoreConfig,
    NetworkConfig,
    ProviderConfig,
    ServerConfig,
    Secret,
)

__all__ = [
    "CONFIG_ENV", "OVERRIDES_ENV", "ConfigError", "apply_overrides", "config_from_environ", "from_document",
    "from_environment", "load_config", "read_document",
]

CONFIG_ENV = "BIFROST_STT_CONFIG"  # the config path handed from `bifrost-stt serve` to its workers
OVERRIDES_ENV = "BIFROST_STT_OVERRIDES"  # JSON of the command-line overrides, ditto


# BIFROST_STT_* variable → (section, field, is an integer), applied over the file or the zero-config.
SERVER_ENV: Mapping[str, tuple[str, str, bool]] = {
    "BIFROST_STT_HOST": ("server", "host", False),
    "BIFROST_STT_PORT": ("server", "port", True),
    "BIFROST_STT_MAX_BODY_MB": ("client", "max_request_body_size_mb", True),
}

OVERRIDABLE = ("host", "port", "workers", "log_level", "spec_dir", "log_format")


def load_config(
    path: str | Path | None, env: Mapping[str, str], known_kinds: frozenset[str] | None = None
) -> GatewayConfig:
    """Read ``path`` (JSON or YAML), or build from ``env`` when ``path`` is None; then apply BIFROST_STT_*.

    ``known_kinds`` defaults to ``providers.registry.known()``; tests pass their own.
    """
    kinds = known_kinds if known_kinds is not None else _registry_kinds()
    if path is None:
        config = from_environment(env, kinds)
    else:
        config = from_document(read_document(Path(path)), env, kinds)
    return _apply_server_env(config, env)


def config_from_environ(environ: Mapping[str, str]) -> GatewayConfig:
    """What a uvicorn worker calls: the path and overrides `bifrost-stt serve` left in the environment."""
    raw = environ.get(OVERRIDES_ENV) or "{}"
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(OVERRIDES_ENV, f"not valid JSON: {exc.msg}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(OVERRIDES_ENV, "expected a JSON object")
    return apply_overrides(load_config(environ.get(CONFIG_ENV) or None, environ), overrides)


def apply_overrides(config: GatewayConfig, overrides: Mapping[str, Any]) -> GatewayConfig:
    """Command-line values win over everything; ``None`` means "not given"."""
    ctx = Context(env={})
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in OVERRIDABLE:
            raise ConfigError(f"overrides.{name}", "unknown override" + suggestion(name, OVERRIDABLE))
        if value is not None:
            changes[name] = SERVER[name].check(value, f"overrides.{name}", ctx)
    return replace(config, server=replace(config.server, **changes)) if changes else config


# --- the file ---------------------------------------------------------------------------------------------------


def read_document(path: Path) -> Any:
    """Parse by extension (.json, .yaml, .yml), else by content: ``{`` first means JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "the config file is not UTF-8 text") from None
    suffix = path.suffix.lower()
    as_json = suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith("{"))
    if as_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(str(path), f"not valid YAML: {problem}{where}") from None


def from_document(document: Any, env: Mapping[str, str], known_kinds: frozenset[str]) -> GatewayConfig:
    """A parsed upstream-shaped document → GatewayConfig (``env`` resolves ``env.VAR`` references)."""
    ctx = Context(env=env)
    top = read_section({} if document is None else document, "", TOP, ctx)
    client = top.get("client", {})
    direct_default = client.pop("allow_direct_keys", False)
    governance = governance_section.build(top.get("governance"), top.get("config_store"), client, ctx)
    version = top.get("version", 2)
    providers: dict[str, ProviderConfig] = {}
    for pid, raw in top.get("providers", {}).items():
        built = _provider(pid, raw, ctx, known_kinds, version, direct_default)
        if built is not None:
            providers[pid] = built
    if not providers:
        providers.update(_implicit(known_kinds, beside=False))
    return GatewayConfig(
        providers=MappingProxyType(providers),
        client=ClientConfig(**client),
        server=ServerConfig(**top.get("server", {})),
        logs_store=_logs_store(top.get("logs_store", {})),
        auth=_auth(read_section((top.get("governance") or {}).get("auth_config", {}), "governance.auth_config",
                                AUTH, ctx)),
        long_audio=_long_audio(top.get("long_audio", {})),
        governance=governance,
        cache=build_cache(top.get("plugins"), top.get("vector_store"), ctx),
        ignored_sections=tuple(dict.fromkeys(ctx.ignored)),
        unsupported_fields=tuple(dict.fromkeys(ctx.unsupported)),
    )


def _logs_store(fields: dict[str, Any]) -> LogsStoreConfig:
    fields = dict(fields)
    conn = dict(fields.pop("config", {}))
    if "password" in conn:
        conn["password"] = Secret(conn["password"])
    store = LogsStoreConfig(**fields, **conn)
    if store.enabled and store.type == "postgres" and not store.db_name:
        raise ConfigError("logs_store.config.db_name", "required when logs_store.type is postgres")
    return store


def _auth(fields: dict[str, Any]) -> AuthConfig:
    if "admin_password" in fields:
        fields = {**fields, "admin_password": Secret(fields["admin_password"])}
    auth = AuthConfig(**fields)
    if auth.is_enabled:
        for name in ("admin_username", "admin_password"):
            if not getattr(auth, name):
                raise ConfigError(f"governance.auth_config.{name}", "required when is_enabled is true")
    return auth


def _long_audio(section: dict[str, Any]) -> LongAudioConfig:
    limits = {name: AudioLimit(**value) for name, value in section.pop("limits", {}).items()}
    return LongAudioConfig(**section, limits=MappingProxyType(limits))


def _provider(
    pid: str, raw: Any, ctx: Context, known: frozenset[str], version: int, direct_default: bool
) -> ProviderConfig | None:
    path = f"providers.{pid}"
    if not pid or "/" in pid:
        raise ConfigError(path, 'a provider id must be non-empty and without "/" (requests say "<id>/<model>")')
    obj = as_object(raw, path, ctx)
    if "custom_provider_config" not in obj and pid not in known:
        if pid in UPSTREAM_PROVIDER_IDS:  # an upstream provider without transcription here: not a mistake
            ctx.ignored.append(path)
            return None
        raise ConfigError(path, "unknown provider" + suggestion(pid, known) + _kinds_hint(known))
    declared = obj.get("custom_provider_config")
    spec = _spec(declared.get("base_provider_type", pid) if isinstance(declared, Mapping) else pid)
    fields = read_section(obj, path, {**PROVIDER, **spec.fields} if spec.options else PROVIDER, ctx)
    custom = fields.get("custom_provider_config", {})
    kind = custom.get("base_provider_type", pid)
    if kind not in known:
        raise ConfigError(
            f"{path}.custom_provider_config.base_provider_type",
            f"unknown provider kind {kind!r}" + suggestion(kind, known) + _kinds_hint(known),
        )
    key_less = custom.get("is_key_less", False) or not spec.takes_keys
    raw_keys = fields.get("keys", [])
    if raw_keys and not spec.takes_keys:
        raise ConfigError(f"{path}.keys", f"{kind} takes no keys")
    if not raw_keys and not key_less:
        raise ConfigError(f"{path}.keys", "at least one key is required (or custom_provider_config.is_key_less)")
    options, concurrency = _own_settings(spec, fields, path)
    keys = tuple(_key(item, f"{path}.keys[{i}]", kind, ctx, version) for i, item in enumerate(raw_keys))
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key.name in seen:
            raise ConfigError(f"{path}.keys[{i}].name", f'duplicate key name "{key.name}"')
        seen.add(key.name)
    allowed = custom.get("allowed_requests")
    return ProviderConfig(
        id=pid,
        kind=kind,
        keys=keys,
        network=_network(fields.get("network_config", {}), f"{path}.network_config"),
        concurrency=concurrency,
        allow_direct_keys=fields.get("allow_direct_keys", direct_default),
        is_key_less=key_less,
        store_raw_request_response=fields.get("store_raw_request_response", False),
        request_path_overrides=MappingProxyType(custom.get("request_path_overrides", {})),
        allowed_requests=None if allowed is None else frozenset(k for k, on in allowed.items() if on),
        options=options,
    )


def _own_settings(spec: ConfigSpec, fields: Mapping[str, Any], path: str) -> tuple[object, ConcurrencyConfig]:
    """The provider's own options (its ConfigSpec ``fields``, built by its ``options``) and admission limits."""
    given = fields.get("concurrency_and_buffer_size")
    limits = ConcurrencyConfig(**given) if given is not None else None
    if spec.options is None:
        return None, limits or ConcurrencyConfig()
    return spec.options({k: v for k, v in fields.items() if k in spec.fields}, limits, path)


def _implicit(known: frozenset[str], *, beside: bool) -> dict[str, ProviderConfig]:
    """Engines that need no configuration (their ConfigSpec has ``installed``) and are installed: alone
    (nothing else is configured), or ``beside`` providers from the environment when their spec allows it,
    with its ``beside`` section."""
    out: dict[str, ProviderConfig] = {}
    for kind in _implicit_kinds(known):
        spec = _spec(kind)
        if spec.installed is None or not spec.installed() or (beside and spec.beside is None):
            continue
        path = f"providers.{kind}"
        fields = read_section(dict(spec.beside or {}) if beside else {}, path, spec.fields, Context(env={}))
        options, limits = _own_settings(spec, fields, path)
        out[kind] = ProviderConfig(id=kind, kind=kind, is_key_less=True, concurrency=limits, options=options)
    return out


def _implicit_kinds(known: frozenset[str]) -> list[str]:
    """The kinds whose ConfigSpec says they need no configuration at all (``installed``)."""
    return [kind for kind in sorted(known) if _spec(kind).installed is not None]


def _key(raw: Any, path: str, kind: str, ctx: Context, version: int) -> KeyConfig:
    """One key: the shared fields, plus the vendor sections ``kind`` declares in its ``ConfigSpec``."""
    spec, owners = _spec(kind), _section_owners()
    table: dict[str, Field] = {**KEY, **{name: Field(section(ks.fields)) for name, ks in spec.key_sections.items()}}
    name = raw.get("name") if isinstance(raw, Mapping) else None
    try:
        for field_name in (raw if isinstance(raw, Mapping) else {}):
            if field_name in owners and field_name not in spec.key_sections:
                raise ConfigError(f"{path}.{field_name}",
                                  f"only {owners[field_name]} keys take one (this provider is {kind})")
        fields = read_section(raw, path, table, ctx)
        for section_name, ks in spec.key_sections.items():
            if ks.required and section_name not in fields:
                why = f" ({ks.why})" if ks.why else ""
                raise ConfigError(f"{path}.{section_name}", f"required for {kind} keys{why}")
    except ConfigError as exc:
        raise (exc.noting(f'key "{name}"') if isinstance(name, str) and name else exc) from None
    models = fields.get("models", ("*",))
    if version == 1 and not models:
        models = ("*",)  # upstream v1.4 semantics, kept for files that say "version": 1
    return KeyConfig(
        name=fields["name"],
        value=Secret(fields.get("value", "")),
        weight=fields.get("weight", 1.0),
        models=models,
        aliases=MappingProxyType(fields.get("aliases", {})),
        enabled=fields.get("enabled", True),
        sections=MappingProxyType(
            {n: MappingProxyType(fields[n]) for n in spec.key_sections if n in fields}
        ),
    )


def _network(fields: dict[str, Any], path: str) -> NetworkConfig:
    if "extra_headers" in fields:
        fields["extra_headers"] = MappingProxyType(fields["extra_headers"])
    network = NetworkConfig(**fields)
    if network.retry_backoff_initial > network.retry_backoff_max:
        raise ConfigError(
            f"{path}.retry_backoff_initial",
            f"must not exceed retry_backoff_max ({network.retry_backoff_initial} > {network.retry_backoff_max} ms)",
        )
    return network


# --- the environment --------------------------------------------------------------------------------------------


def from_environment(env: Mapping[str, str], known_kinds: frozenset[str]) -> GatewayConfig:
    """Zero-config: one provider per known kind whose key variable is set (``<KIND>_API_KEY`` unless the kind
    declares another), or, for kinds that need no key, whose base URL variable is set; and the installed
    engines that need no configuration (the local engine: alone when nothing else is set, else beside)."""
    providers: dict[str, ProviderConfig] = {}
    implicit = _implicit_kinds(known_kinds)
    for kind in sorted(known_kinds):
        if kind in implicit:
            continue
        built = _from_env(kind, env)
        if built is not None:
            providers[kind] = built
    providers.update(_implicit(known_kinds, beside=bool(providers)))
    return GatewayConfig(providers=MappingProxyType(providers))


def _from_env(kind: str, env: Mapping[str, str]) -> ProviderConfig | None:
    from bifrost_stt.providers import registry  # imported on use: the registry imports provider modules

    spec = _spec(kind)
    key_var, url_var = registry.env_vars(kind)
    network = NetworkConfig(base_url=env.get(url_var) or None)
    if not env.get(key_var):
        if network.base_url and spec.key_less:
            return ProviderConfig(id=kind, kind=kind, network=network, is_key_less=True)
        return None
    for var, example in spec.env_required.items():
        if not env.get(var):
            raise ConfigError(var, f"required when {key_var} is set (e.g. {example})")
    sections: dict[str, dict[str, str]] = {}
    for var, (section_name, field_name) in spec.env_sections.items():
        if env.get(var):
            sections.setdefault(section_name, {})[field_name] = env[var]
    key = KeyConfig(
        name=key_var,
        value=Secret(header_value(env[key_var], key_var)),
        sections=MappingProxyType({n: MappingProxyType(v) for n, v in sections.items()}),
    )
    return ProviderConfig(id=kind, kind=kind, keys=(key,), network=network)


def _apply_server_env(config: GatewayConfig, env: Mapping[str, str]) -> GatewayConfig:
    ctx = Context(env={})
    changes: dict[str, dict[str, Any]] = {"server": {}, "client": {}}
    for var, (section_name, name, is_int) in SERVER_ENV.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        value: Any = raw
        if is_int:
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(var, "expected an integer") from None
        table = SERVER if section_name == "server" else CLIENT
        changes[section_name][name] = table[name].check(value, var, ctx)
    return replace(
        config,
        server=replace(config.server, **changes["server"]),
        client=replace(config.client, **changes["client"]),
    )


def _kinds_hint(known: frozenset[str]) -> str:
    return f"; known kinds: {', '.join(sorted(known))}; any other name needs custom_provider_config"


def _registry_kinds() -> frozenset[str]:
    from bifrost_stt.providers.registry import known  # imported on use: the registry imports provider modules

    return known()


def _spec(kind: str) -> ConfigSpec:
    from bifrost_stt.providers.registry import config_spec

    return config_spec(kind)


def _section_owners() -> Mapping[str, str]:
    from bifrost_stt.providers.registry import key_section_owners

    return key_section_owners()
