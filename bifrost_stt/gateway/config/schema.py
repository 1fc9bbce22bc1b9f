"""The configuration file's shape as tables: one ``{field name: Field}`` dict per section.

Why tables: upstream Bifrost's config.json has dozens of fields, most of which we accept without using. A
table per section keeps "what exists, what type, what we do with it" in one readable place; the walker and
the checks are in ``bifrost_stt.kernel.fields``. Vendor key sections are declared by their providers
(``ProviderConfigSpec`` in the kernel's capabilities), not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bifrost_stt.kernel.fields import (
    ConfigError,
    Context,
    Field,
    array,
    as_object,
    boolean,
    header_map,
    integer,
    join,
    map_of,
    positive_number,
    read_section,
    section,
    string,
    strings,
)
from bifrost_stt.kernel.settings import MAX_RESULT_TTL

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


KEY: Mapping[str, Field] = {
    "name": Field(string(non_empty=True), required=True),
    "value": Field(string(env=True, header=True)),
    "weight": Field(positive_number),
    "models": Field(strings),
    "aliases": Field(map_of(alias_target)),
    "enabled": Field(boolean),
    # vendor sections (azure_key_config, vllm_key_config, ...) come from each provider's ConfigSpec
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
    "max_response_size_mb": Field(integer(minimum=1)),  # our own addition
    "max_stream_event_size_kb": Field(integer(minimum=1)),  # our own addition
    "max_stream_duration_in_seconds": Field(positive_number),  # our own addition
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
    "async_job_result_ttl": Field(integer(minimum=1, maximum=MAX_RESULT_TTL)),
    "allowed_origins": Field(strings),
    "allow_direct_keys": Field(boolean),
    "reject_non_audio": Field(boolean),  # our own addition
    "spool_threshold_kb": Field(integer(minimum=0)),  # our own addition
    "job_store_path": Field(string(non_empty=True)),  # our own addition: the async jobs' SQLite file
    "max_pending_jobs": Field(integer(minimum=1)),  # our own addition
    "enable_logging": Field(boolean),
    "disable_content_logging": Field(boolean),
    "log_retention_days": Field(integer(minimum=1)),
    "spool_dir": Field(string(non_empty=True)),  # our own addition: where uploads and long-audio pieces spool
    # a request without a virtual key is 401 (bifrost_stt.gateway.governance)
    "enforce_auth_on_inference": Field(boolean),
    "enforce_governance_header": Field(boolean),
    "enforce_scim_auth": Field(boolean, use="unsupported"),
    "required_headers": Field(strings, use="unsupported"),
    **{
        name: Field(use="ignore")
        for name in (
            "initial_pool_size", "prometheus_labels",
            "allow_per_request_content_storage_override", "allow_per_request_raw_override",
            "disable_db_pings_in_health", "dump_errors_in_console_logs", "webhook_config",
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
    "max_audio_seconds": Field(positive_number),
    "limits": Field(map_of(section(AUDIO_LIMIT))),  # "provider" or "provider/model" -> limits
}

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")

# logs_store.config: a SQLite file, or a PostgreSQL server (upstream's field names).
LOGS_STORE_CONFIG: Mapping[str, Field] = {
    "path": Field(string(env=True, non_empty=True)),
    "host": Field(string(env=True, non_empty=True)),
    "port": Field(integer(minimum=1, maximum=65535)),
    "user": Field(string(env=True)),
    "password": Field(string(env=True)),
    "db_name": Field(string(env=True, non_empty=True)),
    "ssl_mode": Field(string(choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"))),
    "max_idle_conns": Field(use="ignore"),
    "max_open_conns": Field(use="ignore"),
}

LOGS_STORE: Mapping[str, Field] = {
    "enabled": Field(boolean),
    "type": Field(string(choices=("sqlite", "postgres"))),
    "config": Field(section(LOGS_STORE_CONFIG)),
    "retention_days": Field(integer(minimum=1)),
    "max_rows": Field(integer(minimum=1)),  # our own addition: retention by count
    "object_storage": Field(use="ignore"),
}

AUTH: Mapping[str, Field] = {
    "is_enabled": Field(boolean),
    "admin_username": Field(string(env=True)),
    "admin_password": Field(string(env=True)),
    "disable_auth_on_inference": Field(boolean),
}


SERVER: Mapping[str, Field] = {
    "host": Field(string(non_empty=True)),
    "port": Field(integer(minimum=0, maximum=65535)),
    "workers": Field(integer(minimum=1)),
    "log_level": Field(string(choices=LOG_LEVELS)),
    "spec_dir": Field(string(non_empty=True)),
    "log_format": Field(string(choices=LOG_FORMATS)),  # our own addition
    "header_timeout_in_seconds": Field(positive_number),  # our own addition
    "body_timeout_in_seconds": Field(positive_number),  # our own addition
    "min_upload_rate_kb": Field(integer(minimum=0)),  # our own addition
    "max_connections": Field(integer(minimum=0)),  # our own addition
    "read_buffer_size": Field(use="ignore"),  # upstream's own server setting
}

# Upstream top-level sections that do not concern transcription (transports/config.schema.json).
IGNORED_SECTIONS = (
    "access_profiles", "alerting", "audit_logs", "auth_config", "circuit_breaker_config", "cluster_config",
    "encryption_key", "env_label", "feature_flags", "framework",
    "guardrails_config", "large_payload_optimization", "load_balancer_config", "mcp",
    "scim_config", "skills_registry", "source_of_truth", "webhooks", "websocket",
)

TOP: Mapping[str, Field] = {
    "providers": Field(as_object),
    "client": Field(section(CLIENT)),
    "server": Field(section(SERVER)),
    "long_audio": Field(section(LONG_AUDIO)),
    # 1 = upstream v1.4 semantics (an empty key `models` list allows every model); 2 (default) = denies all
    "version": Field(integer(minimum=1, maximum=2)),
    "$schema": Field(use="silent"),
    "logs_store": Field(section(LOGS_STORE)),
    "governance": Field(as_object),  # bifrost_stt.gateway.config.governance reads it
    "config_store": Field(as_object),
    # the cache's sections, read by bifrost_stt.gateway.config.cache (their shape lives there)
    "plugins": Field(),
    "vector_store": Field(),
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
