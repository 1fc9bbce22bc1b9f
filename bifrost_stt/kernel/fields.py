"""Checked configuration fields: the small toolkit that turns a config file's values into checked ones.

A section is a table ``{field name: Field}``; ``read_section`` walks one object against its table and
turns every mistake into a ``ConfigError`` naming the dotted path. It lives in the kernel so a provider can
declare its own key fields (``azure_key_config``, ``vllm_key_config``) next to its capabilities, with the
same checks the shared configuration uses.

What a ``Field.use`` means:
- ``use``: validated and returned to the builder.
- ``ignore``: upstream setting that does not concern transcription; recorded in ``ignored`` when present.
- ``unsupported``: upstream setting that would change behaviour here but has no effect; validated, and
  recorded in ``unsupported`` when set to something other than false/empty.
- ``silent``: accepted and dropped without a word (``$schema``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Use = Literal["use", "ignore", "unsupported", "silent"]


class ConfigError(Exception):
    """A configuration mistake, named by its dotted path (``providers.openai.keys[0].weight``).

    Messages name fields and environment variables, never a value read from a secret field.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def noting(self, note: str) -> ConfigError:
        """The same error with a note appended, e.g. which key (by name) it concerns."""
        return ConfigError(self.path, f"{self.message} ({note})")


@dataclass(slots=True)
class Context:
    """What a walk needs besides the value: the environment for ``env.VAR``, and where to report."""

    env: Mapping[str, str]
    ignored: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


Check = Callable[[Any, str, Context], Any]


def anything(value: Any, path: str, ctx: Context) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Field:
    check: Check = anything
    required: bool = False
    use: Use = "use"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def suggestion(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean "weight"?)' for the closest candidate, or nothing."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _wrong_type(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(path, f"expected {expected}, got {json_type(value)}")


def read_section(value: Any, path: str, schema: Mapping[str, Field], ctx: Context) -> dict[str, Any]:
    """Validate one object against its table; return the checked values of the ``use`` fields."""
    obj = as_object(value, path, ctx)
    out: dict[str, Any] = {}
    for key, raw in obj.items():
        sub = join(path, key)
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(sub, "unknown field" + suggestion(key, schema))
        if spec.use == "silent":
            continue
        if spec.use == "ignore":
            ctx.ignored.append(sub)
            continue
        checked = spec.check(raw, sub, ctx)
        if spec.use == "unsupported":
            if checked not in (None, False, "", [], {}, ()):
                ctx.unsupported.append(sub)
            continue
        out[key] = checked
    for name, spec in schema.items():
        if spec.required and name not in obj:
            raise ConfigError(join(path, name), "required field is missing")
    return out


# --- checkers -------------------------------------------------------------------------------------------------


def as_object(value: Any, path: str, ctx: Context) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong_type(path, "object", value)
    return {str(k): v for k, v in value.items()}


def boolean(value: Any, path: str, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(path, "boolean", value)
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: Any, path: str, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, "integer", value)
        if minimum is not None and value < minimum:
            raise ConfigError(path, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(path, f"must be at most {maximum}, got {value}")
        return value

    return check


def positive_number(value: Any, path: str, ctx: Context) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(path, "number", value)
    if value <= 0:
        raise ConfigError(path, f"must be greater than 0, got {value}")
    return float(value)


def resolve_env(value: str, path: str, ctx: Context) -> str:
    """``env.VAR`` → the variable's value (upstream's syntax); anything else is a literal."""
    if not value.startswith("env."):
        return value
    var = value[4:]
    if not var:
        raise ConfigError(path, '"env." needs a variable name, e.g. "env.OPENAI_API_KEY"')
    if var not in ctx.env:
        raise ConfigError(path, f"environment variable {var} is not set")
    return ctx.env[var]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_value(value: str, path: str) -> str:
    """A value bound for an HTTP header (a key, an extra header): surrounding whitespace dropped (a key
    read from a secret file often ends in a newline), any other control character refused here rather
    than failing every request later."""
    value = value.strip()
    if _CONTROL.search(value):
        raise ConfigError(path, "must not contain control characters (line breaks, tabs): it goes into an HTTP header")
    return value


def header_map(value: Any, path: str, ctx: Context) -> dict[str, str]:
    """``extra_headers``: valid header names, header-safe values."""
    obj = as_object(value, path, ctx)
    out: dict[str, str] = {}
    for name, item in obj.items():
        if not _TOKEN.fullmatch(name):
            raise ConfigError(join(path, name), "is not a valid HTTP header name")
        out[name] = header_value(string()(item, join(path, name), ctx), join(path, name))
    return out


def string(
    *, env: bool = False, choices: tuple[str, ...] = (), non_empty: bool = False, header: bool = False
) -> Check:
    def check(value: Any, path: str, ctx: Context) -> str:
        if not isinstance(value, str):
            raise _wrong_type(path, "string", value)
        if env:
            value = resolve_env(value, path, ctx)
        if header:
            value = header_value(value, path)
        if choices and value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}; got {value!r}" + suggestion(value, choices))
        if non_empty and not value:
            raise ConfigError(path, "must not be empty")
        return str(value)

    return check


def strings(value: Any, path: str, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _wrong_type(path, "array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _wrong_type(f"{path}[{i}]", "string", item)
    return tuple(value)


def array(value: Any, path: str, ctx: Context) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong_type(path, "array", value)
    return value


def map_of(item: Check) -> Check:
    def check(value: Any, path: str, ctx: Context) -> dict[str, Any]:
        obj = as_object(value, path, ctx)
        return {k: item(v, join(path, k), ctx) for k, v in obj.items()}

    return check


def section(schema: Mapping[str, Field]) -> Check:
    def check(value: Any, path: str, ctx: Context) -> dict[str, Any]:
        return read_section(value, path, schema, ctx)

    return check
