"""A small JSON Schema interpreter for hako's generated schemas (standard library only).

Why not jsonschema/pydantic: ``hako create`` must start fast, and those libraries cost
tens to hundreds of milliseconds to import.  This module implements exactly the keywords
``spec.gen_schema`` lets through (type, properties, required, additionalProperties,
items, min/max, minLength/maxLength, minItems/maxItems, enum, const, pattern,
anyOf/oneOf/allOf, $ref into $defs) and stops at the FIRST error, which it reports as
``(path, reason)`` with a runc-style path such as ``linux.uidMappings[0].size``.

Semantics that differ from a naive Python reading of JSON Schema, on purpose:

* ``integer`` means a JSON number without fraction or exponent (a Python ``int`` that is
  not a ``bool``), like the official draft-04 schema and runc's Go decoder: ``1.0`` and
  ``true`` are not integers.
* ``pattern`` follows ECMA-262: a trailing ``$`` matches only at the very end, whereas
  Python's ``$`` also matches before a final newline (``"RLIMIT_CORE\\n"``).
"""

import os

from runtime import fastjson

TYPE_CHECKING = False  # typing costs import time; type checkers treat this name as True
if TYPE_CHECKING:
    from typing import Any

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))

_schemas: dict[str, dict] = {}
_patterns: dict = {}
_EMPTY: dict = {}

_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}
_ARTICLE = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}
_PLURAL = {
    "object": "objects",
    "array": "arrays",
    "string": "strings",
    "integer": "integers",
    "number": "numbers",
    "boolean": "booleans",
}

#: Error path as collected while unwinding: innermost key first.
_Err = tuple[list, str]


def load_schema(name: str) -> dict:
    """Load ``spec/<name>`` once per process (the file is ~20 kB; parsing is ~0.1 ms)."""
    schema = _schemas.get(name)
    if schema is None:
        with open(os.path.join(SCHEMA_DIR, name), "rb") as f:
            schema = fastjson.loads(f.read())
        _schemas[name] = schema
    return schema


def first_error(instance: object, schema: dict) -> tuple[str, str] | None:
    """Return ``(path, reason)`` of the first violation of ``schema``, or None if valid.

    ``path`` is "" for the document itself; ``reason`` is always a single line.
    """
    err = _check(instance, schema, schema.get("$defs", _EMPTY))
    if err is None:
        return None
    parts, reason = err
    parts.reverse()
    return format_path(parts), reason.replace("\r", "\\r").replace("\n", "\\n")


def format_path(parts: list) -> str:
    """``["linux", "uidMappings", 0, "size"]`` -> ``linux.uidMappings[0].size``.

    Map keys that are not plain words (``net.ipv4.ip_forward``) are quoted:
    ``linux.sysctl["net.ipv4.ip_forward"]``.
    """
    out: list[str] = []
    for part in parts:
        if type(part) is int:
            out.append(f"[{part}]")
        elif part and part.isascii() and part.replace("_", "").replace("-", "").isalnum():
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{fastjson.dumps(part)}]")
    return "".join(out)


def json_type(value: object) -> str:
    """The JSON type name of a decoded value ("integer" for ints, never for bools)."""
    name = _TYPES.get(value.__class__)
    if name is not None:
        return name
    for cls, name in _TYPES.items():  # subclasses: OrderedDict, IntEnum, ...
        if isinstance(value, cls):
            return name
    return type(value).__name__


def _check(value: "Any", schema: dict, defs: dict) -> _Err | None:
    ref = schema.get("$ref")
    while ref is not None:
        schema = defs[ref.rpartition("/")[2]]
        ref = schema.get("$ref")
    jtype = _TYPES.get(value.__class__) or json_type(value)
    want = schema.get("type")
    if want is not None and want != jtype and not _type_ok(want, jtype):
        return [], _type_error(schema, want, jtype, defs)

    if jtype == "object":
        required = schema.get("required")
        if required:
            for key in required:
                if key not in value:
                    return [key], "is required"
        props = schema.get("properties", _EMPTY)
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key)
            if sub is None:
                if extra is None or extra is True:
                    continue  # unknown properties are ignored (OCI spec)
                if extra is False:
                    return [key], "is not allowed"
                sub = extra
            err = _check(item, sub, defs)
            if err is not None:
                err[0].append(key)
                return err
    elif jtype == "array":
        n = schema.get("minItems")
        if n is not None and len(value) < n:
            return [], "must not be empty" if n == 1 else f"must have at least {n} items"
        n = schema.get("maxItems")
        if n is not None and len(value) > n:
            return [], f"must have at most {n} items"
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                err = _check(item, items, defs)
                if err is not None:
                    err[0].append(i)
                    return err
    elif jtype == "string":
        n = schema.get("minLength")
        if n is not None and len(value) < n:
            return [], "must not be empty" if n == 1 else f"must be at least {n} characters long"
        n = schema.get("maxLength")
        if n is not None and len(value) > n:
            return [], f"must be at most {n} characters long"
        pattern = schema.get("pattern")
        if pattern is not None and not _matcher(pattern)(value):
            return [], f"must match {pattern}"
    elif jtype == "integer" or jtype == "number":
        n = schema.get("minimum")
        if n is not None and value < n:
            return [], f"must be ≥ {n}"
        n = schema.get("maximum")
        if n is not None and value > n:
            return [], f"must be ≤ {n}"

    enum = schema.get("enum")
    if enum is not None and not _member(value, enum):
        if len(enum) == 1:
            return [], f"must be {fastjson.dumps(enum[0])}"
        return [], "must be one of " + ", ".join(sorted(str(e) for e in enum))
    if "const" in schema and not _member(value, [schema["const"]]):
        return [], f"must be {fastjson.dumps(schema['const'])}"
    if "allOf" in schema or "anyOf" in schema or "oneOf" in schema:
        return _combinators(value, schema, defs)
    return None


def _type_ok(want: object, jtype: str) -> bool:
    if want == "number":
        return jtype == "integer"
    if type(want) is list:
        return jtype in want or (jtype == "integer" and "number" in want)
    return False


def _type_error(schema: dict, want: "Any", jtype: str, defs: dict) -> str:
    if want == "array":
        items = schema.get("items")
        while isinstance(items, dict) and "$ref" in items:
            items = defs.get(items["$ref"].rpartition("/")[2])
        item_type = items.get("type") if isinstance(items, dict) else None
        if item_type in _PLURAL:
            return f"must be an array of {_PLURAL[item_type]}, got {jtype}"
    if type(want) is list:
        return f"expected {' or '.join(_ARTICLE.get(w) or str(w) for w in want)}, got {jtype}"
    return f"expected {_ARTICLE.get(want, want)}, got {jtype}"


def _member(value: object, options: list) -> bool:
    """JSON equality: unlike Python's, ``true != 1`` and ``1 != 1.0`` across types."""
    if type(value) is str:
        return value in options
    return any(value == o and json_type(value) == json_type(o) for o in options)


def _combinators(value: "Any", schema: dict, defs: dict) -> _Err | None:
    for sub in schema.get("allOf", ()):
        err = _check(value, sub, defs)
        if err is not None:
            return err
    any_of = schema.get("anyOf")
    if any_of is not None:
        errors: list[_Err] = []
        for sub in any_of:
            err = _check(value, sub, defs)
            if err is None:
                break
            errors.append(err)
        else:  # report the branch that got furthest into the value
            return max(errors, key=lambda e: len(e[0])) if errors else ([], "matches no allowed form")
    one_of = schema.get("oneOf")
    if one_of is not None:
        results = [_check(value, sub, defs) for sub in one_of]
        failed = [err for err in results if err is not None]
        matched = len(results) - len(failed)
        if matched == 0:
            return max(failed, key=lambda e: len(e[0])) if failed else ([], "matches no allowed form")
        if matched > 1:
            return [], "matches more than one allowed form"
    return None


def _digits(v: str) -> bool:
    return all("0" <= c <= "9" for c in v)


#: the patterns hako's schema has, checked without ``re`` (whose import, with
#: enum and functools, would cost create more than the whole validation)
FAST_PATTERNS = {
    "^RLIMIT_[A-Z]+$": lambda v: (len(v) > 7 and v.startswith("RLIMIT_")
                                  and all("A" <= c <= "Z" for c in v[7:])),
    "^[cbup]$": lambda v: v in ("c", "b", "u", "p"),
    "^[0-9, -]*$": lambda v: all(c in "0123456789, -" for c in v),
    "^[1-9][0-9]*[KMG]B$": lambda v: (len(v) >= 3 and "1" <= v[0] <= "9" and _digits(v[1:-2])
                                      and v[-2] in "KMG" and v[-1] == "B"),
    "^MB:[^\\n]*$": lambda v: v.startswith("MB:") and "\n" not in v,
}


def _matcher(pattern: str):
    """A predicate for an ECMA-262 pattern: a known one by hand, any other
    through ``re`` with a trailing unescaped ``$`` turned into ``\\Z``."""
    fn = FAST_PATTERNS.get(pattern) or _patterns.get(pattern)
    if fn is None:
        rx = _compile(pattern)
        fn = _patterns[pattern] = lambda v: rx.search(v) is not None
    return fn


def _compile(pattern: str):
    """Compile an ECMA-262 pattern: a trailing unescaped ``$`` becomes ``\\Z``."""
    import re
    src = pattern
    head = src[:-1]
    if src.endswith("$") and (len(head) - len(head.rstrip("\\"))) % 2 == 0:
        src = src[:-1] + r"\Z"
    return re.compile(src)
