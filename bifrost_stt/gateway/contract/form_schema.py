"""How one operation's form schema coerces and validates text fields; compiled once per schema.

Why apart from ``bifrost_stt.gateway.contract.multipart``: the streaming reader only moves bytes; what a field *means* (its
type per the contract, how "TRUE" becomes a boolean, how a schema error reads to a client) lives here, and
is testable without a request. Errors read like upstream's ("model is required") and name the field as
``param``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from bifrost_stt.gateway.contract.schema_cache import SchemaCache
from bifrost_stt.kernel.errors import ClientError, GatewayError

FILE_PLACEHOLDER = ""  # stands in for a file during schema validation, so ``format: binary`` strings pass
# Booleans as the document encodes them, in any case: "1"/"0"/"yes" are refused (a 400 naming the field)
# because upstream streams only on "true", so stream=1 would mean something else there.
_TRUE, _FALSE = "true", "false"
_INTEGER = re.compile(r"\s*[-+]?\d+\s*", re.ASCII)
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*", re.ASCII)


@dataclass(frozen=True, slots=True)
class Prop:
    """How a form property's text is read."""

    kind: str  # binary | boolean | integer | number | string | object | array
    items: str = "string"  # item kind when kind == "array"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the reader needs: each named property's kind, and the compiled validator."""

    props: Mapping[str, Prop]
    validator: Any  # a compiled jsonschema_rs validator


def plan_cache() -> SchemaCache[Plan]:
    """Compiled plans by schema identity, for one app."""
    return SchemaCache(compile_plan)


def compile_plan(schema: dict[str, Any]) -> Plan:
    props: dict[str, Prop] = {}
    for part in [schema, *schema.get("allOf", [])]:
        for name, sub in part.get("properties", {}).items():
            kind = _kind(sub)
            props[name] = Prop(kind, _kind(sub.get("items", {})) if kind == "array" else "string")
    try:
        validator = jsonschema_rs.Draft4Validator(schema)
    except Exception as exc:  # a broken contract is our failure, not the client's
        raise GatewayError(f"request body schema does not compile: {exc}") from exc
    return Plan(props, validator)


def _kind(schema: Mapping[str, Any]) -> str:
    for sub in [schema, *schema.get("allOf", []), *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        kind = sub.get("type")
        if kind == "string" and sub.get("format") == "binary":
            return "binary"
        if isinstance(kind, str):
            return kind
    return "string"


def _coerce_scalar(value: str, kind: str) -> Any:
    """Form text to the schema's type; left as text when it does not parse so validation names the field."""
    if kind == "boolean":
        low = value.strip().lower()
        return True if low == _TRUE else False if low == _FALSE else value
    if kind == "integer":
        return int(value) if _INTEGER.fullmatch(value) else value
    if kind == "number":
        # JSON's number syntax only: Python's float() also reads "1_0", "nan", "infinity".
        if not _NUMBER.fullmatch(value):
            return value
        number = float(value)
        return number if math.isfinite(number) else value
    if kind == "object" and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def coerce(name: str, values: list[str], prop: Prop) -> Any:
    if prop.kind != "array":
        if len(values) > 1:
            raise ClientError(f"{name} must be sent only once", param=name)
        return _coerce_scalar(values[0], prop.kind)
    if len(values) == 1 and prop.items == "string" and values[0].lstrip().startswith("["):
        try:
            decoded = json.loads(values[0])
        except (ValueError, RecursionError):  # RecursionError: "[" nested thousands deep
            raise ClientError(f"{name} is not a valid JSON array", param=name) from None
        if isinstance(decoded, list):
            if not all(isinstance(item, str) for item in decoded):  # also refuses nesting before it goes deeper
                raise ClientError(f"{name} must be a JSON array of strings", param=name)
            return decoded
    return [_coerce_scalar(value, prop.items) for value in values]


def schema_error(error: Any) -> ClientError:
    """A client error in upstream's words ("model is required") naming the field as ``param``."""
    kind = error.kind.as_dict()
    path = list(error.instance_path)
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required) and not path:
        name = str(kind.get("property"))
        return ClientError(f"{name} is required", param=name)
    param = str(path[0]) if path else None
    where = param if param is not None else "request body"
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Enum):
        allowed = ", ".join(str(option) for option in kind.get("options", []))
        return ClientError(f"invalid {where} {error.instance!r}: must be one of {allowed}", param=param)
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Type):
        types = " or ".join(str(t) for t in kind.get("types", []))
        return ClientError(f"{where} must be of type {types}, got {error.instance!r}", param=param)
    return ClientError(f"invalid {where}: {error.message}", param=param)
