"""The served contract: what it declares, that Connexion takes its rendering, the overlay engine, and
parity with the upstream Bifrost document (read from ../shared when present, never copied)."""

from __future__ import annotations

import json
from collections.abc import Callable
import os
from pathlib import Path
from typing import Any

import connexion
import pytest
import yaml
from connexion.resolver import Resolver
from connexion.spec import Specification

from bifrost_stt.gateway.contract.loading import (
    OPENAPI_DIR,
    ContractError,
    apply_overlay,
    load_contract,
    operations,
    parse_jsonpath,
    select,
    to_connexion,
)
from bifrost_stt.gateway.contract.operations import FROM_UPSTREAM, SERVED
from bifrost_stt.gateway.contract.sync import sync, to_yaml

UPSTREAM_DOC = Path(os.environ.get("BIFROST_STT_UPSTREAM_DOC") or (
    Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "bifrost-openapi.json"))

TRANSCRIPTION_OPERATIONS = {
    ("post", "/v1/audio/transcriptions", "createTranscription"),
    ("post", "/v1/async/audio/transcriptions", "createAsyncTranscription"),
    ("get", "/v1/async/audio/transcriptions/{job_id}", "getAsyncTranscriptionJob"),
    ("post", "/openai/v1/audio/transcriptions", "openaiCreateTranscription"),
    ("post", "/openai/openai/deployments/{deployment-id}/audio/transcriptions", "azureCreateTranscription"),
    ("post", "/litellm/v1/audio/transcriptions", "litellmOpenAITranscriptions"),
    ("post", "/langchain/v1/audio/transcriptions", "langchainOpenAITranscriptions"),
    ("post", "/pydanticai/v1/audio/transcriptions", "pydanticaiOpenAITranscriptions"),
}
# Every operation the committed document takes from upstream (transcription, and whatever else is served).
SERVED_FROM_UPSTREAM = {
    op for op in operations(yaml.safe_load((OPENAPI_DIR / "bifrost.yaml").read_text(encoding="utf-8")))
    if op[2] in FROM_UPSTREAM
}
INTEGRATION_PATHS = [
    "/openai/v1/audio/transcriptions",
    "/openai/audio/transcriptions",
    "/openai/openai/deployments/{deployment-id}/audio/transcriptions",
    "/litellm/v1/audio/transcriptions",
    "/langchain/v1/audio/transcriptions",
    "/pydanticai/v1/audio/transcriptions",
]
GATEWAY_ERROR_STATUSES = {"401", "404", "413", "415", "429", "502", "503", "504"}


@pytest.fixture(scope="module")
def contract() -> dict[str, Any]:
    return load_contract()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """bifrost.yaml alone: the part that mirrors upstream."""
    return yaml.safe_load((OPENAPI_DIR / "bifrost.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def upstream() -> dict[str, Any]:
    if not UPSTREAM_DOC.is_file():
        pytest.skip(f"upstream document not present at {UPSTREAM_DOC}")
    return json.loads(UPSTREAM_DOC.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# (a) what the served contract declares
# --------------------------------------------------------------------------------------------------


def test_contract_has_the_upstream_operations_plus_ours(contract: dict[str, Any]) -> None:
    ops = set(operations(contract))
    assert TRANSCRIPTION_OPERATIONS <= ops
    assert ("get", "/health", "getHealth") in ops
    assert ("post", "/openai/audio/transcriptions", "openaiCreateTranscriptionAlias") in ops
    assert {op for _, _, op in ops} == set(SERVED)  # the transcription and governance operations, and ours
    assert contract["openapi"] == "3.1.0"


def test_contract_is_a_fresh_copy_each_call() -> None:
    first = load_contract()
    first["paths"].clear()
    assert load_contract()["paths"]


def test_alias_matches_the_openai_route(contract: dict[str, Any]) -> None:
    paths = contract["paths"]
    alias = dict(paths["/openai/audio/transcriptions"]["post"])
    original = dict(paths["/openai/v1/audio/transcriptions"]["post"])
    for key in ("operationId", "summary", "description"):
        alias.pop(key), original.pop(key)
    assert alias == original


def test_integration_routes_declare_text_plain_and_unified_does_not(contract: dict[str, Any]) -> None:
    for path in INTEGRATION_PATHS:
        content = contract["paths"][path]["post"]["responses"]["200"]["content"]
        assert content["text/plain"] == {"schema": {"type": "string"}}, path
        assert {"application/json", "text/event-stream"} <= set(content), path
    unified = contract["paths"]["/v1/audio/transcriptions"]["post"]["responses"]["200"]["content"]
    assert "text/plain" not in unified


def test_every_transcription_operation_declares_gateway_errors(contract: dict[str, Any]) -> None:
    for method, path, operation_id in TRANSCRIPTION_OPERATIONS | {
        ("post", "/openai/audio/transcriptions", "openaiCreateTranscriptionAlias")
    }:
        responses = contract["paths"][path][method]["responses"]
        assert GATEWAY_ERROR_STATUSES <= set(responses), operation_id
        for status in GATEWAY_ERROR_STATUSES | {"400", "500"} & set(responses):
            response = resolve_ref(contract, responses[status])
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/BifrostError"}, (operation_id, status)
        assert "501" not in responses, operation_id  # async jobs are implemented: nothing answers 501
    # the job poll keeps upstream's own 404
    job_404 = contract["paths"]["/v1/async/audio/transcriptions/{job_id}"]["get"]["responses"]["404"]
    assert job_404["description"] == "Job not found or expired"


def test_fallback_bookkeeping_is_declared(contract: dict[str, Any]) -> None:
    schemas = contract["components"]["schemas"]
    attempts = schemas["BifrostErrorExtraFields"]["properties"]["attempts"]
    attempt = resolve_ref(contract, attempts["items"])
    assert {name: spec["type"] for name, spec in attempt["properties"].items()} == {
        "provider": "string",
        "model": "string",
        "status": "integer",
        "message": "string",
    }
    for method, path, operation_id in operations(contract):
        ok = contract["paths"][path][method]["responses"].get("200")
        if ok is not None and path != "/health" and method == "post":
            assert "x-bifrost-fallback-index" in ok["headers"], operation_id


def test_provider_enum_keeps_upstream_ids_and_adds_ours(contract: dict[str, Any]) -> None:
    providers = contract["components"]["schemas"]["ModelProvider"]["enum"]
    assert {"deepgram", "fireworks", "vllm", "openai", "azure", "groq", "elevenlabs"} <= set(providers)
    assert len(providers) == len(set(providers)), "duplicate provider ids"
    # A named custom provider is reported by its configured name: any id without '/', not only the enum's.
    for holder in ("BifrostResponseExtraFields", "BifrostErrorExtraFields"):
        schema = contract["components"]["schemas"][holder]["properties"]["provider"]
        assert "$ref" not in schema and schema["type"] == "string" and schema["pattern"] == "^[^/]+$"


def test_health_schema(contract: dict[str, Any]) -> None:
    health = contract["paths"]["/health"]["get"]
    assert health["security"] == []
    schema = resolve_ref(contract, health["responses"]["200"]["content"]["application/json"]["schema"])
    assert schema["required"] == ["status", "providers"]
    assert schema["properties"]["providers"] == {
        "type": "array",
        "description": "Ids of the configured providers",
        "items": {"type": "string"},
    }


def test_every_overlay_action_says_why() -> None:
    overlay = yaml.safe_load((OPENAPI_DIR / "overlay.yaml").read_text(encoding="utf-8"))
    assert overlay["overlay"] == "1.1.0" and overlay["info"]["title"] and overlay["extends"]
    for action in overlay["actions"]:
        assert isinstance(action.get("description"), str) and "\n" not in action["description"].strip()


def test_response_status_keys_are_strings(contract: dict[str, Any]) -> None:
    # An unquoted 200 in YAML loads as an int; OpenAPI and JSONPath ['200'] need the string.
    for method, path, _ in operations(contract):
        assert all(isinstance(status, str) for status in contract["paths"][path][method]["responses"])


# --------------------------------------------------------------------------------------------------
# (b) Connexion takes the rendering
# --------------------------------------------------------------------------------------------------


class _DummyResolver(Resolver):
    """Maps every operationId to one async function, so only the document is under test."""

    def __init__(self, handler: Callable[..., Any]) -> None:
        super().__init__()
        self.handler = handler
        self.seen: list[str] = []

    def resolve_function_from_operation_id(self, operation_id: str) -> Callable[..., Any]:
        self.seen.append(operation_id)
        return self.handler


def test_connexion_accepts_the_rendered_contract(contract: dict[str, Any]) -> None:
    async def handler(*args: Any, **kwargs: Any) -> Any:
        return {"status": "ok", "providers": ["openai"]}, 200, {"Content-Type": "application/json"}

    resolver = _DummyResolver(handler)
    app = connexion.AsyncApp(__name__)
    app.add_api(to_connexion(contract), resolver=resolver)
    client = app.test_client()  # builds the middleware stack: every operation is resolved here
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "providers": ["openai"]}
    assert set(resolver.seen) == {operation_id for _, _, operation_id in operations(contract)}
    # Connexion's request validation runs from the rendered document: `file` is required...
    no_file = client.post("/v1/audio/transcriptions", files={"model": (None, "openai/whisper-1")})
    assert no_file.status_code == 400
    # ...and a well-formed request reaches the handler without credentials (auth is optional).
    upload = {"model": (None, "openai/whisper-1"), "file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
    assert client.post("/v1/audio/transcriptions", files=upload).status_code == 200
    azure = "/openai/openai/deployments/dep/audio/transcriptions?api-version=2024-10-21"
    assert client.post(azure, files=upload).status_code == 200
    assert client.post("/v1/audio/transcriptions", data={"model": "x"}).status_code == 415


def test_connexion_rejects_the_raw_31_contract(contract: dict[str, Any]) -> None:
    # Why to_connexion exists at all.
    with pytest.raises(Exception, match="3.1.0"):
        Specification.load(contract)


def test_to_connexion_does_not_mutate_its_input(contract: dict[str, Any]) -> None:
    before = json.dumps(contract, sort_keys=True)
    to_connexion(contract)
    assert json.dumps(contract, sort_keys=True) == before


def test_to_connexion_rewrites_31_schema_forms() -> None:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": "t", "version": "1", "summary": "s", "license": {"name": "MIT", "identifier": "MIT"}},
        "webhooks": {"x": {}},
        "paths": {
            "/a": {
                "post": {
                    "requestBody": {
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": [],
                                    "properties": {
                                        "file": {"type": "string", "contentMediaType": "audio/wav"},
                                        "b64": {"type": "string", "contentEncoding": "base64"},
                                        "maybe": {"type": ["string", "null"], "examples": ["x", "y"]},
                                        "either": {"type": ["string", "integer"]},
                                        "kind": {"const": "fixed", "$comment": "3.1 only"},
                                        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                                        "tight": {"type": "number", "exclusiveMinimum": 0, "minimum": 2},
                                        "tags": {"type": "array", "prefixItems": [{"type": "string"}], "items": False},
                                        "map": {
                                            "type": "object",
                                            "patternProperties": {"^x": {"type": "string"}},
                                            "additionalProperties": False,
                                            "propertyNames": {"pattern": "^x"},
                                        },
                                        "ref": {"$ref": "#/components/schemas/Thing", "description": "sibling"},
                                        "anything": True,
                                    },
                                }
                            }
                        }
                    }
                }
            }
        },
        "components": {"schemas": {"Thing": {"type": "object"}}, "pathItems": {"p": {}}},
    }
    out = to_connexion(doc)
    assert out["openapi"] == "3.0.3"
    assert "webhooks" not in out and "jsonSchemaDialect" not in out
    assert out["info"] == {"title": "t", "version": "1", "license": {"name": "MIT"}}
    assert "pathItems" not in out["components"]
    assert out["paths"]["/a"]["post"]["responses"] == {"default": {"description": "Any response"}}
    schema = out["paths"]["/a"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "required" not in schema
    props = schema["properties"]
    assert props["file"] == {"type": "string", "format": "binary"}
    assert props["b64"] == {"type": "string", "format": "byte"}
    assert props["maybe"] == {"type": "string", "nullable": True, "example": "x"}
    assert props["either"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert props["kind"] == {"enum": ["fixed"]}
    assert props["score"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    assert props["tight"] == {"type": "number", "minimum": 2}
    assert props["tags"] == {"type": "array"}
    assert props["map"] == {"type": "object"}
    assert props["ref"] == {"$ref": "#/components/schemas/Thing"}
    assert props["anything"] == {}
    Specification.load(out)  # and Connexion's meta-schema agrees


# --------------------------------------------------------------------------------------------------
# (c) overlay semantics
# --------------------------------------------------------------------------------------------------


def _overlay(*actions: dict[str, Any]) -> dict[str, Any]:
    return {"overlay": "1.0.0", "info": {"title": "t", "version": "1"}, "actions": list(actions)}


def test_update_merges_objects_recursively_and_concatenates_arrays() -> None:
    doc = {"a": {"keep": 1, "replace": "old", "list": [1], "nested": {"x": 1}}}
    out = apply_overlay(
        doc,
        _overlay({"target": "$.a", "update": {"replace": "new", "list": [2], "nested": {"y": 2}, "added": True}}),
    )
    assert out == {"a": {"keep": 1, "replace": "new", "list": [1, 2], "nested": {"x": 1, "y": 2}, "added": True}}
    assert doc == {"a": {"keep": 1, "replace": "old", "list": [1], "nested": {"x": 1}}}, "input mutated"


def test_update_on_an_array_appends_one_entry() -> None:
    out = apply_overlay({"tags": [{"name": "a"}]}, _overlay({"target": "$.tags", "update": {"name": "b"}}))
    assert out == {"tags": [{"name": "a"}, {"name": "b"}]}
    out = apply_overlay({"enum": ["a"]}, _overlay({"target": "$.enum", "update": ["b", "c"]}))
    assert out == {"enum": ["a", ["b", "c"]]}


def test_update_with_incompatible_types_is_an_error() -> None:
    with pytest.raises(ContractError, match="cannot merge"):
        apply_overlay({"a": {"b": {"c": 1}}}, _overlay({"target": "$.a", "update": {"b": [1]}}))
    with pytest.raises(ContractError, match="primitive"):
        apply_overlay({"a": {"b": 1}}, _overlay({"target": "$.a.b", "update": 2}))


def test_remove_deletes_every_selected_node() -> None:
    doc = {"paths": {"/a": {"get": {}, "post": {}}, "/b": {"get": {}}}, "list": [1, 2, 3]}
    out = apply_overlay(
        doc,
        _overlay(
            {"target": "$.paths.*.get", "remove": True},
            {"target": "$.list[*]", "remove": True},
            {"target": "$.paths['/b']", "remove": True},
        ),
    )
    assert out == {"paths": {"/a": {"post": {}}}, "list": []}


def test_actions_apply_in_order_to_the_previous_result() -> None:
    out = apply_overlay(
        {"a": {"b": 1}},
        _overlay({"target": "$.a", "remove": True}, {"target": "$", "update": {"a": {"c": 2}}}),
    )
    assert out == {"a": {"c": 2}}


def test_a_target_matching_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(ContractError, match=r"\$\.paths\['/missing'\]\.post matches nothing"):
        apply_overlay({"paths": {}}, _overlay({"target": "$.paths['/missing'].post", "update": {"x": 1}}))


def test_overlay_document_is_checked() -> None:
    with pytest.raises(ContractError, match="Overlay"):
        apply_overlay({}, {"actions": [{"target": "$", "update": {}}]})
    with pytest.raises(ContractError, match="actions"):
        apply_overlay({}, {"overlay": "1.0.0", "actions": []})
    with pytest.raises(ContractError, match="neither"):
        apply_overlay({}, _overlay({"target": "$"}))


def test_yaml_anchors_do_not_leak_updates() -> None:
    # One anchored mapping used twice must behave as two independent mappings.
    doc = yaml.safe_load("a: &x {list: [1]}\nb: *x\n")
    out = apply_overlay(doc, _overlay({"target": "$.a.list", "update": 2}))
    assert out == {"a": {"list": [1, 2]}, "b": {"list": [1]}}


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("$", []),
        ("$.paths", ["paths"]),
        ("$.x-custom.y", ["x-custom", "y"]),
        ("$['/v1/{job_id}'].get", ["/v1/{job_id}", "get"]),
        ('$["a.b"]["c\'d"]', ["a.b", "c'd"]),
        ("$.responses['200'][0]", ["responses", "200", 0]),
    ],
)
def test_jsonpath_names(path: str, segments: list[Any]) -> None:
    assert parse_jsonpath(path) == segments


@pytest.mark.parametrize("path", ["paths", "$..get", "$.paths[?@.x]", "$.a[", "$.a b"])
def test_jsonpath_outside_the_subset_is_refused(path: str) -> None:
    with pytest.raises(ContractError):
        parse_jsonpath(path)


def test_jsonpath_wildcards_select_in_document_order() -> None:
    doc = {"paths": {"/a": {"get": 1, "post": 2}, "/b": {"post": 3}}, "l": [4, 5]}
    assert [node for _, _, node in select(doc, "$.paths.*.post")] == [2, 3]
    assert [node for _, _, node in select(doc, "$.paths[*].*")] == [1, 2, 3]
    assert [node for _, _, node in select(doc, "$.l[*]")] == [4, 5]
    assert select(doc, "$.nothing.here") == []


# --------------------------------------------------------------------------------------------------
# (d) parity with the upstream document
# --------------------------------------------------------------------------------------------------


def resolve_ref(doc: dict[str, Any], node: Any) -> Any:
    """Follow local ``$ref``s until a node that is not a reference."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def schema_view(doc: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """What a schema means for a client, refs resolved: types, formats, enums, required, bounds,
    defaults and the same for every property and item. Descriptions and examples are left out."""
    schema = resolve_ref(doc, schema)
    if not isinstance(schema, dict) or depth > 12:
        return schema
    view: dict[str, Any] = {}
    for key in ("type", "format", "enum", "const", "minimum", "maximum", "default", "nullable"):
        if key in schema:
            view[key] = schema[key]
    if "required" in schema:
        view["required"] = sorted(schema["required"])
    if "properties" in schema:
        view["properties"] = {
            name: schema_view(doc, sub, depth + 1) for name, sub in sorted(schema["properties"].items())
        }
    for key in ("items", "additionalProperties", "not"):
        if key in schema:
            view[key] = schema_view(doc, schema[key], depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            view[key] = [schema_view(doc, sub, depth + 1) for sub in schema[key]]
    return view


def operation_view(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """An operation as a client sees it: parameters, body fields and responses, refs resolved."""
    operation = doc["paths"][path][method]
    parameters = [resolve_ref(doc, p) for p in operation.get("parameters", [])]
    body = resolve_ref(doc, operation.get("requestBody"))
    return {
        "operationId": operation["operationId"],
        "parameters": sorted(
            (p["name"], p["in"], bool(p.get("required")), json.dumps(schema_view(doc, p.get("schema")), sort_keys=True))
            for p in parameters
        ),
        "requestBody": None
        if body is None
        else {
            "required": bool(body.get("required")),
            "content": {media: schema_view(doc, m.get("schema")) for media, m in body["content"].items()},
        },
        "responses": {
            status: {
                media: schema_view(doc, m.get("schema"))
                for media, m in (resolve_ref(doc, response).get("content") or {}).items()
            }
            for status, response in operation["responses"].items()
        },
        "security": operation.get("security"),
    }


def referenced_components(doc: dict[str, Any], node: Any, found: set[str] | None = None) -> set[str]:
    """Every ``#/components/...`` name reachable from ``node``, transitively."""
    found = set() if found is None else found
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/") and ref not in found:
            found.add(ref)
            referenced_components(doc, resolve_ref(doc, {"$ref": ref}), found)
        for value in node.values():
            referenced_components(doc, value, found)
    elif isinstance(node, list):
        for value in node:
            referenced_components(doc, value, found)
    return found


def _upstream_operations(upstream: dict[str, Any]) -> set[tuple[str, str, str]]:
    wanted = {operation_id for _, _, operation_id in SERVED_FROM_UPSTREAM}
    return {op for op in operations(upstream) if op[2] in wanted}


def test_upstream_has_the_same_operations_at_the_same_paths(upstream: dict[str, Any]) -> None:
    assert _upstream_operations(upstream) == SERVED_FROM_UPSTREAM


@pytest.mark.parametrize(("method", "path", "operation_id"), sorted(SERVED_FROM_UPSTREAM))
def test_operation_matches_upstream(
    upstream: dict[str, Any], document: dict[str, Any], method: str, path: str, operation_id: str
) -> None:
    ours = operation_view(document, method, path)
    theirs = operation_view(upstream, method, path)
    assert ours["operationId"] == theirs["operationId"] == operation_id
    assert ours["parameters"] == theirs["parameters"]
    assert ours["requestBody"] == theirs["requestBody"]
    assert ours["responses"] == theirs["responses"]
    assert ours["security"] == theirs["security"]


@pytest.mark.parametrize(("method", "path", "operation_id"), sorted(SERVED_FROM_UPSTREAM))
def test_overlay_only_adds_to_upstream_operations(
    upstream: dict[str, Any], contract: dict[str, Any], method: str, path: str, operation_id: str
) -> None:
    ours = operation_view(contract, method, path)
    theirs = operation_view(upstream, method, path)
    assert ours["parameters"] == theirs["parameters"]
    if operation_id == "azureCreateTranscription":  # overlay action 12: Azure's API has no model field
        theirs["requestBody"]["content"]["multipart/form-data"]["required"].remove("model")
    assert _extends(ours["requestBody"], theirs["requestBody"]), operation_id
    for status, content in theirs["responses"].items():
        if (operation_id, status) in REPLACED_RESPONSES:
            continue
        for media, schema in content.items():
            assert _extends(ours["responses"][status][media], schema), (operation_id, status, media)


# Responses the overlay replaces on purpose, each with its reason there.
REPLACED_RESPONSES = {
    ("getVirtualKeyQuota", "401"): "upstream's {error: string}; every error here is the Bifrost envelope",
}


def _extends(ours: Any, theirs: Any) -> bool:
    """``ours`` declares everything ``theirs`` does; it may add properties and enum values."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key, value in theirs.items():
            if key == "enum" and "enum" not in ours and ours.get("type") == "string":
                # widened: extra_fields.provider is any provider id (a custom provider's configured name), the
                # only enum the overlay relaxes (test_provider_enum_keeps_upstream_ids_and_adds_ours checks it)
                continue
            if key not in ours:
                return False
            if key == "enum":
                if not set(value) <= set(ours["enum"]):
                    return False
            elif key == "type" and isinstance(ours[key], list):  # widened: diarized segment ids are strings
                if value not in ours[key]:
                    return False
            elif key == "type" and value == "integer" and ours[key] == "number":
                continue  # widened: the governance limits take a count sent as 5.0 (number + multipleOf 1, overlay)
            elif not _extends(ours[key], value):
                return False
        return True
    return ours == theirs


def test_component_names_mirror_upstream(upstream: dict[str, Any], document: dict[str, Any]) -> None:
    theirs: set[str] = set()
    for method, path, _ in SERVED_FROM_UPSTREAM:
        referenced_components(upstream, upstream["paths"][path][method], theirs)
    ours = {
        f"#/components/{kind}/{name}"
        for kind, entries in document["components"].items()
        if kind != "securitySchemes"  # named by security requirements, not by $ref
        for name in entries
    }
    # Upstream inlines the stream event in every operation; we name it once.
    assert ours - theirs == {"#/components/schemas/TranscriptionStreamResponse"}
    assert theirs <= ours
    assert set(document["components"]["securitySchemes"]) == set(upstream["components"]["securitySchemes"])
    for ref in theirs:
        if ref.startswith("#/components/schemas/"):
            assert schema_view(document, {"$ref": ref}) == schema_view(upstream, {"$ref": ref}), ref
        else:
            assert _parameter_view(document, ref) == _parameter_view(upstream, ref), ref


def _parameter_view(doc: dict[str, Any], ref: str) -> tuple[Any, ...]:
    parameter = resolve_ref(doc, {"$ref": ref})
    return parameter["name"], parameter["in"], parameter.get("required"), schema_view(doc, parameter["schema"])


def test_upstream_health_schema_is_a_subset_of_ours(upstream: dict[str, Any], contract: dict[str, Any]) -> None:
    # Upstream has getHealth too, with a store-status map; ours adds the provider list.
    ours = operation_view(contract, "get", "/health")["responses"]["200"]["application/json"]
    theirs = operation_view(upstream, "get", "/health")["responses"]["200"]["application/json"]
    assert set(theirs["properties"]) - set(ours["properties"]) == {"components"}
    assert ours["properties"]["status"]["enum"] == theirs["properties"]["status"]["enum"] == ["ok"]


def test_the_whole_upstream_document_renders_for_connexion(upstream: dict[str, Any]) -> None:
    # A strong check of to_connexion: 260 paths of real 3.1 pass Connexion's 3.0 meta-schema.
    Specification.load(to_connexion(upstream))


# --------------------------------------------------------------------------------------------------
# (e) spec-sync: regenerating bifrost.yaml from upstream
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synced(upstream: dict[str, Any]) -> dict[str, Any]:
    return sync(upstream)


def _component_names(doc: dict[str, Any]) -> set[str]:
    return {f"{kind}/{name}" for kind, entries in doc["components"].items() for name in entries}


def test_sync_keeps_exactly_the_transcription_operations(
    synced: dict[str, Any], document: dict[str, Any], upstream: dict[str, Any]
) -> None:
    assert synced["openapi"] == "3.1.0"
    assert set(operations(synced)) == SERVED_FROM_UPSTREAM >= TRANSCRIPTION_OPERATIONS
    assert _component_names(synced) == _component_names(document)
    declared = {tag["name"] for tag in upstream["tags"]}  # upstream's getMetrics uses a tag it never declares
    assert {tag["name"] for tag in synced["tags"]} == declared & {
        tag for method, path, _ in SERVED_FROM_UPSTREAM for tag in synced["paths"][path][method]["tags"]
    }


@pytest.mark.parametrize(("method", "path", "operation_id"), sorted(SERVED_FROM_UPSTREAM))
def test_synced_operation_equals_ours(
    synced: dict[str, Any], document: dict[str, Any], method: str, path: str, operation_id: str
) -> None:
    assert operation_view(synced, method, path) == operation_view(document, method, path)


def test_synced_components_equal_ours(synced: dict[str, Any], document: dict[str, Any]) -> None:
    for name in document["components"]["schemas"]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        assert schema_view(synced, ref) == schema_view(document, ref), name
    for name, scheme in document["components"]["securitySchemes"].items():
        theirs = dict(synced["components"]["securitySchemes"][name])
        assert {**theirs, "description": scheme["description"]} == scheme, name


def test_our_overlay_applies_to_a_synced_document(synced: dict[str, Any]) -> None:
    overlay = yaml.safe_load((OPENAPI_DIR / "overlay.yaml").read_text(encoding="utf-8"))
    served = apply_overlay(synced, overlay)
    assert sorted(op for _, _, op in operations(served)) == sorted(SERVED)
    Specification.load(to_connexion(served))


def test_sync_output_survives_yaml_and_leaves_upstream_alone(upstream: dict[str, Any], synced: dict[str, Any]) -> None:
    assert yaml.safe_load(to_yaml(synced)) == synced
    assert "TranscriptionStreamResponse" not in upstream["components"]["schemas"]


def test_sync_names_missing_operations() -> None:
    with pytest.raises(ContractError, match="createTranscription, createAsyncTranscription"):
        sync({"openapi": "3.1.0", "paths": {}, "components": {}})
