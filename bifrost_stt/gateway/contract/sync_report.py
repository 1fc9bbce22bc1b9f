"""What changed between two versions of our document, in lines a reviewer reads in a minute.

``bifrost-stt spec-sync`` prints it with the diff it writes (``--check`` prints it and exits 1)::

    operations:  + POST /v1/x (createX): handler: none yet (needs code)
    schema TranscriptionRequest:  + field temperature (number): validated and passed on to the provider as sent
                                  ~ field response_format: enum + diarized_json
                                  ~ required: - model
    parameters azureCreateTranscription:  + query api-version (string)
    overlay:  action 7 target $.paths[...] matched before and matches nothing now: update the overlay

Only structure is compared (prose is ours and never synced). Pure functions of their inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bifrost_stt.gateway.contract.loading import HTTP_METHODS, ContractError, apply_overlay, select


def _operations(doc: Mapping[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, item in (doc.get("paths") or {}).items():
        for method, operation in (item or {}).items():
            if method in HTTP_METHODS and isinstance(operation, Mapping) and operation.get("operationId"):
                found[str(operation["operationId"])] = (method.upper(), path, dict(operation))
    return found


def _resolve(doc: Mapping[str, Any], node: Any) -> Any:
    seen = 0
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and seen < 20:
        parts = node["$ref"].removeprefix("#/").split("/")
        target: Any = doc
        for part in parts:
            target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, Mapping) else None
        if target is None:
            return node
        node, seen = target, seen + 1
    return node


def type_of(schema: Any) -> str:
    """A short type signature: ``string``, ``string(binary)``, ``array<string>``, ``$Ref``."""
    if not isinstance(schema, Mapping):
        return "any"
    if isinstance(schema.get("$ref"), str):
        return "$" + str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = schema.get("type")
    kind = "|".join(map(str, kind)) if isinstance(kind, list) else str(kind or "any")
    if kind == "array":
        return f"array<{type_of(schema.get('items'))}>"
    return f"{kind}({schema['format']})" if schema.get("format") else kind


def _fields(schema: Any, prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """Every field of a schema by dotted path, through nested objects and array items (refs not followed)."""
    out: dict[str, Mapping[str, Any]] = {}
    if not isinstance(schema, Mapping):
        return out
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        out[path] = sub if isinstance(sub, Mapping) else {}
        out.update(_fields(sub, path + "."))
        if isinstance(sub, Mapping) and isinstance(sub.get("items"), Mapping):
            out.update(_fields(sub["items"], path + "[]."))
    return out


def _enum_change(old: Any, new: Any) -> str:
    old_values, new_values = list(old or ()), list(new or ())
    added = [v for v in new_values if v not in old_values]
    removed = [v for v in old_values if v not in new_values]
    return " ".join([*(f"+ {v}" for v in added), *(f"- {v}" for v in removed)])


def _required_change(old: Any, new: Any) -> str:
    return _enum_change(old, new)


def _request_schemas(doc: Mapping[str, Any]) -> set[str]:
    """Names of component schemas used as a multipart/form-data request body."""
    names: set[str] = set()
    for _, _, operation in _operations(doc).values():
        body = _resolve(doc, operation.get("requestBody")) or {}
        for media, content in (body.get("content") or {}).items():
            ref = (content or {}).get("schema", {}).get("$ref") if isinstance(content, Mapping) else None
            if isinstance(ref, str) and media == "multipart/form-data":
                names.add(ref.rsplit("/", 1)[-1])
    return names


def _what_the_gateway_does(name: str, schema: Mapping[str, Any], read: frozenset[str], request: bool) -> str:
    if not request:
        return "needs code: a response field the gateway does not produce yet"
    if name in read:
        return "read by the handlers"
    if type_of(schema) == "string(binary)":
        return "needs code: a file part the handlers do not read"
    return "validated and passed on to the provider as sent"


def _schema_lines(old: Any, new: Any, *, request: bool, read: frozenset[str]) -> list[str]:
    lines: list[str] = []
    old_fields, new_fields = _fields(old), _fields(new)
    for path, sub in new_fields.items():
        if path not in old_fields:
            does = _what_the_gateway_does(path, sub, read, request) if "." not in path else ""
            lines.append(f"+ field {path} ({type_of(sub)})" + (f": {does}" if does else ""))
    lines.extend(f"- field {path}" for path in old_fields if path not in new_fields)
    for path, sub in new_fields.items():
        before = old_fields.get(path)
        if before is None:
            continue
        if type_of(before) != type_of(sub):
            lines.append(f"~ field {path}: type {type_of(before)} -> {type_of(sub)}")
        if (change := _enum_change(before.get("enum"), sub.get("enum"))):
            lines.append(f"~ field {path}: enum {change}")
        if (change := _required_change(before.get("required"), sub.get("required"))):
            lines.append(f"~ field {path}: required {change}")
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if type_of(old) != type_of(new):
            lines.append(f"~ type {type_of(old)} -> {type_of(new)}")
        if (change := _enum_change(old.get("enum"), new.get("enum"))):
            lines.append(f"~ enum {change}")
        if (change := _required_change(old.get("required"), new.get("required"))):
            lines.append(f"~ required {change}")
    return lines


def _parameters(doc: Mapping[str, Any], operation: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for parameter in operation.get("parameters") or ():
        resolved = _resolve(doc, parameter)
        if isinstance(resolved, Mapping) and "name" in resolved:
            out[(str(resolved.get("in")), str(resolved["name"]))] = resolved
    return out


def overlay_moves(old: Mapping[str, Any], new: Mapping[str, Any], overlay: Mapping[str, Any]) -> list[str]:
    """Overlay actions whose target selected something in ``old`` and selects nothing in ``new``."""
    lines: list[str] = []
    docs = [dict(old), dict(new)]
    version = str(overlay.get("overlay", "1.0.0"))
    for number, action in enumerate(overlay.get("actions") or (), start=1):
        target = action.get("target") if isinstance(action, Mapping) else None
        if not isinstance(target, str):
            continue
        hits = [bool(select(doc, target)) for doc in docs]
        if hits[0] and not hits[1]:
            lines.append(f"action {number} target {target} matched before and matches nothing now: update the overlay")
        for i, doc in enumerate(docs):
            if hits[i]:
                try:
                    docs[i] = apply_overlay(doc, {"overlay": version, "actions": [action]})
                except ContractError as exc:
                    if i == 1:
                        lines.append(f"action {number}: {exc}")
    return lines


def change_report(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    handled: Iterable[str] | None = None,
    read_fields: frozenset[str] = frozenset(),
    overlay: Mapping[str, Any] | None = None,
) -> list[str]:
    """The report's lines (empty when nothing a client relies on changed)."""
    lines: list[str] = []
    table = None if handled is None else set(handled)
    old_ops, new_ops = _operations(old), _operations(new)
    for op_id, (method, path, _) in new_ops.items():
        if op_id not in old_ops:
            handler = "unknown" if table is None else ("exists" if op_id in table else "none yet (needs code)")
            lines.append(f"operations: + {method} {path} ({op_id}): handler {handler}")
        elif old_ops[op_id][:2] != (method, path):
            lines.append(f"operations: ~ {op_id} moved from {' '.join(old_ops[op_id][:2])} to {method} {path}")
    lines.extend(f"operations: - {m} {p} ({op_id})" for op_id, (m, p, _) in old_ops.items() if op_id not in new_ops)
    for op_id, (_, _, operation) in new_ops.items():
        if op_id not in old_ops:
            continue
        before, after = _parameters(old, old_ops[op_id][2]), _parameters(new, operation)
        for key, parameter in after.items():
            where = f"parameters {op_id}: "
            if key not in before:
                lines.append(f"{where}+ {key[0]} {key[1]} ({type_of(parameter.get('schema'))})"
                             + (" required" if parameter.get("required") else ""))
                continue
            previous = before[key]
            if type_of(previous.get("schema")) != type_of(parameter.get("schema")):
                lines.append(f"{where}~ {key[0]} {key[1]}: type {type_of(previous.get('schema'))} -> "
                             f"{type_of(parameter.get('schema'))}")
            if bool(previous.get("required")) != bool(parameter.get("required")):
                lines.append(f"{where}~ {key[0]} {key[1]}: required {bool(previous.get('required'))} -> "
                             f"{bool(parameter.get('required'))}")
            if (change := _enum_change((previous.get("schema") or {}).get("enum"), (parameter.get("schema") or {}).get("enum"))):
                lines.append(f"{where}~ {key[0]} {key[1]}: enum {change}")
        lines.extend(f"parameters {op_id}: - {k[0]} {k[1]}" for k in before if k not in after)
    old_schemas = (old.get("components") or {}).get("schemas") or {}
    new_schemas = (new.get("components") or {}).get("schemas") or {}
    requests = _request_schemas(new)
    for name, schema in new_schemas.items():
        if name not in old_schemas:
            lines.append(f"schemas: + {name}")
            continue
        for line in _schema_lines(old_schemas[name], schema, request=name in requests, read=read_fields):
            lines.append(f"schema {name}: {line}")
    lines.extend(f"schemas: - {name}" for name in old_schemas if name not in new_schemas)
    if overlay is not None:
        lines.extend(f"overlay: {line}" for line in overlay_moves(old, new, overlay))
    return lines
