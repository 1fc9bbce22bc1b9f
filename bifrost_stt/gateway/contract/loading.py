"""The served contract: upstream's transcription document plus our overlay, and its Connexion rendering.

``openapi/bifrost.yaml`` (OpenAPI 3.1) mirrors what upstream Bifrost declares; ``openapi/overlay.yaml``
(OpenAPI Overlay 1.0) holds our deliberate deltas. ``load_contract`` merges them into the 3.1 contract
that tests and tools read; ``to_connexion`` renders that contract as the 3.0 document Connexion 3.3
accepts, because Connexion rejects 3.1 and validates with JSON Schema draft 4 (BEHAVIOUR.md §6).

The files are read with a plain YAML load: loading a spec by path through Connexion would run it
through Jinja, which eats ``{{ }}`` in descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# The contract ships inside the package (``bifrost_stt/openapi``, the repository's ``openapi/`` folder).
OPENAPI_DIR = Path(str(resources.files("bifrost_stt") / "openapi"))
CONTRACT_FILE = "bifrost.yaml"
PROJECT_NAME = 'name = "bifrost-stt"'
OVERLAY_FILE = "overlay.yaml"

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class ContractError(ValueError):
    """The contract files, or an overlay applied to them, are unusable. Raised at start-up."""


# --------------------------------------------------------------------------------------------------
# JSONPath: the small subset overlays need (no filters, no recursive descent)
# --------------------------------------------------------------------------------------------------

class _Wildcard:
    """The ``*`` selector: every member of an object, every item of an array."""

    def __repr__(self) -> str:
        return "*"


_WILDCARD = _Wildcard()
_SEGMENT = re.compile(
    r"""\.(?P<dot>[^.\[\]\s'"]+)        # .name  .*  .x-custom  ./health
      | \[\s*(?P<quote>['"])(?P<quoted>(?:\\.|(?!(?P=quote)).)*)(?P=quote)\s*\]   # ['any chars']
      | \[\s*(?P<index>-?\d+)\s*\]     # [0]
      | \[\s*\*\s*\]                   # [*]
    """,
    re.VERBOSE,
)

Segment = str | int | _Wildcard
Location = tuple[Any, Any, Any]  # (parent container, key or index in it, node); parent None for "$"


def parse_jsonpath(path: str) -> list[Segment]:
    """Split ``path`` into names, indexes and wildcards; anything outside the subset is an error.

    Why a parser of our own: the subset we need is tiny, and a dependency would accept filters we
    could not review. Quoted names may hold any character (``['/v1/{job_id}']``).
    """
    if not path.startswith("$"):
        raise ContractError(f"JSONPath must start with '$': {path!r}")
    segments: list[Segment] = []
    pos = 1
    while pos < len(path):
        match = _SEGMENT.match(path, pos)
        if match is None or path.startswith("..", pos):
            raise ContractError(f"unsupported JSONPath at offset {pos}: {path!r}")
        if match["dot"] is not None:
            segments.append(_WILDCARD if match["dot"] == "*" else match["dot"])
        elif match["quote"] is not None:
            segments.append(re.sub(r"\\(.)", r"\1", match["quoted"]))
        elif match["index"] is not None:
            segments.append(int(match["index"]))
        else:
            segments.append(_WILDCARD)
        pos = match.end()
    return segments


def select(doc: Any, path: str) -> list[Location]:
    """Every node ``path`` selects in ``doc``, with where it sits, in document order."""
    locations: list[Location] = [(None, None, doc)]
    for segment in parse_jsonpath(path):
        locations = [child for location in locations for child in _children(location[2], segment)]
    return locations


def _children(node: Any, segment: Segment) -> Iterator[Location]:
    if segment is _WILDCARD:
        if isinstance(node, dict):
            yield from ((node, key, value) for key, value in node.items())
        elif isinstance(node, list):
            yield from ((node, index, value) for index, value in enumerate(node))
    elif isinstance(segment, int):
        if isinstance(node, list) and -len(node) <= segment < len(node):
            yield node, segment % len(node), node[segment]
    elif isinstance(node, dict) and segment in node:
        yield node, segment, node[segment]


# --------------------------------------------------------------------------------------------------
# Overlay 1.0
# --------------------------------------------------------------------------------------------------


def apply_overlay(doc: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``overlay``'s actions applied in order; neither input is changed.

    Semantics (Overlay 1.0.0, as 1.1.0 spells them out): ``update`` on an object merges recursively
    (new keys inserted, primitives replaced, arrays concatenated, objects merged, any other pairing
    is an error); ``update`` on an array appends the value as one entry; ``remove: true`` deletes the
    selected nodes from their parents; ``copy`` (Overlay 1.1) merges the one node another JSONPath
    selects into the target, as ``update`` would. A target that selects nothing is an error, so a delta that
    silently stopped applying after an upstream change is caught at start-up.
    """
    version = str(overlay.get("overlay", ""))
    if not version.startswith("1."):
        raise ContractError(f"not an Overlay 1.x document (overlay: {version!r})")
    actions = overlay.get("actions")
    if not isinstance(actions, list) or not actions:
        raise ContractError("an overlay needs a non-empty 'actions' list")
    result: dict[str, Any] = _clone(doc)
    for number, action in enumerate(actions, start=1):
        target = action.get("target")
        if not isinstance(target, str):
            raise ContractError(f"action {number} has no string 'target'")
        locations = select(result, target)
        if not locations:
            raise ContractError(f"action {number}: target {target} matches nothing")
        if action.get("remove") is True:
            _remove(locations, target)
        elif "copy" in action:
            source = select(result, str(action["copy"]))
            if len(source) != 1:
                raise ContractError(f"action {number}: copy source {action['copy']} must select exactly one node")
            for _parent, _key, node in locations:
                _update(node, source[0][2], target)
        elif "update" in action:
            for _parent, _key, node in locations:
                _update(node, action["update"], target)
        else:
            raise ContractError(f"action {number} ({target}) has neither 'update', 'copy' nor 'remove: true'")
    return result


def _update(node: Any, update: Any, target: str) -> None:
    if isinstance(node, dict):
        if not isinstance(update, dict):
            raise ContractError(f"{target} selects an object: its update must be an object")
        _merge(node, update, target)
    elif isinstance(node, list):
        node.append(_clone(update))
    else:
        raise ContractError(f"{target} selects a primitive; select its containing object instead")


def _merge(node: dict[str, Any], update: dict[str, Any], where: str) -> None:
    for key, new in update.items():
        if key not in node:
            node[key] = _clone(new)
            continue
        old = node[key]
        if isinstance(old, dict) and isinstance(new, dict):
            _merge(old, new, f"{where}.{key}")
        elif isinstance(old, list) and isinstance(new, list):
            old.extend(_clone(new))
        elif not isinstance(old, dict | list) and not isinstance(new, dict | list):
            node[key] = new
        else:
            raise ContractError(f"cannot merge {type(new).__name__} into {type(old).__name__} at {where}.{key}")


def _remove(locations: list[Location], target: str) -> None:
    # Delete list items from the highest index down so earlier deletions do not shift later ones.
    ordered = sorted(locations, key=lambda loc: loc[1] if isinstance(loc[0], list) else 0, reverse=True)
    for parent, key, _node in ordered:
        if parent is None:
            raise ContractError(f"{target}: the document root cannot be removed")
        del parent[key]


def _clone(value: Any) -> Any:
    """A deep copy that never shares: YAML anchors load as one object used in several places, and
    an overlay merging into one use must not change the others (``copy.deepcopy`` keeps sharing)."""
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def served_contract(spec_dir: str | None = None) -> dict[str, Any]:
    """The contract this gateway serves: the bundled one, or the document in ``spec_dir`` (``serve --spec-dir``)."""
    return load_contract(Path(spec_dir)) if spec_dir else load_contract()


def load_contract(openapi_dir: Path = OPENAPI_DIR) -> dict[str, Any]:
    """The served contract (OpenAPI 3.1): ``bifrost.yaml`` with ``overlay.yaml`` applied.

    A fresh dict on every call; callers cache it.
    """
    return apply_overlay(_load_yaml(openapi_dir / CONTRACT_FILE), _load_yaml(openapi_dir / OVERLAY_FILE))


def _load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    if not isinstance(data, dict):
        raise ContractError(f"{path} does not hold a YAML mapping")
    return data


def operations(contract: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(method, path, operationId)`` for every operation, in document order; method in lower case."""
    found: list[tuple[str, str, str]] = []
    for path, item in contract.get("paths", {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                found.append((method, path, operation.get("operationId", "")))
    return found


def provider_ids(contract: dict[str, Any]) -> frozenset[str]:
    """The provider ids the contract names (``ModelProvider`` enum): what a ``provider/`` prefix may be."""
    schema = contract.get("components", {}).get("schemas", {}).get("ModelProvider", {})
    return frozenset(str(v) for v in schema.get("enum", ()))


# --------------------------------------------------------------------------------------------------
# The 3.0 rendering Connexion 3.3 takes
# --------------------------------------------------------------------------------------------------

# What an OpenAPI 3.0 Schema Object may hold (Connexion's meta-schema forbids anything else).
_SCHEMA_30_KEYWORDS = frozenset(
    {
        "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties",
        "minProperties", "required", "enum", "type", "not", "allOf", "oneOf", "anyOf", "items",
        "properties", "additionalProperties", "description", "format", "default", "nullable",
        "discriminator", "readOnly", "writeOnly", "example", "externalDocs", "deprecated", "xml",
    }
)  # fmt: skip
# Keywords that only annotate: dropped next to a $ref, which 3.0 does not allow siblings for.
_ANNOTATIONS = frozenset(
    {"description", "title", "summary", "example", "examples", "default", "deprecated", "readOnly", "writeOnly", "$comment"}
)
_PATH_ITEM_30_KEYS = frozenset({"$ref", "summary", "description", "servers", "parameters", *HTTP_METHODS})
_COMPONENTS_30_KEYS = frozenset(
    {"schemas", "responses", "parameters", "examples", "requestBodies", "headers", "securitySchemes", "links", "callbacks"}
)
_ROOT_30_KEYS = frozenset({"openapi", "info", "servers", "paths", "components", "security", "tags", "externalDocs"})


def to_connexion(contract: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.0.3 rendering of a 3.1 ``contract`` that Connexion 3.3 accepts and validates.

    Connexion checks specs against the 3.0 meta-schema and validates bodies with draft 4, so 3.1
    forms are rewritten to their 3.0 equivalents (type arrays → ``nullable``, ``const`` → one-value
    ``enum``, numeric exclusive bounds → boolean form, ``contentMediaType`` → ``format: binary``,
    ``examples`` → ``example``) and keywords with no 3.0 form are dropped. Dropping only ever loosens
    validation, so the rendering never rejects what the 3.1 contract accepts. ``contract`` is not
    changed.
    """
    doc: dict[str, Any] = _clone(contract)
    doc["openapi"] = "3.0.3"
    for key in [key for key in doc if key not in _ROOT_30_KEYS and not key.startswith("x-")]:
        del doc[key]  # webhooks, jsonSchemaDialect, $schema, ...
    info = doc.setdefault("info", {"title": "API", "version": "0"})
    info.pop("summary", None)
    if isinstance(info.get("license"), dict):
        info["license"].pop("identifier", None)
    _drop_mutual_tls(doc)
    doc["paths"] = {path: _render_path_item(item) for path, item in (doc.get("paths") or {}).items()}
    components = doc.get("components")
    if isinstance(components, dict):
        doc["components"] = _render_components(components)
    return doc


def _render_components(components: dict[str, Any]) -> dict[str, Any]:
    renderers = {
        "schemas": _render_schema,
        "parameters": _render_parameter,
        "headers": _render_parameter,
        "requestBodies": _render_content_holder,
        "responses": _render_response,
        "callbacks": _render_callback,
    }
    rendered: dict[str, Any] = {}
    for kind, entries in components.items():
        if kind not in _COMPONENTS_30_KEYS and not kind.startswith("x-"):
            continue  # pathItems is 3.1 only
        render = renderers.get(kind)
        rendered[kind] = {name: render(entry) for name, entry in entries.items()} if render else entries
    return rendered


def _render_path_item(item: dict[str, Any]) -> dict[str, Any]:
    rendered = {key: value for key, value in item.items() if key in _PATH_ITEM_30_KEYS or key.startswith("x-")}
    if "parameters" in rendered:
        rendered["parameters"] = [_render_parameter(parameter) for parameter in rendered["parameters"]]
    for method in HTTP_METHODS:
        if isinstance(rendered.get(method), dict):
            rendered[method] = _render_operation(rendered[method])
    return rendered


def _render_operation(operation: dict[str, Any]) -> dict[str, Any]:
    if "parameters" in operation:
        operation["parameters"] = [_render_parameter(parameter) for parameter in operation["parameters"]]
    if "requestBody" in operation:
        operation["requestBody"] = _render_content_holder(operation["requestBody"])
    # 3.1 made responses optional; 3.0 requires at least one.
    responses = operation.get("responses") or {"default": {"description": "Any response"}}
    operation["responses"] = {str(status): _render_response(response) for status, response in responses.items()}
    if "callbacks" in operation:
        operation["callbacks"] = {name: _render_callback(cb) for name, cb in operation["callbacks"].items()}
    return operation


def _render_callback(callback: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in callback:
        return callback
    return {expression: _render_path_item(item) for expression, item in callback.items()}


def _render_parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    """A Parameter or Header Object: its schema, or the schemas under its content."""
    if "schema" in parameter:
        parameter["schema"] = _render_schema(parameter["schema"])
    return _render_content_holder(parameter)


def _render_response(response: dict[str, Any]) -> dict[str, Any]:
    if "headers" in response:
        response["headers"] = {name: _render_parameter(header) for name, header in response["headers"].items()}
    return _render_content_holder(response)


def _render_content_holder(holder: dict[str, Any]) -> dict[str, Any]:
    """Request bodies, responses and parameters keep their schemas under ``content.<media>.schema``."""
    for media in (holder.get("content") or {}).values():
        if "schema" in media:
            media["schema"] = _render_schema(media["schema"])
        for encoding in (media.get("encoding") or {}).values():
            if "headers" in encoding:
                encoding["headers"] = {name: _render_parameter(h) for name, h in encoding["headers"].items()}
    return holder


def _render_schema(schema: Any) -> Any:
    """One Schema Object, recursively, in its 3.0 / draft-4 form."""
    if schema is True:
        return {}
    if schema is False:
        return {"not": {}}
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    _render_type(schema)
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    _render_exclusive_bound(schema, "exclusiveMinimum", "minimum")
    _render_exclusive_bound(schema, "exclusiveMaximum", "maximum")
    if "contentMediaType" in schema or "contentEncoding" in schema:
        encoding = schema.pop("contentEncoding", None)
        schema.pop("contentMediaType", None)
        schema.pop("contentSchema", None)
        if schema.get("type", "string") == "string":
            # base64 text is 3.0's "byte"; raw content (a multipart file part) is "binary".
            schema.setdefault("format", "byte" if encoding == "base64" else "binary")
    examples = schema.pop("examples", None)
    if isinstance(examples, list) and examples and "example" not in schema:
        schema["example"] = examples[0]
    if schema.get("required") == []:
        del schema["required"]  # 3.0 (draft 4) needs at least one name
    _render_subschemas(schema)
    if "$ref" in schema:
        return _render_ref_with_siblings(schema)
    return {key: value for key, value in schema.items() if key in _SCHEMA_30_KEYWORDS or key.startswith("x-")}


def _render_type(schema: dict[str, Any]) -> None:
    declared = schema.get("type")
    if declared is None or isinstance(declared, str) and declared != "null":
        return
    types = [declared] if isinstance(declared, str) else list(declared)
    concrete = [kind for kind in types if kind != "null"]
    del schema["type"]
    if "null" in types:
        schema["nullable"] = True
    if len(concrete) == 1:
        schema["type"] = concrete[0]
    elif concrete:
        alternatives = [{"type": kind} for kind in concrete]
        if "anyOf" in schema:
            schema.setdefault("allOf", []).append({"anyOf": alternatives})
        else:
            schema["anyOf"] = alternatives


def _render_exclusive_bound(schema: dict[str, Any], exclusive: str, inclusive: str) -> None:
    """3.1 ``exclusiveMinimum: 5`` is 3.0 ``minimum: 5, exclusiveMinimum: true``."""
    bound = schema.get(exclusive)
    if isinstance(bound, bool) or not isinstance(bound, int | float):
        return
    existing = schema.get(inclusive)
    lower = exclusive == "exclusiveMinimum"
    if existing is not None and (existing > bound if lower else existing < bound):
        del schema[exclusive]  # the inclusive bound is the tighter one
    else:
        schema[inclusive] = bound
        schema[exclusive] = True


def _render_subschemas(schema: dict[str, Any]) -> None:
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {name: _render_schema(sub) for name, sub in schema["properties"].items()}
    if "patternProperties" in schema and "additionalProperties" in schema:
        del schema["additionalProperties"]  # it would now also refuse what patternProperties allowed
    if "prefixItems" in schema:
        schema.pop("items", None)  # 3.1 "items" beside prefixItems covers only the rest
    items = schema.get("items")
    if isinstance(items, list):  # draft-4 tuple form: keep what any item may be
        schema["items"] = {"anyOf": [_render_schema(sub) for sub in items]}
    elif items is not None:
        schema["items"] = _render_schema(items)
    for key in ("additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = _render_schema(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            schema[key] = [_render_schema(sub) for sub in schema[key]]


def _render_ref_with_siblings(schema: dict[str, Any]) -> dict[str, Any]:
    """3.0 ignores keywords beside ``$ref``: drop annotations, keep constraints through ``allOf``."""
    ref = schema.pop("$ref")
    rest = {
        key: value
        for key, value in schema.items()
        if key not in _ANNOTATIONS and (key in _SCHEMA_30_KEYWORDS or key.startswith("x-"))
    }
    if not rest:
        return {"$ref": ref}
    return {"allOf": [{"$ref": ref}, *rest.pop("allOf", [])], **rest}


def _drop_mutual_tls(doc: dict[str, Any]) -> None:
    """``mutualTLS`` security schemes are 3.1 only; a TLS terminator enforces them, not Connexion."""
    schemes = (doc.get("components") or {}).get("securitySchemes") or {}
    dropped = {name for name, scheme in schemes.items() if scheme.get("type") == "mutualTLS"}
    if not dropped:
        return
    for name in dropped:
        del schemes[name]

    def keep(requirements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [req for req in requirements if not dropped & set(req)]

    if "security" in doc:
        doc["security"] = keep(doc["security"])
    for item in (doc.get("paths") or {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict) and "security" in operation:
                operation["security"] = keep(operation["security"])


__all__ = [
    "OPENAPI_DIR",
    "ContractError",
    "apply_overlay",
    "load_contract",
    "served_contract",
    "operations",
    "parse_jsonpath",
    "select",
    "to_connexion",
]


def checkout_openapi_dir(start: Path | None = None) -> Path | None:
    """The ``openapi/`` folder of the bifrost-stt checkout that ``start`` (default: the working directory) is in.

    ``spec-sync`` writes there by default, never into an installed package: ``None`` outside a checkout.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if (folder / "openapi" / CONTRACT_FILE).is_file() and project.is_file():
            if PROJECT_NAME in project.read_text(encoding="utf-8", errors="replace"):
                return folder / "openapi"
    return None
