"""Edit ``openapi/bifrost.yaml`` in place towards what upstream's document says, so a review diff is small.

``sync.sync()`` computes the target (upstream's transcription operations and the components they reach).
This module walks the committed file (ruamel.yaml round-trip: comments, anchors, quoting, flow lists and
key order kept) and changes only what differs in structure::

    committed bifrost.yaml --round-trip load--> tree --merge(target, prose never copied)--> tree --dump--> text

Rules, each so that an unchanged part stays byte-identical and our words stay ours:
- prose keys (description, summary, title, example(s), externalDocs) are never copied from upstream; ours
  are kept even where upstream has none; ``info`` and ``servers`` are ours; a new tag gets its name only;
- a key upstream dropped is removed; a new key is inserted after its predecessor in upstream's order;
- a scalar list (enum, required) that changed keeps its node, so its flow style (``[a, b]``) stays;
- a node shared through a YAML anchor is changed once; a use of it that upstream changed differently gets
  its own copy, so the other uses are not changed with it.
The same inputs always give the same text (no timestamps, no set iteration).
"""

from __future__ import annotations

import io
import json
import re
from http import HTTPStatus
from collections.abc import Callable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

PROSE = frozenset({"description", "summary", "title", "example", "examples", "externalDocs"})
_NAME_LEVELS = frozenset({"properties", "patternProperties"})  # their keys are field names, not keywords
_OURS = frozenset({"info", "servers"})


def yaml_engine() -> YAML:
    """The round-trip settings the committed file is written in (2-space maps, '- ' indented by 2)."""
    engine = YAML()
    engine.preserve_quotes = True
    engine.width = 4096
    engine.indent(mapping=2, sequence=4, offset=2)
    return engine


def strip_prose(node: Any, names: bool = False, *, responses: bool = False) -> Any:
    """``node`` without prose keys; the keys of a ``properties`` map are field names and are kept.

    ``responses``: ``node`` is a map of Response objects, which OpenAPI requires a description on: one that
    upstream described gets our own plain words (the status phrase, or the component's name) instead.
    """
    if isinstance(node, dict):
        if responses:
            return {k: _described(k, strip_prose(v)) for k, v in node.items()}
        return {k: strip_prose(v, names=not names and k in _NAME_LEVELS, responses=not names and k == "responses")
                for k, v in node.items() if names or k not in PROSE}
    if isinstance(node, list):
        return [strip_prose(v) for v in node]
    return node


def _described(key: Any, response: Any) -> Any:
    if not isinstance(response, dict) or "$ref" in response or "description" in response:
        return response
    try:
        words = HTTPStatus(int(key)).phrase
    except ValueError:
        words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(key)).capitalize()
    return {"description": words, **response}


def _shape(node: Any) -> str:
    return json.dumps(strip_prose(_plain(node)), sort_keys=True, default=str)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


class _Merger:
    def __init__(self) -> None:
        self._seen: dict[int, str] = {}  # id of a container already merged -> the shape it was given

    def value(self, node: Any, new: Any, names: bool = False, responses: bool = False) -> Any:
        """``node`` changed to match ``new`` (the same object when it could be edited in place)."""
        if isinstance(node, dict) and isinstance(new, dict):
            return self._shared(node, new, names, responses, self._map)
        if isinstance(node, list) and isinstance(new, list):
            return self._shared(node, new, names, responses, self._list)
        if isinstance(new, (dict, list)) or _plain(node) != _plain(new) or type(_plain(node)) is not type(_plain(new)):
            return strip_prose(new, names, responses=responses)
        return node

    def _shared(
        self, node: Any, new: Any, names: bool, responses: bool, merge: Callable[[Any, Any, bool, bool], None]
    ) -> Any:
        wanted = json.dumps(strip_prose(_plain(new), names), sort_keys=True, default=str)
        done = self._seen.get(id(node))
        if done is not None:
            if done == wanted:
                return node  # another use of an anchored node, already merged to the same shape
            node = _detach(node)  # upstream changed this use differently: it gets its own copy
        merge(node, new, names, responses)
        self._seen[id(node)] = wanted
        return node

    def _map(self, node: Any, new: dict[str, Any], names: bool, responses: bool) -> None:
        for key in list(node):
            if key not in new and (names or key not in PROSE):
                del node[key]
        previous: str | None = None
        for key, value in new.items():
            if not names and key in PROSE:
                continue
            child_names = not names and key in _NAME_LEVELS
            child_responses = not names and key == "responses"
            if key in node:
                merged = self.value(node[key], value, child_names, child_responses)
                if merged is not node[key]:
                    node[key] = merged
            else:
                fresh = strip_prose(value, child_names, responses=child_responses)
                _insert(node, key, _described(key, fresh) if responses else fresh, previous)
            previous = key

    def _list(self, node: Any, new: list[Any], names: bool, responses: bool) -> None:
        if _shape(node) == json.dumps(strip_prose(_plain(new)), sort_keys=True, default=str):
            return
        if len(node) == len(new):
            for index, item in enumerate(new):
                merged = self.value(node[index], item)
                if merged is not node[index]:
                    node[index] = merged
            return
        pool = list(node)
        items = []
        for item in new:
            match = next((old for old in pool if _same_item(old, item)), None)
            if match is not None:
                pool.remove(match)
                items.append(self.value(match, item))
            else:
                items.append(strip_prose(item))
        del node[:]
        node.extend(items)


def _same_item(old: Any, new: Any) -> bool:
    """List items that are the same entry: equal, or the same parameter / $ref / tag name."""
    if isinstance(old, dict) and isinstance(new, dict):
        for keys in (("name", "in"), ("$ref",), ("name",)):
            if all(k in new for k in keys):
                return all(_plain(old.get(k)) == new[k] for k in keys)
    return bool(_plain(old) == _plain(new))


def _detach(node: Any) -> Any:
    """A private copy of an anchored node (plain containers: ruamel gives them no anchor)."""
    plain = _plain(node)
    return CommentedSeq(plain) if isinstance(plain, list) else CommentedMap(plain)


def _insert(node: Any, key: str, value: Any, after: str | None) -> None:
    position = list(node).index(after) + 1 if after is not None and after in node else 0
    if isinstance(node, CommentedMap):
        if position == len(node) and len(node):
            value = _take_trailing_comment(node, _commented(value))
        node.insert(position, key, value)
        return
    items = list(node.items())
    items.insert(position, (key, value))
    node.clear()
    node.update(items)


def _commented(value: Any) -> Any:
    """Plain containers as ruamel's, so a comment can be attached to them."""
    if isinstance(value, dict):
        return CommentedMap((k, _commented(v)) for k, v in value.items())
    if isinstance(value, list):
        return CommentedSeq(_commented(v) for v in value)
    return value


def _last_mapping_entry(node: Any) -> tuple[Any, Any] | None:
    """The innermost (map, key) a block ends with: where ruamel keeps the blank line that follows it."""
    found = None
    while isinstance(node, CommentedMap) and len(node):
        key = list(node)[-1]
        found = (node, key)
        node = node[key]
    return found


def _take_trailing_comment(node: Any, value: Any) -> Any:
    """A key appended at the end of a map takes over the blank line that closed the map, so the new lines
    come before it (as a person would write them) and the diff shows only them."""
    last, new_last = _last_mapping_entry(node), _last_mapping_entry(value)
    if last is None or new_last is None:
        return value
    holder, key = last
    slots = holder.ca.items.get(key)
    if not slots or len(slots) < 3 or slots[2] is None:
        return value
    token, slots[2] = slots[2], None
    target, target_key = new_last
    target.ca.items[target_key] = [None, None, token, None]
    return value


def edit(current_text: str, target: dict[str, Any]) -> str:
    """The committed document's text changed only where ``target`` (a ``sync.sync()`` result) differs."""
    engine = yaml_engine()
    tree = engine.load(current_text) if current_text.strip() else None
    if not isinstance(tree, CommentedMap):
        tree = CommentedMap()
    merger = _Merger()
    for key in list(tree):
        if key not in target and key not in _OURS:
            del tree[key]
    previous: str | None = None
    for key, value in target.items():
        if key in _OURS and key in tree:
            pass
        elif key == "info":  # a new file: our own title, upstream's version number
            _insert(tree, key, {"title": "Bifrost transcription API",
                                "version": str(value.get("version", "1.0.0"))}, previous)
        elif key == "tags":
            tree["tags"] = _tags(tree.get("tags"), value) if "tags" in tree else [
                {"name": t["name"]} for t in value if isinstance(t, dict) and "name" in t]
        elif key in tree:
            merged = merger.value(tree[key], value)
            if merged is not tree[key]:
                tree[key] = merged
        else:
            _insert(tree, key, strip_prose(value), previous)
        previous = key
    out = io.StringIO()
    engine.dump(tree, out)
    return out.getvalue()


def _tags(ours: Any, theirs: list[Any]) -> Any:
    """Our tag entries (our descriptions) for the names upstream uses, new names added bare, in its order."""
    wanted = [t["name"] for t in theirs if isinstance(t, dict) and "name" in t]
    by_name = {t.get("name"): t for t in ours or () if isinstance(t, dict)}
    if [t.get("name") for t in ours or () if isinstance(t, dict)] == wanted:
        return ours
    items = [by_name.get(name) or {"name": name} for name in wanted]
    del ours[:]
    ours.extend(items)
    return ours
