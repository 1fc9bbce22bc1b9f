"""A provider declares its own key shape and variables (ConfigSpec): the shared config has no vendor branch.

This module doubles as a provider module for a made-up kind ``acme``, registered for the test only: one
module and one registry line is all a provider with its own key shape needs.
"""

from __future__ import annotations

from typing import Any

import pytest

from bifrost_stt.gateway.config.load import ConfigError, from_document, from_environment
from bifrost_stt.kernel.capabilities import ConfigSpec, KeySection
from bifrost_stt.kernel.fields import Field, string
from bifrost_stt.providers import registry

ACME_CONFIG = ConfigSpec(
    key_sections={"acme_key_config": KeySection({"region": Field(string(non_empty=True), required=True)},
                                                required=True, why="its region")},
    env_key="ACME_TOKEN",
    env_sections={"ACME_REGION": ("acme_key_config", "region")},
    env_required={"ACME_REGION": "eu-1"},
)


def create(config: Any, client: Any) -> None:  # never built here: the config room only reads ACME_CONFIG
    raise AssertionError("not built in these tests")


@pytest.fixture(autouse=True)
def acme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "PROVIDERS", {**registry.PROVIDERS, "acme": f"{__name__}:create"})


def _doc(key: dict[str, Any], pid: str = "acme") -> dict[str, Any]:
    return {"providers": {pid: {"keys": [{"name": "k", "value": "v", **key}]}}}


KINDS = frozenset({"acme", "openai", "azure"})


def test_the_kind_reads_its_own_key_section() -> None:
    config = from_document(_doc({"acme_key_config": {"region": "eu-1"}}), {}, KINDS)
    assert dict(config.providers["acme"].keys[0].section("acme_key_config")) == {"region": "eu-1"}


def test_its_section_is_required_checked_and_foreign_to_other_kinds() -> None:
    with pytest.raises(ConfigError, match=r"providers\.acme\.keys\[0\]\.acme_key_config: required for acme keys "
                                          r"\(its region\)"):
        from_document(_doc({}), {}, KINDS)
    with pytest.raises(ConfigError, match=r"acme_key_config\.region: required field"):
        from_document(_doc({"acme_key_config": {}}), {}, KINDS)
    with pytest.raises(ConfigError, match=r"only acme keys take one \(this provider is openai\)"):
        from_document(_doc({"acme_key_config": {"region": "x"}}, pid="openai"), {}, KINDS)


def test_zero_config_from_its_own_variables() -> None:
    config = from_environment({"ACME_TOKEN": "t0ken-value", "ACME_REGION": "us-2"}, KINDS)
    key = config.providers["acme"].keys[0]
    assert key.name == "ACME_TOKEN" and dict(key.section("acme_key_config")) == {"region": "us-2"}
    with pytest.raises(ConfigError, match="ACME_REGION: required when ACME_TOKEN is set"):
        from_environment({"ACME_TOKEN": "t0ken-value"}, KINDS)
    assert registry.env_hint("acme") == "ACME_TOKEN and ACME_REGION"
