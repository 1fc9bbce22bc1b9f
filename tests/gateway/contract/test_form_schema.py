"""Coercion of form text per the schema, and schema errors in upstream's words."""

from __future__ import annotations

from typing import Any

import pytest

from bifrost_stt.kernel.errors import ClientError, GatewayError
from bifrost_stt.gateway.contract.form_schema import FILE_PLACEHOLDER, coerce, compile_plan, plan_cache, schema_error

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "file"],
    "properties": {
        "model": {"type": "string"},
        "file": {"type": "string", "format": "binary"},
        "n": {"type": "integer"},
        "opts": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "integer"}},
        "grains": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
    },
    "allOf": [{"properties": {"stream": {"allOf": [{"type": "boolean"}]}}}],
}


def first_error(instance: dict[str, Any]) -> ClientError:
    plan = compile_plan(SCHEMA)
    return schema_error(next(iter(plan.validator.iter_errors(instance))))


def test_kinds() -> None:
    props = compile_plan(SCHEMA).props
    assert props["file"].kind == "binary" and props["stream"].kind == "boolean"
    assert (props["tags"].kind, props["tags"].items) == ("array", "integer")


def test_coerce() -> None:
    props = compile_plan(SCHEMA).props
    assert coerce("n", ["7"], props["n"]) == 7
    assert coerce("n", ["7.5"], props["n"]) == "7.5"  # left for the schema to refuse
    assert coerce("opts", ['{"a": 1}'], props["opts"]) == {"a": 1}
    assert coerce("tags", ["1", "2"], props["tags"]) == [1, 2]
    assert coerce("tags", ["[1, 2]"], props["tags"]) == ["[1, 2]"]  # JSON arrays only for string items
    assert coerce("grains", ['["word"]'], props["grains"]) == ["word"]
    assert coerce("stream", ["nAn"], props["stream"]) == "nAn"
    assert coerce("stream", ["TrUe"], props["stream"]) is True and coerce("stream", ["FALSE"], props["stream"]) is False
    for spelling in ("1", "0", "yes", "no", "on"):  # not the document's encoding: left for the schema to refuse
        assert coerce("stream", [spelling], props["stream"]) == spelling
    with pytest.raises(ClientError) as err:
        coerce("model", ["a", "b"], props["model"])
    assert err.value.param == "model"


def test_number_rejects_non_finite() -> None:
    from bifrost_stt.gateway.contract.form_schema import Prop

    assert coerce("t", ["inf"], Prop("number")) == "inf"
    assert coerce("t", ["1e-3"], Prop("number")) == 0.001


def test_errors_read_like_upstream() -> None:
    assert first_error({"file": FILE_PLACEHOLDER}).message == "model is required"
    err = first_error({"model": "m", "file": "", "grains": ["line"]})
    assert err.param == "grains" and "word, segment" in err.message
    err = first_error({"model": "m", "file": "", "n": "x"})
    assert err.param == "n" and "integer" in err.message


def test_cache_by_identity() -> None:
    cache = plan_cache()
    assert cache.get(SCHEMA) is cache.get(SCHEMA)
    assert cache.get(dict(SCHEMA)) is not cache.get(SCHEMA)


def test_broken_schema_is_our_error() -> None:
    with pytest.raises(GatewayError) as err:
        compile_plan({"type": 12})
    assert err.value.status == 500 and not isinstance(err.value, ClientError)
