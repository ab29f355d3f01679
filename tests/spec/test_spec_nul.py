"""A NUL character in any string of config.json (or of exec --process) is refused
at validation with one line naming its JSON path (issue 13, part 5): every such
string reaches the kernel as a C string (argv, environment, paths, names), and
before this check a NUL in process.args failed the container with exit 1 and an
empty message."""

from __future__ import annotations

import copy
import random
from typing import Any, Iterator

import pytest
import spec_testlib as lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.default_spec import default_spec
from spec.config import ConfigError, validate_config
from spec.validate import first_error, format_path, load_schema

SCHEMA = load_schema("config.schema.json")
VALID = lib.from_schema(SCHEMA, SCHEMA["$defs"])


def strings(doc: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every string value, annotations excepted (opaque data)."""
    if isinstance(doc, str):
        yield path
    elif isinstance(doc, dict):
        for key, value in doc.items():
            if path == () and key == "annotations":
                continue
            yield from strings(value, path + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from strings(value, path + (i,))


def with_nul(doc: dict, path: tuple, at: int = 0) -> dict:
    bad = copy.deepcopy(doc)
    node = bad
    for part in path[:-1]:
        node = node[part]
    value = node[path[-1]]
    node[path[-1]] = value[:at] + "\0" + value[at:]
    return bad


def verdict(doc: Any) -> ConfigError | None:
    try:
        validate_config(doc)
    except ConfigError as e:
        assert "\n" not in str(e)
        return e
    return None


DEFAULTS = {"root": default_spec(rootless=False), "rootless": default_spec(rootless=True)}
CASES = [(mode, path) for mode, doc in DEFAULTS.items() for path in strings(doc)]


def test_every_string_of_the_default_spec_is_covered():
    assert ("process", "args", 0) in [p for _, p in CASES]
    assert ("process", "env", 0) in [p for _, p in CASES]
    assert any(p[0] == "mounts" for _, p in CASES)
    assert all(verdict(doc) is None for doc in DEFAULTS.values())


@pytest.mark.parametrize("mode,path", CASES, ids=[f"{m}:{format_path(list(p))}" for m, p in CASES])
def test_nul_in_any_string_is_refused_by_its_path(mode, path):
    bad = with_nul(DEFAULTS[mode], path, at=1)
    err = verdict(bad)
    assert err is not None and err.path == format_path(list(path)), err
    if first_error(bad, SCHEMA) is None and path != ("ociVersion",):
        assert "NUL character" in str(err)  # else an enum or version says why


def test_process_args_message():
    doc = with_nul(DEFAULTS["root"], ("process", "args", 0), at=2)
    doc["process"]["args"] = ["echo", "a\0b", "c\0"]
    err = verdict(doc)
    assert str(err) == ("process.args[1]: contains a NUL character (\\u0000), which no "
                        "argument, environment entry, path or name can hold")


def test_nul_in_a_map_key_names_the_key():
    doc = copy.deepcopy(DEFAULTS["root"])
    doc["linux"]["sysctl"] = {"net.ipv4.ip\0forward": "1"}
    err = verdict(doc)
    assert err is not None and err.path == 'linux.sysctl["net.ipv4.ip\\u0000forward"]'


def test_annotations_are_opaque_but_hakos_own_are_checked():
    doc = copy.deepcopy(DEFAULTS["root"])
    doc["annotations"] = {"org.example": "a\0b"}
    assert verdict(doc) is None
    doc["annotations"]["io.hako.network"] = "none\0"
    err = verdict(doc)
    assert err is not None and err.path == 'annotations["io.hako.network"]'


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(VALID, st.data())
def test_a_nul_anywhere_is_never_accepted(config: dict, data: st.DataObject) -> None:
    """Generated schema-valid configs: a NUL put into any string makes the config
    invalid; if the config was accepted without it, the error names that string."""
    config["ociVersion"] = "1.3.0"
    paths = list(strings(config))
    if not paths:
        return
    rnd = random.Random(data.draw(st.integers(0, 2**64), label="seed"))
    path = rnd.choice(paths)
    before = verdict(config)
    err = verdict(with_nul(config, path, at=rnd.randint(0, 3)))
    assert err is not None
    if before is None:  # else an earlier problem may be reported first
        assert err.path == format_path(list(path)), (err, path)
