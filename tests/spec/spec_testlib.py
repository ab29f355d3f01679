"""Test helpers for spec/: independent oracles, schema-driven hypothesis strategies, mutations.

Oracles (each checks the same documents a different way):
* ``strict_2020`` - jsonschema Draft 2020-12 on hako's generated schema;
* ``official_validator`` - jsonschema Draft 4 on the OFFICIAL runtime-spec schema files;
* ``pydantic_ok`` - the pydantic models themselves.

Both jsonschema validators get two fixes so they implement JSON Schema, not a Python
reading of it: ``integer`` excludes 1.0 (draft-04 already does; 2020-12 would accept it),
and ``pattern`` uses ECMA-262 ``$`` (end of string only; Python's ``$`` also matches before
a trailing newline).
"""

from __future__ import annotations

import copy
import json
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft4Validator, Draft202012Validator, ValidationError, validators
from pydantic import ValidationError as PydanticError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_DIR = REPO.parent / "shared" / "oci-runtime-spec-v1.3.0"
SPEC_DIR = REPO / "spec"
DATA_DIR = Path(__file__).resolve().parent / "data"

#: Top-level sections of the official schema for other platforms (hako is Linux-only).
NON_LINUX = ("solaris", "windows", "vm", "zos", "freebsd")


# --- oracles ---------------------------------------------------------------------


def ecma(pattern: str) -> re.Pattern[str]:
    """Python regex with ECMA-262 semantics for a trailing ``$``."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_int(checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Strict2020 = validators.extend(
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_int),
)
Official4 = validators.extend(Draft4Validator, validators={"pattern": _ecma_pattern})


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def hako_schema(name: str = "config.schema.json") -> dict:
    return load_json(SPEC_DIR / name)


def strict_2020(name: str = "config.schema.json") -> Any:
    return Strict2020(hako_schema(name))


def official_validator(entry: str = "config-schema.json") -> Any:
    resources = [
        (p.name, Resource.from_contents(load_json(p), default_specification=DRAFT4))
        for p in OFFICIAL_DIR.glob("*.json")
    ]
    registry = Registry().with_resources(resources)
    return Official4(load_json(OFFICIAL_DIR / entry), registry=registry)


def pydantic_ok(model: Any, doc: Any) -> bool:
    try:
        model.model_validate(doc)
    except PydanticError:
        return False
    return True


# --- the official schema as one tree ---------------------------------------------------


def inline_official(entry: str = "config-schema.json", linux_only: bool = True) -> dict:
    """The official schema with every $ref inlined and allOf merged (it has no recursion).

    Draft-04 ignores keywords next to $ref, so the referenced schema replaces the node.
    """
    docs = {p.name: load_json(p) for p in OFFICIAL_DIR.glob("*.json")}

    def walk(node: Any, doc: str) -> Any:
        if isinstance(node, list):
            return [walk(n, doc) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            file, _, pointer = node["$ref"].partition("#")
            target_doc = file or doc
            target = docs[target_doc]
            for part in pointer.strip("/").split("/"):
                target = target[part]
            return walk(target, target_doc)
        out = {k: walk(v, doc) for k, v in node.items() if k not in ("description", "$schema")}
        for sub in out.pop("allOf", []):
            out.setdefault("properties", {}).update(sub.get("properties", {}))
            out["required"] = sorted(set(out.get("required", [])) | set(sub.get("required", [])))
            out.setdefault("type", sub.get("type"))
        return out

    tree = walk(docs[entry], entry)
    if linux_only:
        for name in NON_LINUX:
            tree["properties"].pop(name, None)
    return tree


# --- hypothesis strategies from a schema --------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
#: Map keys: non-empty (official mapStringString only constrains keys with 1+ characters).
MAP_KEYS = st.text(string.ascii_letters + string.digits + "._-/", min_size=1, max_size=8)
UNKNOWN_KEYS = st.sampled_from(["x-hako-test", "vendorExtension", "someFutureField"])


def deref(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        node = defs[node["$ref"].rpartition("/")[2]]
    return node


def from_schema(node: dict, defs: dict | None = None, *, extras: bool = False) -> st.SearchStrategy:
    """Valid instances of ``node`` (the keyword subset both schemas use).

    ``extras`` adds unknown properties to objects, which a valid config may carry.
    """
    defs = defs or {}
    node = deref(node, defs)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "const" in node:
        return st.just(node["const"])
    if "anyOf" in node:
        return st.one_of([from_schema(branch, defs, extras=extras) for branch in node["anyOf"]])
    kind = node.get("type")
    if kind == "object":
        return _object(node, defs, extras)
    if kind == "array":
        item = from_schema(node.get("items", {}), defs, extras=extras)
        low = node.get("minItems", 0)
        return st.lists(item, min_size=low, max_size=low + 4)
    if kind == "string":
        if "pattern" in node:
            core = node["pattern"].removeprefix("^").removesuffix("$")
            return st.from_regex(core, fullmatch=True)
        return st.text(max_size=6)
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"no strategy for {node}")


def _object(node: dict, defs: dict, extras: bool) -> st.SearchStrategy:
    props = node.get("properties", {})
    value_schema = node.get("additionalProperties")
    if value_schema is None and "patternProperties" in node:
        (value_schema,) = node["patternProperties"].values()
    if not props and isinstance(value_schema, dict):  # a map: netDevices, rdma, annotations...
        return st.dictionaries(MAP_KEYS, from_schema(value_schema, defs, extras=extras), max_size=2)
    required = set(node.get("required", []))
    strategy = st.fixed_dictionaries(
        {k: from_schema(v, defs, extras=extras) for k, v in props.items() if k in required},
        optional={k: from_schema(v, defs, extras=extras) for k, v in props.items() if k not in required},
    )
    if extras:
        unknown = st.dictionaries(UNKNOWN_KEYS, JSON_VALUES, max_size=1)
        strategy = st.builds(lambda known, more: {**more, **known}, strategy, unknown)
    return strategy


# --- walking and mutating an instance alongside its schema -----------------------------------


def walk(value: Any, node: dict, defs: dict, path: tuple = ()) -> Iterator[tuple[tuple, Any, dict]]:
    """Yield ``(path, value, schema)`` for every node whose schema is known."""
    node = deref(node, defs)
    yield path, value, node
    if isinstance(value, dict) and node.get("type") == "object":
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from walk(item, sub, defs, path + (key,))
    elif isinstance(value, list) and node.get("type") == "array" and "items" in node:
        for i, item in enumerate(value):
            yield from walk(item, node["items"], defs, path + (i,))


_WRONG: dict[str, list[Any]] = {
    "object": [None, True, 3, 1.5, "x", []],
    "array": [None, False, 3, 1.5, "x", {}],
    "string": [None, True, 3, 1.5, [], {}],
    "integer": [None, True, 1.0, 1.5, "3", [], {}],
    "boolean": [None, 0, 1, "true", [], {}],
}
_NOT_MATCHING = ["", "!", "x\n", "64kB", "RLIMIT_CORE\n", "MB:\nx", "a"]


def mutations(node: dict, value: Any) -> list[tuple[str, Any]]:
    """Invalidating edits for a node: ``(kind, new_value)``, or ``("drop", key)``."""
    out: list[tuple[str, Any]] = [("replace", w) for w in _WRONG.get(node.get("type", ""), [])]
    if "minimum" in node:
        out.append(("replace", node["minimum"] - 1))
    if "maximum" in node:
        out.append(("replace", node["maximum"] + 1))
    if "enum" in node:
        out.append(("replace", "NOT_A_VALUE"))
    if "pattern" in node:
        rx = ecma(node["pattern"])
        out += [("replace", s) for s in _NOT_MATCHING if not rx.search(s)][:2]
    if node.get("minItems", 0) >= 1:
        out.append(("replace", []))
    if isinstance(value, dict):
        out += [("drop", key) for key in node.get("required", []) if key in value]
    return out


def apply(doc: Any, path: tuple, kind: str, arg: Any) -> tuple[Any, tuple]:
    """Return a mutated deep copy and the path at which the error must be reported."""
    doc = copy.deepcopy(doc)
    if kind == "drop":
        target = doc
        for part in path:
            target = target[part]
        del target[arg]
        return doc, path + (arg,)
    if not path:
        return arg, path
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = arg
    return doc, path


def replace_at(doc: Any, path: tuple, new: Any) -> Any:
    return apply(doc, path, "replace", new)[0]
