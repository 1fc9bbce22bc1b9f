"""Regenerate ``openapi/bifrost.yaml`` from a newer upstream Bifrost document.

Upstream publishes one 3.1 document for its whole API (hundreds of operations). We serve only the
transcription operations, so ``sync`` cuts those out together with exactly the components they
reach, and returns a small self-contained 3.1 document. Our deltas stay in ``overlay.yaml``; when
an upstream change moves something the overlay targets, ``load_contract`` fails at start-up naming
the target, which is the signal to update the overlay.

``bifrost-stt spec-sync`` (``bifrost_stt.server.cli``) does not write this document out whole: it edits the
committed file towards it (``sync_edit.edit``: a small, deterministic diff, comments and our prose kept) and
prints what changed (``sync_report.change_report``)::

    target = sync(json.loads(Path(upstream).read_text()))
    text = edit((OPENAPI_DIR / "bifrost.yaml").read_text(), target)
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import yaml

from bifrost_stt.gateway.contract.loading import HTTP_METHODS, ContractError
from bifrost_stt.gateway.contract.operations import FROM_UPSTREAM

# Upstream inlines the streamed event schema in every operation; our overlay refers to it by name.
STREAM_EVENT_COMPONENT = "TranscriptionStreamResponse"


def sync(
    upstream_doc: dict[str, Any], operation_ids: tuple[str, ...] = FROM_UPSTREAM
) -> dict[str, Any]:
    """A fresh 3.1 document with upstream's ``operation_ids`` and every component they reach.

    Paths, operations and components keep upstream's order and content; only tags and security
    schemes the kept operations use are kept. A missing operationId is an error naming it.
    """
    wanted = set(operation_ids)
    paths: dict[str, Any] = {}
    for path, item in upstream_doc.get("paths", {}).items():
        kept = {
            method: deepcopy(operation)
            for method, operation in item.items()
            if method in HTTP_METHODS and operation.get("operationId") in wanted
        }
        if kept:
            shared = {key: deepcopy(value) for key, value in item.items() if key not in HTTP_METHODS}
            paths[path] = {**shared, **kept}
    found = {operation["operationId"] for _, operation in _operations(paths)}
    if missing := [operation_id for operation_id in operation_ids if operation_id not in found]:
        raise ContractError(f"upstream document lacks operations: {', '.join(missing)}")

    doc: dict[str, Any] = {"openapi": upstream_doc.get("openapi", "3.1.0")}
    for key in ("info", "servers", "security"):
        if key in upstream_doc:
            doc[key] = deepcopy(upstream_doc[key])
    used_tags = {tag for _, operation in _operations(paths) for tag in operation.get("tags", [])}
    doc["tags"] = [deepcopy(tag) for tag in upstream_doc.get("tags", []) if tag.get("name") in used_tags]
    doc["paths"] = paths
    doc["components"] = _components_for(upstream_doc, doc)
    _name_stream_event(doc)
    return doc


def _operations(paths: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(m, op) for item in paths.values() for m, op in item.items() if m in HTTP_METHODS]


def to_yaml(doc: dict[str, Any]) -> str:
    """The document as plain YAML in its own key order (a whole new file; spec-sync edits in place instead)."""
    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))


def _components_for(upstream_doc: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """Upstream's components that ``doc`` reaches through ``$ref`` (transitively) or security."""
    components = upstream_doc.get("components", {})
    reached: set[tuple[str, str]] = set()
    pending: list[Any] = [doc["paths"]]
    while pending:
        for kind, name in _local_refs(pending.pop()):
            if (kind, name) not in reached:
                if name not in components.get(kind, {}):
                    raise ContractError(f"upstream $ref to a missing component: #/components/{kind}/{name}")
                reached.add((kind, name))
                pending.append(components[kind][name])
    schemes = {name for requirement in _security_requirements(doc) for name in requirement}
    reached |= {("securitySchemes", name) for name in schemes if name in components.get("securitySchemes", {})}
    kinds = {kind for kind, _ in reached}
    return {
        kind: {name: deepcopy(entry) for name, entry in entries.items() if (kind, name) in reached}
        for kind, entries in components.items()
        if kind in kinds
    }


def _local_refs(node: Any) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                kind, _, name = ref.removeprefix("#/components/").partition("/")
                refs.append((kind, name.replace("~1", "/").replace("~0", "~")))
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return refs


def _security_requirements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    requirements = list(doc.get("security", []))
    for _, operation in _operations(doc["paths"]):
        requirements.extend(operation.get("security", []))
    return requirements


def _name_stream_event(doc: dict[str, Any]) -> None:
    """Replace identical inline ``text/event-stream`` 200 schemas with one named component."""
    inline = []
    for _, operation in _operations(doc["paths"]):
        content = operation.get("responses", {}).get("200", {}).get("content", {})
        media = content.get("text/event-stream")
        if media and "schema" in media and "$ref" not in media["schema"]:
            inline.append(media)
    schemas = doc["components"].setdefault("schemas", {})
    if not inline or STREAM_EVENT_COMPONENT in schemas or any(m["schema"] != inline[0]["schema"] for m in inline):
        return
    schemas[STREAM_EVENT_COMPONENT] = inline[0]["schema"]
    for media in inline:
        media["schema"] = {"$ref": f"#/components/schemas/{STREAM_EVENT_COMPONENT}"}


_PROSE = frozenset({"description", "summary", "example", "examples", "externalDocs", "title"})


def contract_shape(doc: Any) -> Any:
    """``doc`` without prose (descriptions, summaries, examples, info, tags): what clients rely on."""
    if isinstance(doc, dict):
        return {
            k: contract_shape(v)
            for k, v in doc.items()
            if k not in _PROSE and not (k in ("info", "tags", "servers") and "openapi" in doc)
        }
    if isinstance(doc, list):
        return [contract_shape(v) for v in doc]
    return doc
