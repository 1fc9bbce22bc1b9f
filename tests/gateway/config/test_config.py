"""bifrost_stt.gateway.config.load: upstream-shaped files (JSON and YAML), env references, mistakes by path, zero-config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bifrost_stt.gateway.config.load import ConfigError, apply_overrides, config_from_environ, from_document, load_config
from bifrost_stt.kernel.settings import GatewayConfig

KINDS = frozenset({"openai", "azure", "groq", "mistral", "vllm", "huggingface", "elevenlabs"})
SECRET = "sk-test-5ecret-value"

UPSTREAM: dict[str, Any] = {
    "$schema": "https://www.getbifrost.ai/schema",
    "encryption_key": "env.BIFROST_ENCRYPTION_KEY",
    "client": {"drop_excess_requests": True, "enable_logging": True, "max_request_body_size_mb": 50,
               "allowed_origins": ["*"], "initial_pool_size": 300},
    "providers": {
        "openai": {
            "keys": [
                {"name": "primary", "value": "env.OPENAI_API_KEY", "models": ["*"], "weight": 0.7},
                {"name": "whisper-only", "value": "sk-literal", "models": ["whisper-1"], "weight": 0.3,
                 "use_for_batch_api": False},
            ],
            "network_config": {"base_url": "http://127.0.0.1:9999", "default_request_timeout_in_seconds": 60,
                               "max_retries": 2, "retry_backoff_initial": 100, "retry_backoff_max": 2000,
                               "extra_headers": {"x-team": "stt"}},
            "concurrency_and_buffer_size": {"concurrency": 10, "buffer_size": 20},
            "send_back_raw_response": True,
        },
        "azure": {
            "keys": [{"name": "eu", "value": "env.AZURE_KEY", "weight": 1,
                      "aliases": {"whisper-1": "whisper-deploy", "gpt-4o-transcribe": {"model_id": "g4o"}},
                      "azure_key_config": {"endpoint": "env.AZURE_ENDPOINT", "api_version": "2025-01-01"}}],
        },
        "anthropic": {"keys": [{"name": "a", "value": "x", "weight": 1.0}]},
    },
    "config_store": {"enabled": False},
    "logs_store": {"enabled": True, "type": "sqlite", "config": {"path": "./logs.db"}},
    "governance": {"budgets": []},
    "plugins": [{"enabled": True, "name": "maxim", "config": {"api_key": "x"}}],
}
ENV = {"OPENAI_API_KEY": SECRET, "AZURE_KEY": "az-key", "AZURE_ENDPOINT": "https://eu.openai.azure.com"}


def load(doc: Any, env: dict[str, str] | None = None) -> GatewayConfig:
    return from_document(doc, ENV if env is None else env, KINDS)


def error(doc: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(doc, env)
    return str(info.value)


def provider(body: dict[str, Any], pid: str = "openai") -> dict[str, Any]:
    return {"providers": {pid: body}}


def key(**fields: Any) -> dict[str, Any]:
    return {"providers": {"openai": {"keys": [{"name": "k", "value": "v", "weight": 1, **fields}]}}}


def check_upstream(config: GatewayConfig) -> None:
    assert list(config.providers) == ["openai", "azure"]
    openai = config.providers["openai"]
    assert openai.kind == "openai"
    assert [k.name for k in openai.keys] == ["primary", "whisper-only"]
    assert openai.keys[0].value.reveal() == SECRET
    assert openai.keys[0].weight == 0.7
    assert openai.keys[1].models == ("whisper-1",)
    assert openai.network.base_url == "http://127.0.0.1:9999"
    assert openai.network.default_request_timeout_in_seconds == 60.0
    assert openai.network.max_retries == 2
    assert dict(openai.network.extra_headers) == {"x-team": "stt"}
    assert (openai.concurrency.concurrency, openai.concurrency.buffer_size) == (10, 20)
    assert "providers.openai.send_back_raw_response" in config.unsupported_fields
    azure_key = config.providers["azure"].keys[0]
    azure_section = azure_key.section("azure_key_config")
    assert azure_section["endpoint"] == "https://eu.openai.azure.com"
    assert azure_section["api_version"] == "2025-01-01"
    assert azure_key.upstream_model("whisper-1") == "whisper-deploy"
    assert azure_key.upstream_model("gpt-4o-transcribe") == "g4o"
    assert config.client.drop_excess_requests and config.client.max_request_body_size_mb == 50
    assert config.client.allowed_origins == ("*",)
    assert set(config.ignored_sections) >= {"encryption_key", "logs_store",
                                            "plugins[0] (maxim)", "client.enable_logging", "client.initial_pool_size",
                                            "providers.anthropic"}
    assert "$schema" not in config.ignored_sections
    assert SECRET not in repr(config)


def test_upstream_json_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(UPSTREAM))
    check_upstream(load_config(path, ENV, KINDS))


def test_upstream_yaml_file(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(UPSTREAM, sort_keys=False))
    check_upstream(load_config(path, ENV, KINDS))


def test_format_sniffed_from_content(tmp_path: Path) -> None:
    as_json = tmp_path / "bifrost.conf"
    as_json.write_text(json.dumps(key()))
    as_yaml = tmp_path / "bifrost.cfg"
    as_yaml.write_text("providers:\n  openai:\n    keys:\n      - {name: k, value: v, weight: 1}\n")
    for path in (as_json, as_yaml):
        assert load_config(path, {}, KINDS).providers["openai"].keys[0].name == "k"


def test_unparseable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "c.json"
    bad.write_text('{"providers": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad, {}, KINDS)
    bad_yaml = tmp_path / "c.yaml"
    bad_yaml.write_text("providers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad_yaml, {}, KINDS)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json", {}, KINDS)


def test_defaults_for_optional_key_fields() -> None:
    k = load({"providers": {"groq": {"keys": [{"name": "g", "value": "v"}]}}}).providers["groq"].keys[0]
    assert (k.weight, k.models, k.enabled, dict(k.aliases)) == (1.0, ("*",), True, {})


def test_empty_models_denies_all_but_version_1_allows_all() -> None:
    assert load(key(models=[])).providers["openai"].keys[0].models == ()
    assert load({**key(models=[]), "version": 1}).providers["openai"].keys[0].models == ("*",)


def test_env_reference_missing_names_variable_and_key_not_value() -> None:
    message = error(key(name="primary", value="env.NOPE_KEY"), env={})
    assert message.startswith("providers.openai.keys[0].value:")
    assert "NOPE_KEY" in message and 'key "primary"' in message


def test_misspelt_field_suggests() -> None:
    message = error(key(wieght=2))
    assert message == 'providers.openai.keys[0].wieght: unknown field (did you mean "weight"?) (key "k")'
    assert 'did you mean "network_config"' in error(provider({"keys": [], "network_confg": {}}))
    assert 'did you mean "providers"' in error({"provders": {}})
    assert 'did you mean "default_request_timeout_in_seconds"' in error(
        provider({"keys": [{"name": "k"}], "network_config": {"default_request_timeout_in_second": 5}}))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (key(weight="1"), "providers.openai.keys[0].weight: expected number, got string"),
        (key(weight=0), "providers.openai.keys[0].weight: must be greater than 0"),
        (key(weight=-1), "providers.openai.keys[0].weight: must be greater than 0"),
        (key(models="*"), "providers.openai.keys[0].models: expected array of strings, got string"),
        (key(enabled="yes"), "providers.openai.keys[0].enabled: expected boolean, got string"),
        (key(value=123), "providers.openai.keys[0].value: expected string, got integer"),
        (provider({"keys": [{"name": "k"}], "network_config": {"default_request_timeout_in_seconds": -1}}),
         "providers.openai.network_config.default_request_timeout_in_seconds: must be greater than 0"),
        (provider({"keys": [{"name": "k"}], "network_config": {"max_retries": 1.5}}),
         "providers.openai.network_config.max_retries: expected integer, got number"),
        (provider({"keys": [{"name": "k"}], "network_config": {"retry_backoff_initial": 900,
                                                                "retry_backoff_max": 100}}),
         "providers.openai.network_config.retry_backoff_initial: must not exceed retry_backoff_max"),
        (provider({"keys": [{"name": "k"}], "concurrency_and_buffer_size": {"concurrency": 4}}),
         "providers.openai.concurrency_and_buffer_size.buffer_size: required field is missing"),
        (provider({"keys": [{"value": "v"}]}), "providers.openai.keys[0].name: required field is missing"),
        (provider({"keys": [{"name": "a"}, {"name": "a"}]}), 'providers.openai.keys[1].name: duplicate key name'),
        (provider({}), "providers.openai.keys: at least one key is required"),
        (provider({"keys": {}}), "providers.openai.keys: expected array, got object"),
        ({"providers": []}, "providers: expected object, got array"),
        ({"client": {"max_request_body_size_mb": 0}}, "client.max_request_body_size_mb: must be at least 1"),
        ({"server": {"port": 70000}}, "server.port: must be at most 65535"),
        ({"server": {"log_level": "loud"}}, "server.log_level: must be one of"),
        ([], "expected object, got array"),
    ],
)
def test_mistakes_name_their_path(doc: Any, expected: str) -> None:
    assert expected in error(doc)


def test_wrong_type_never_echoes_a_secret() -> None:
    message = error(key(value=["sk-in-a-list"]))
    assert "sk-in-a-list" not in message


def test_azure_without_endpoint() -> None:
    no_config = provider({"keys": [{"name": "az", "value": "k", "weight": 1}]}, pid="azure")
    assert error(no_config).startswith("providers.azure.keys[0].azure_key_config: required for azure keys")
    no_endpoint = provider({"keys": [{"name": "az", "value": "k", "azure_key_config": {"api_version": "x"}}]},
                           pid="azure")
    assert error(no_endpoint).startswith("providers.azure.keys[0].azure_key_config.endpoint: required field")
    missing_var = provider({"keys": [{"name": "az", "azure_key_config": {"endpoint": "env.AZ_EP"}}]}, pid="azure")
    assert "environment variable AZ_EP is not set" in error(missing_var, env={})
    default_version = provider({"keys": [{"name": "az", "azure_key_config": {"endpoint": "https://e"}}]}, "azure")
    azure = load(default_version).providers["azure"].keys[0].section("azure_key_config")
    assert dict(azure) == {"endpoint": "https://e"}  # the provider applies its default api_version


def test_azure_entra_fields_accepted_and_reported_unsupported() -> None:
    doc = provider({"keys": [{"name": "az", "azure_key_config": {
        "endpoint": "https://e", "client_id": "c", "client_secret": "s", "tenant_id": "t", "scopes": []}}]}, "azure")
    config = load(doc)
    assert "providers.azure.keys[0].azure_key_config.client_secret" in config.unsupported_fields
    assert "providers.azure.keys[0].azure_key_config.scopes" not in config.unsupported_fields  # empty: no effect


def test_key_configs_belong_to_their_kind() -> None:
    assert "only azure keys" in error(key(azure_key_config={"endpoint": "https://e"}))
    assert "only vllm keys" in error(key(vllm_key_config={"url": "http://v"}))
    vllm = load(provider({"keys": [{"name": "v", "vllm_key_config": {"url": "http://127.0.0.1:8000",
                                                                     "model_name": "whisper"}}]}, "vllm"))
    k = vllm.providers["vllm"].keys[0]
    assert dict(k.section("vllm_key_config")) == {"url": "http://127.0.0.1:8000", "model_name": "whisper"}


def test_custom_provider() -> None:
    doc = provider({
        "keys": [{"name": "k", "value": "v", "weight": 1}],
        "network_config": {"base_url": "http://127.0.0.1:7000"},
        "custom_provider_config": {"base_provider_type": "openai", "request_path_overrides":
                                   {"transcription": "/asr"}, "allowed_requests": {"transcription": True,
                                                                                   "chat_completion": False}},
        "allow_direct_keys": True,
    }, pid="my-whisper")
    p = load(doc).providers["my-whisper"]
    assert (p.id, p.kind, p.allow_direct_keys) == ("my-whisper", "openai", True)
    assert dict(p.request_path_overrides) == {"transcription": "/asr"}
    assert p.allowed_requests == frozenset({"transcription"})


def test_custom_provider_key_less_and_bad_base() -> None:
    p = load(provider({"custom_provider_config": {"base_provider_type": "vllm", "is_key_less": True},
                       "network_config": {"base_url": "http://127.0.0.1:8000"}}, pid="local")).providers["local"]
    assert p.is_key_less and p.keys == () and p.allowed_requests is None
    message = error(provider({"keys": [{"name": "k"}], "custom_provider_config": {"base_provider_type": "opnai"}},
                             pid="x"))
    assert message.startswith("providers.x.custom_provider_config.base_provider_type: unknown provider kind")
    assert 'did you mean "openai"' in message
    assert "base_provider_type: required field" in error(provider({"keys": [], "custom_provider_config": {}}, "x"))


def test_unknown_provider_lists_known_kinds() -> None:
    message = error(provider({"keys": [{"name": "k"}]}, pid="opneai"))
    assert message.startswith('providers.opneai: unknown provider (did you mean "openai"?)')
    assert "known kinds: azure, elevenlabs, groq, huggingface, mistral, openai, vllm" in message
    assert "/" in error(provider({"keys": [{"name": "k"}]}, pid="a/b"))


def test_unsupported_settings_reported_once() -> None:
    doc = provider({"keys": [{"name": "k"}], "proxy_config": {"type": "http", "url": "http://proxy"},
                    "network_config": {"insecure_skip_verify": True, "ca_cert_pem": "-----BEGIN"}})
    doc["providers"]["groq"] = {"keys": [{"name": "g"}], "network_config": {"insecure_skip_verify": False}}
    doc["client"] = {"enforce_auth_on_inference": True}
    config = load(doc)
    assert config.governance.enforce  # enforced by bifrost_stt.gateway.governance
    assert sorted(config.unsupported_fields) == [  # insecure_skip_verify: false has our behaviour: not reported
        "providers.openai.network_config.ca_cert_pem",
        "providers.openai.network_config.insecure_skip_verify",
        "providers.openai.proxy_config",
    ]


def test_client_allow_direct_keys_is_the_provider_default() -> None:
    doc = {"client": {"allow_direct_keys": True}, "providers": {
        "openai": {"keys": [{"name": "k"}]}, "groq": {"keys": [{"name": "g"}], "allow_direct_keys": False}}}
    config = load(doc)
    assert config.providers["openai"].allow_direct_keys and not config.providers["groq"].allow_direct_keys


def test_our_own_sections() -> None:
    config = load({"client": {"reject_non_audio": False, "spool_threshold_kb": 0},
                   "server": {"host": "0.0.0.0", "port": 9000, "workers": 4, "log_level": "debug",
                              "read_buffer_size": 65536}})
    assert (config.client.reject_non_audio, config.client.spool_threshold_kb) == (False, 0)
    assert (config.server.host, config.server.port, config.server.workers, config.server.log_level) == (
        "0.0.0.0", 9000, 4, "debug")
    assert config.ignored_sections == ("server.read_buffer_size",)


def test_empty_document_is_an_empty_config() -> None:
    assert load(None).providers == {}


# --- zero-config from the environment ---------------------------------------------------------------------------


def test_env_zero_config() -> None:
    env = {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "http://127.0.0.1:1", "GROQ_API_KEY": "gsk",
           "AZURE_OPENAI_API_KEY": "az", "AZURE_OPENAI_ENDPOINT": "https://e", "AZURE_OPENAI_API_VERSION": "2025-03-01",
           "HUGGINGFACE_API_KEY": "hf", "MISTRAL_BASE_URL": "http://m", "VLLM_BASE_URL": "http://127.0.0.1:8000"}
    config = load_config(None, env, KINDS)
    assert sorted(config.providers) == ["azure", "groq", "huggingface", "openai", "vllm"]  # mistral: no key
    openai = config.providers["openai"]
    assert openai.keys[0].name == "OPENAI_API_KEY" and openai.keys[0].value.reveal() == SECRET
    assert openai.network.base_url == "http://127.0.0.1:1"
    assert config.providers["groq"].network.base_url is None
    azure = config.providers["azure"].keys[0].section("azure_key_config")
    assert (azure["endpoint"], azure["api_version"]) == ("https://e", "2025-03-01")
    vllm = config.providers["vllm"]
    assert vllm.is_key_less and vllm.keys == () and vllm.network.base_url == "http://127.0.0.1:8000"


def test_env_azure_key_without_endpoint() -> None:
    with pytest.raises(ConfigError, match="^AZURE_OPENAI_ENDPOINT: required when AZURE_OPENAI_API_KEY is set"):
        load_config(None, {"AZURE_OPENAI_API_KEY": "az"}, KINDS)


def test_env_nothing_set_is_an_empty_config() -> None:
    assert load_config(None, {}, KINDS).providers == {}


def test_server_env_applies_over_file_and_zero_config(tmp_path: Path) -> None:
    env = {"BIFROST_STT_HOST": "0.0.0.0", "BIFROST_STT_PORT": "9001", "BIFROST_STT_MAX_BODY_MB": "25"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"server": {"port": 1234}}))
    for config in (load_config(None, env, KINDS), load_config(path, env, KINDS)):
        assert (config.server.host, config.server.port, config.client.max_request_body_size_mb) == (
            "0.0.0.0", 9001, 25)
    with pytest.raises(ConfigError, match="^BIFROST_STT_PORT: expected an integer"):
        load_config(None, {"BIFROST_STT_PORT": "http"}, KINDS)
    with pytest.raises(ConfigError, match="^BIFROST_STT_PORT: must be at most 65535"):
        load_config(None, {"BIFROST_STT_PORT": "99999"}, KINDS)


# --- overrides --------------------------------------------------------------------------------------------------


def test_overrides_win_and_are_checked() -> None:
    config = apply_overrides(GatewayConfig(), {"host": "::", "port": 7000, "workers": 2, "log_level": "warning",
                                               "spec_dir": "/specs"})
    assert (config.server.host, config.server.port, config.server.workers, config.server.log_level,
            config.server.spec_dir) == ("::", 7000, 2, "warning", "/specs")
    unchanged = GatewayConfig()
    assert apply_overrides(unchanged, {"port": None}) is unchanged
    with pytest.raises(ConfigError, match="^overrides.workers: must be at least 1"):
        apply_overrides(GatewayConfig(), {"workers": 0})


def test_overrides_reject_unknown_names() -> None:
    with pytest.raises(ConfigError, match='overrides.prot: unknown override \\(did you mean "port"\\?\\)'):
        apply_overrides(GatewayConfig(), {"prot": 1})


def test_config_from_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bifrost_stt.gateway.config.load as module

    monkeypatch.setattr(module, "_registry_kinds", lambda: KINDS)
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  groq:\n    keys: [{name: g, value: env.GROQ_KEY}]\nserver: {port: 1}\n")
    environ = {"BIFROST_STT_CONFIG": str(path), "BIFROST_STT_OVERRIDES": json.dumps({"port": 8123}),
               "GROQ_KEY": "gsk", "OPENAI_API_KEY": "ignored: a file is given"}
    config = config_from_environ(environ)
    assert list(config.providers) == ["groq"] and config.server.port == 8123
    zero = config_from_environ({"BIFROST_STT_CONFIG": "", "OPENAI_API_KEY": "k"})
    assert list(zero.providers) == ["openai"]
    with pytest.raises(ConfigError, match="^BIFROST_STT_OVERRIDES: not valid JSON"):
        config_from_environ({"BIFROST_STT_OVERRIDES": "{port"})


def test_documented_examples_load() -> None:
    """docs/configuration.md's JSON and YAML examples are valid and say the same thing."""
    yaml = pytest.importorskip("yaml")
    text = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    blocks = {lang: body for lang, body in
              ((chunk.split("\n", 1)[0], chunk.split("\n", 1)[1]) for chunk in text.split("```")[1::2])
              if lang in ("json", "yaml")}
    env = {"OPENAI_API_KEY": "o", "AZURE_OPENAI_API_KEY": "a", "AZURE_OPENAI_ENDPOINT": "https://e"}
    configs = [from_document(json.loads(blocks["json"]), env, KINDS), from_document(yaml.safe_load(blocks["yaml"]),
                                                                                      env, KINDS)]
    assert configs[0] == configs[1]
    assert configs[0].providers["local-whisper"].kind == "openai"
    assert configs[0].providers["azure"].keys[0].upstream_model("whisper-1") == "my-whisper-deployment"
    assert configs[0].ignored_sections == () and configs[0].governance.config_store is None


def test_a_key_with_a_trailing_newline_is_trimmed_and_inner_control_characters_refused() -> None:
    cfg = load_config(None, {"OPENAI_API_KEY": "sk-from-a-file\n"})
    assert cfg.providers["openai"].keys[0].value.reveal() == "sk-from-a-file"
    doc = {"providers": {"openai": {"keys": [{"name": "k", "value": "sk bad\nkey", "weight": 1}]}}}
    with pytest.raises(ConfigError, match=r"providers\.openai\.keys\[0\]\.value: must not contain control"):
        from_document(doc, {}, KINDS)


@pytest.mark.parametrize("headers,where", [({"X-A": "x\r\ny"}, "X-A"), ({"Bad Name": "v"}, "Bad Name")])
def test_extra_headers_must_be_valid_http(headers: dict[str, str], where: str) -> None:
    doc = {"providers": {"openai": {"keys": [{"name": "k", "value": "v", "weight": 1}],
                                    "network_config": {"extra_headers": headers}}}}
    with pytest.raises(ConfigError, match=where):
        from_document(doc, {}, KINDS)
