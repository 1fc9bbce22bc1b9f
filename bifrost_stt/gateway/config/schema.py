"""The configuration file's shape as tables: one ``{field name: Field}`` dict per section.

Why tables: upstream Bifrost's config.json has dozens of fields, most of which we accept without using. A
table per section keeps "what exists, what type, what we do with it" in one readable place, and one small
walker (``read_section``) turns every mistake into a ``ConfigError`` naming the dotted path. The builders in
``bifrost_stt.gateway.config.load`` only ever see values that already have the right type and range.

What a ``Field.use`` means:
- ``use``: validated and returned to the builder.
- ``ignore``: upstream setting that does not concern transcription; recorded in ``ignored`` when present.
- ``unsupported``: upstream setting that would change behaviour here but has no effect; validated, and
  recorded in ``unsupported`` when set to something other than false/empty.
- ``silent``: accepted and dropped without a word (``$schema``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Use = Literal["use", "ignore", "unsupported", "silent"]


class ConfigError(Exception):
    """A configuration mistake, named by its dotted path (``providers.openai.keys[0].weight``).

    Messages name fields and environment variables, never a value read from a secret field.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def noting(self, note: str) -> ConfigError:
        """The same error with a note appended, e.g. which key (by name) it concerns."""
        return ConfigError(self.path, f"{self.message} ({note})")


@dataclass(slots=True)
class Context:
    """What a walk needs besides the value: the environment for ``env.VAR``, and where to report."""

    env: Mapping[str, str]
    ignored: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


Check = Callable[[Any, str, Context], Any]


def anything(value: Any, path: str, ctx: Context) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Field:
    check: Check = anything
    required: bool = False
    use: Use = "use"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def suggestion(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean "weight"?)' for the closest candidate, or nothing."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _wrong_type(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(path, f"expected {expected}, got {json_type(value)}")


def read_section(value: Any, path: str, schema: Mapping[str, Field], ctx: Context) -> dict[str, Any]:
    """Validate one object against its table; return the checked values of the ``use`` fields."""
    obj = as_object(value, path, ctx)
    out: dict[str, Any] = {}
    for key, raw in obj.items():
        sub = join(path, key)
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(sub, "unknown field" + suggestion(key, schema))
        if spec.use == "silent":
            continue
        if spec.use == "ignore":
            ctx.ignored.append(sub)
            continue
        checked = spec.check(raw, sub, ctx)
        if spec.use == "unsupported":
            if checked not in (None, False, "", [], {}, ()):
                ctx.unsupported.append(sub)
            continue
        out[key] = checked
    for name, spec in schema.items():
        if spec.required and name not in obj:
            raise ConfigError(join(path, name), "required field is missing")
    return out


# --- checkers -------------------------------------------------------------------------------------------------


def as_object(value: Any, path: str, ctx: Context) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong_type(path, "object", value)
    return {str(k): v for k, v in value.items()}


def boolean(value: Any, path: str, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(path, "boolean", value)
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: Any, path: str, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, "integer", value)
        if minimum is not None and value < minimum:
            raise ConfigError(path, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(path, f"must be at most {maximum}, got {value}")
        return value

    return check


def positive_number(value: Any, path: str, ctx: Context) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(path, "number", value)
    if value <= 0:
        raise ConfigError(path, f"must be greater than 0, got {value}")
    return float(value)


def resolve_env(value: str, path: str, ctx: Context) -> str:
    """``env.VAR`` → the variable's value (upstream's syntax); anything else is a literal."""
    if not value.startswith("env."):
        return value
    var = value[4:]
    if not var:
        raise ConfigError(path, '"env." needs a variable name, e.g. "env.OPENAI_API_KEY"')
    if var not in ctx.env:
        raise ConfigError(path, f"environment variable {var} is not set")
    return ctx.env[var]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_value(value: str, path: str) -> str:
    """A value bound for an HTTP header (a key, an extra header): surrounding whitespace dropped (a key
    read from a secret file often ends in a newline), any other control character refused here rather
    than failing every request later."""
    value = value.strip()
    if _CONTROL.search(value):
        raise ConfigError(path, "must not contain control characters (line breaks, tabs): it goes into an HTTP header")
    return value


def header_map(value: Any, path: str, ctx: Context) -> dict[str, str]:
    """``extra_headers``: valid header names, header-safe values."""
    obj = as_object(value, path, ctx)
    out: dict[str, str] = {}
    for name, item in obj.items():
        if not _TOKEN.fullmatch(name):
            raise ConfigError(join(path, name), "is not a valid HTTP header name")
        out[name] = header_value(string()(item, join(path, name), ctx), join(path, name))
    return out


def string(
    *, env: bool = False, choices: tuple[str, ...] = (), non_empty: bool = False, header: bool = False
) -> Check:
    def check(value: Any, path: str, ctx: Context) -> str:
        if not isinstance(value, str):
            raise _wrong_type(path, "string", value)
        if env:
            value = resolve_env(value, path, ctx)
        if header:
            value = header_value(value, path)
        if choices and value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}; got {value!r}" + suggestion(value, choices))
        if non_empty and not value:
            raise ConfigError(path, "must not be empty")
        return str(value)

    return check


def strings(value: Any, path: str, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _wrong_type(path, "array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _wrong_type(f"{path}[{i}]", "string", item)
    return tuple(value)


def array(value: Any, path: str, ctx: Context) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong_type(path, "array", value)
    return value


def map_of(item: Check) -> Check:
    def check(value: Any, path: str, ctx: Context) -> dict[str, Any]:
        obj = as_object(value, path, ctx)
        return {k: item(v, join(path, k), ctx) for k, v in obj.items()}

    return check


def section(schema: Mapping[str, Field]) -> Check:
    def check(value: Any, path: str, ctx: Context) -> dict[str, Any]:
        return read_section(value, path, schema, ctx)

    return check


# --- the tables -----------------------------------------------------------------------------------------------

# key.aliases values: upstream's legacy string, or its AliasConfig object of which we read model_id.
ALIAS_OBJECT: Mapping[str, Field] = {
    "model_id": Field(string(non_empty=True), required=True),
    "endpoint": Field(string(), use="unsupported"),
    "api_version": Field(string(), use="unsupported"),
    **{
        name: Field(use="ignore")
        for name in (
            "model_name", "model_family", "description", "region", "anthropic_version", "project_id",
            "project_number", "force_single_region", "inference_profile_arn", "use_deployments_endpoint",
        )
    },
}


def alias_target(value: Any, path: str, ctx: Context) -> str:
    if isinstance(value, str):
        if not value:
            raise ConfigError(path, "must not be empty")
        return value
    model_id: str = read_section(value, path, ALIAS_OBJECT, ctx)["model_id"]
    return model_id


AZURE_KEY: Mapping[str, Field] = {
    "endpoint": Field(string(env=True, non_empty=True), required=True),
    "api_version": Field(string(non_empty=True)),
    # Entra ID (client credentials) authentication: accepted, not implemented; the key's value is sent instead.
    "client_id": Field(string(), use="unsupported"),
    "client_secret": Field(string(), use="unsupported"),
    "tenant_id": Field(string(), use="unsupported"),
    "scopes": Field(strings, use="unsupported"),
}

VLLM_KEY: Mapping[str, Field] = {
    "url": Field(string(env=True, non_empty=True)),
    "model_name": Field(string(non_empty=True)),
}

KEY: Mapping[str, Field] = {
    "name": Field(string(non_empty=True), required=True),
    "value": Field(string(env=True, header=True)),
    "weight": Field(positive_number),
    "models": Field(strings),
    "aliases": Field(map_of(alias_target)),
    "enabled": Field(boolean),
    "azure_key_config": Field(section(AZURE_KEY)),
    "vllm_key_config": Field(section(VLLM_KEY)),
    "use_for_batch_api": Field(use="ignore"),
}

NETWORK: Mapping[str, Field] = {
    "base_url": Field(string(env=True, non_empty=True)),
    "extra_headers": Field(header_map),
    "default_request_timeout_in_seconds": Field(positive_number),
    "connect_timeout_in_seconds": Field(positive_number),  # our own addition
    "max_retries": Field(integer(minimum=0)),
    "retry_backoff_initial": Field(integer(minimum=0)),  # ms
    "retry_backoff_max": Field(integer(minimum=0)),  # ms
    "stream_idle_timeout_in_seconds": Field(positive_number),
    "max_conns_per_host": Field(integer(minimum=1)),
    "insecure_skip_verify": Field(boolean, use="unsupported"),
    "ca_cert_pem": Field(string(), use="unsupported"),
    "enforce_http2": Field(boolean, use="unsupported"),
    "keep_alive_timeout_in_seconds": Field(integer(minimum=1), use="unsupported"),
    "beta_header_overrides": Field(use="ignore"),
    "allow_private_network": Field(use="ignore"),  # nothing here blocks private addresses
}

CONCURRENCY: Mapping[str, Field] = {
    "concurrency": Field(integer(minimum=1), required=True),
    "buffer_size": Field(integer(minimum=1), required=True),
}

CUSTOM_PROVIDER: Mapping[str, Field] = {
    "base_provider_type": Field(string(non_empty=True), required=True),
    "is_key_less": Field(boolean),
    "request_path_overrides": Field(map_of(string(non_empty=True))),
    "allowed_requests": Field(map_of(boolean)),
}

PROVIDER: Mapping[str, Field] = {
    "keys": Field(array),
    "network_config": Field(section(NETWORK)),
    "concurrency_and_buffer_size": Field(section(CONCURRENCY)),
    "proxy_config": Field(as_object, use="unsupported"),
    # Raw provider bodies in extra_fields are not produced here: reported when turned on, never silent.
    "send_back_raw_request": Field(boolean, use="unsupported"),
    "send_back_raw_response": Field(boolean, use="unsupported"),
    "store_raw_request_response": Field(boolean),
    "custom_provider_config": Field(section(CUSTOM_PROVIDER)),
    "allow_direct_keys": Field(boolean),  # our own addition; default from client.allow_direct_keys
}

CLIENT: Mapping[str, Field] = {
    "drop_excess_requests": Field(boolean),
    "max_request_body_size_mb": Field(integer(minimum=1)),
    "async_job_result_ttl": Field(integer(minimum=1, maximum=30 * 24 * 3600)),  # bifrost_stt.gateway.jobs.runner.MAX_RESULT_TTL
    "allowed_origins": Field(strings),
    "allow_direct_keys": Field(boolean),
    "reject_non_audio": Field(boolean),  # our own addition
    "spool_threshold_kb": Field(integer(minimum=0)),  # our own addition
    "job_store_path": Field(string(non_empty=True)),  # our own addition: the async jobs' SQLite file
    "max_pending_jobs": Field(integer(minimum=1)),  # our own addition
    "spool_dir": Field(string(non_empty=True)),  # our own addition: where uploads and long-audio pieces spool
    # would change who may call the gateway: reported when true, since nothing here enforces it
    "enforce_auth_on_inference": Field(boolean, use="unsupported"),
    "enforce_governance_header": Field(boolean, use="unsupported"),
    "enforce_scim_auth": Field(boolean, use="unsupported"),
    "required_headers": Field(strings, use="unsupported"),
    **{
        name: Field(use="ignore")
        for name in (
            "initial_pool_size", "prometheus_labels", "enable_logging", "disable_content_logging",
            "allow_per_request_content_storage_override", "allow_per_request_raw_override",
            "disable_db_pings_in_health", "dump_errors_in_console_logs", "webhook_config", "log_retention_days",
            "dual_credential_conflict_behavior", "compat", "header_filter_config", "logging_headers",
            "whitelisted_routes", "hide_deleted_virtual_keys_in_filters", "allowed_headers", "mcp_agent_depth",
            "mcp_tool_execution_timeout", "mcp_code_mode_binding_level", "mcp_tool_sync_interval",
            "mcp_disable_auto_tool_inject", "mcp_enable_temp_token_auth", "routing_chain_max_depth",
            "mcp_external_client_url", "mcp_server_auth_mode", "oauth2_server_config",
        )
    },
}

AUDIO_LIMIT: Mapping[str, Field] = {
    "max_file_mb": Field(integer(minimum=1)),
    "max_duration_seconds": Field(positive_number),
}

# Ours: splitting audio over a target's limits (bifrost_stt.gateway.longaudio; docs/long-audio.md).
LONG_AUDIO: Mapping[str, Field] = {
    "enabled": Field(boolean),
    "max_parallel_chunks": Field(integer(minimum=1, maximum=64)),
    "piece_format": Field(string(choices=("flac", "opus"))),
    "overlap_seconds": Field(positive_number),
    "search_window_seconds": Field(positive_number),
    "min_piece_seconds": Field(positive_number),
    "carry_prompt": Field(boolean),
    "limits": Field(map_of(section(AUDIO_LIMIT))),  # "provider" or "provider/model" -> limits
}

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

SERVER: Mapping[str, Field] = {
    "host": Field(string(non_empty=True)),
    "port": Field(integer(minimum=0, maximum=65535)),
    "workers": Field(integer(minimum=1)),
    "log_level": Field(string(choices=LOG_LEVELS)),
    "spec_dir": Field(string(non_empty=True)),
    "read_buffer_size": Field(use="ignore"),  # upstream's own server setting
}

# Upstream top-level sections that do not concern transcription (transports/config.schema.json).
IGNORED_SECTIONS = (
    "access_profiles", "alerting", "audit_logs", "auth_config", "circuit_breaker_config", "cluster_config",
    "config_store", "encryption_key", "env_label", "feature_flags", "framework", "governance",
    "guardrails_config", "large_payload_optimization", "load_balancer_config", "logs_store", "mcp", "plugins",
    "scim_config", "skills_registry", "source_of_truth", "vector_store", "webhooks", "websocket",
)

TOP: Mapping[str, Field] = {
    "providers": Field(as_object),
    "client": Field(section(CLIENT)),
    "server": Field(section(SERVER)),
    "long_audio": Field(section(LONG_AUDIO)),
    # 1 = upstream v1.4 semantics (an empty key `models` list allows every model); 2 (default) = denies all
    "version": Field(integer(minimum=1, maximum=2)),
    "$schema": Field(use="silent"),
    **{name: Field(use="ignore") for name in IGNORED_SECTIONS},
}

# Provider ids upstream knows. One of these that no module here implements is accepted and reported as
# ignored (an upstream file with `anthropic` still loads); any other unknown id is a mistake.
UPSTREAM_PROVIDER_IDS = frozenset({
    "openai", "anthropic", "bedrock", "bedrock_mantle", "cohere", "azure", "vertex", "mistral", "ollama", "groq",
    "gemini", "opencode-go", "opencode-zen", "openrouter", "sgl", "parasail", "perplexity", "replicate",
    "elevenlabs", "deepgram", "cerebras", "deepseek", "vllm", "huggingface", "fireworks", "nebius", "xai",
    "runway", "runware", "sarvam",
})
