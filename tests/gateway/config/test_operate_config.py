"""logs_store, client logging switches and governance.auth_config, in upstream's config.json shape."""

from __future__ import annotations

from typing import Any

import pytest

from bifrost_stt.gateway.config.load import ConfigError, apply_overrides, from_document
from bifrost_stt.server.cli import summary

KINDS = frozenset({"openai"})
PASSWORD = "adm1n-Pa55word-value"
ENV = {"ADMIN_PW": PASSWORD, "PG_PASSWORD": "pg-5ecret"}


def load(document: dict[str, Any]) -> Any:
    return from_document(document, ENV, KINDS)


def test_defaults_logs_off_auth_off() -> None:
    config = load({})
    assert not config.logs_store.enabled and config.logs_store.type == "sqlite"
    assert config.client.enable_logging and not config.client.disable_content_logging
    assert not config.auth.active
    assert "logs_store: off" in summary(config, None) and "admin auth: off (everything open)" in summary(config, None)


def test_sqlite_and_postgres_stores_in_upstream_shape() -> None:
    sqlite = load({"logs_store": {"enabled": True, "type": "sqlite", "config": {"path": "/var/lib/b/logs.db"},
                                  "retention_days": 30},
                   "client": {"disable_content_logging": True, "log_retention_days": 90}})
    assert sqlite.logs_store.path == "/var/lib/b/logs.db" and sqlite.logs_store.retention_days == 30
    assert sqlite.client.disable_content_logging and sqlite.client.log_retention_days == 90
    pg = load({"logs_store": {"enabled": True, "type": "postgres", "config": {
        "host": "db", "port": 5433, "user": "bf", "password": "env.PG_PASSWORD", "db_name": "logs",
        "ssl_mode": "require", "max_open_conns": 10}}})
    store = pg.logs_store
    assert (store.host, store.port, store.user, store.db_name, store.ssl_mode) == ("db", 5433, "bf", "logs", "require")
    assert store.password.reveal() == "pg-5ecret" and "pg-5ecret" not in repr(pg)
    assert "pg-5ecret" not in "\n".join(summary(pg, None))
    assert "logs_store.config.max_open_conns" in pg.ignored_sections


@pytest.mark.parametrize(("document", "path"), [
    ({"logs_store": {"enabled": True, "type": "mysql"}}, "logs_store.type"),
    ({"logs_store": {"enabled": True, "type": "postgres", "config": {"host": "db"}}}, "logs_store.config.db_name"),
    ({"logs_store": {"enabled": "yes"}}, "logs_store.enabled"),
    ({"logs_store": {"enabled": True, "retention": 3}}, "logs_store.retention"),
    ({"governance": {"auth_config": {"is_enabled": True, "admin_username": "a"}}}, "governance.auth_config.admin_password"),
    ({"governance": {"auth_config": {"is_enabled": True, "admin_password": "x"}}}, "governance.auth_config.admin_username"),
    ({"governance": {"auth_config": {"admin_pasword": "x"}}}, "governance.auth_config.admin_pasword"),
    ({"client": {"enable_logging": "true"}}, "client.enable_logging"),
])
def test_mistakes_name_their_path(document: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(document)
    assert caught.value.path == path
    assert PASSWORD not in str(caught.value)


def test_auth_config_reads_env_and_never_shows_the_password() -> None:
    config = load({"governance": {"auth_config": {"is_enabled": True, "admin_username": "ops",
                                                  "admin_password": "env.ADMIN_PW"}}})
    assert config.auth.active and config.auth.admin_password.reveal() == PASSWORD
    assert not config.auth.disable_auth_on_inference  # upstream's default
    assert "governance.auth_config" not in config.ignored_sections  # read here, not by governance
    assert PASSWORD not in repr(config) and PASSWORD not in "\n".join(summary(config, None))
    assert "admin auth: on, user ops" in summary(config, None)
    off = load({"governance": {"auth_config": {"is_enabled": False, "admin_username": "ops"}}})
    assert not off.auth.active


def test_log_format_override() -> None:
    config = apply_overrides(load({"server": {"log_format": "json"}}), {"log_format": None})
    assert config.server.log_format == "json"
    assert apply_overrides(config, {"log_format": "text"}).server.log_format == "text"
    with pytest.raises(ConfigError):
        apply_overrides(config, {"log_format": "xml"})
