"""Property tests: hako's stdlib validator against jsonschema, the official schema and pydantic.

Valid configs are generated from the schemas themselves (hako's generated schema, and
independently the official v1.3.0 schema files), then mutated at random nested paths.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import spec_testlib as lib
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spec.config import ConfigError, validate_config
from spec.models import Config
from spec.validate import first_error, format_path, load_schema

SCHEMA = load_schema("config.schema.json")
DEFS = SCHEMA["$defs"]
VALID = lib.from_schema(SCHEMA, DEFS)
VALID_WITH_UNKNOWN = lib.from_schema(SCHEMA, DEFS, extras=True)
STRICT_2020 = lib.strict_2020()
_official: dict[str, Any] = {}

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def official() -> Any:
    if "validator" not in _official:
        _official["validator"] = lib.official_validator()
    return _official["validator"]


def official_configs() -> st.SearchStrategy:
    return lib.from_schema(lib.inline_official())


def one_line_error(doc: Any) -> ConfigError | None:
    """validate_config's verdict; anything but ConfigError escaping is a bug."""
    try:
        validate_config(doc)
    except ConfigError as e:
        assert "\n" not in str(e) and "\r" not in str(e), str(e)
        return e
    return None


def has_empty_id_range(doc: Any) -> bool:
    """Official-valid but refused by hako on purpose: an id mapping of size 0."""
    mappings = [
        m
        for m in (doc.get("linux") or {}).get("uidMappings", [])
        + (doc.get("linux") or {}).get("gidMappings", [])
    ]
    for mount in doc.get("mounts", []):
        mappings += mount.get("uidMappings", []) + mount.get("gidMappings", [])
    return any(m.get("size") == 0 for m in mappings)


def has_recursive_propagation(doc: Any) -> bool:
    """Refused by the official schema, accepted by hako on purpose (as runc and crun
    do, and containerd's CRI writes them): rprivate, rshared, rslave, runbindable."""
    value = (doc.get("linux") or {}).get("rootfsPropagation")
    return isinstance(value, str) and value.startswith("r")


@SETTINGS
@given(VALID)
def test_generated_configs_are_valid_for_every_oracle(config: dict) -> None:
    assert first_error(config, SCHEMA) is None
    assert STRICT_2020.is_valid(config)
    # hako's schema is nowhere looser than the official one (but for the r-forms)
    if lib.OFFICIAL_DIR.is_dir() and not has_recursive_propagation(config):
        assert official().is_valid(config), next(official().iter_errors(config)).message
    model = Config.model_validate(config)
    assert json.loads(json.dumps(config)) == config
    dumped = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert json.loads(json.dumps(dumped)) == config  # every field survives the model, by its JSON name


@SETTINGS
@given(VALID_WITH_UNKNOWN)
def test_unknown_properties_are_ignored(config: dict) -> None:
    assert first_error(config, SCHEMA) is None
    assert STRICT_2020.is_valid(config)
    Config.model_validate(config)


@SETTINGS
@given(st.deferred(official_configs))
def test_official_valid_configs_are_accepted(official_dir: Path, config: dict) -> None:
    assert official().is_valid(config)  # the generator itself is right
    assume(not has_empty_id_range(config))
    assert first_error(config, SCHEMA) is None, first_error(config, SCHEMA)
    Config.model_validate(config)


@SETTINGS
@given(VALID, st.data())
def test_mutations_are_reported_at_their_path(config: dict, data: st.DataObject) -> None:
    config["ociVersion"] = "1.3.0"
    nodes = [
        (path, node, value)
        for path, value, node in lib.walk(config, SCHEMA, DEFS)
        if lib.mutations(node, value)
    ]
    rnd = random.Random(
        data.draw(st.integers(0, 2**64), label="seed")
    )  # uniform; sampled_from favours the root
    path, node, value = rnd.choice(nodes)
    kind, arg = rnd.choice(lib.mutations(node, value))
    bad, where = lib.apply(config, path, kind, arg)
    expected = format_path(list(where))

    found = first_error(bad, SCHEMA)
    assert found is not None and found[0] == expected, (found, expected)
    error = one_line_error(bad)
    assert error is not None and error.path == expected
    assert str(error).startswith(f"{expected}: " if expected else "")
    assert not STRICT_2020.is_valid(bad)
    assert not lib.pydantic_ok(Config, bad)


@SETTINGS
@given(VALID, st.data(), lib.JSON_VALUES)
def test_validators_agree_on_random_replacements(config: dict, data: st.DataObject, new: Any) -> None:
    paths = [path for path, _, _ in lib.walk(config, SCHEMA, DEFS)]
    path = random.Random(data.draw(st.integers(0, 2**64), label="seed")).choice(paths)
    doc = lib.replace_at(config, path, new)
    found = first_error(doc, SCHEMA)
    assert (found is None) == STRICT_2020.is_valid(doc) == lib.pydantic_ok(Config, doc), found
    if found is not None:  # the rest of the document is valid: the error is inside `new`
        prefix = format_path(list(path))
        assert found[0] == prefix or found[0].startswith((prefix + ".", prefix + "[")) or not prefix, (
            found,
            prefix,
        )


@SETTINGS
@given(
    st.one_of(
        lib.JSON_VALUES,
        VALID,
        VALID.map(lambda c: {**c, "ociVersion": "1.3.0"}),
        st.builds(
            lambda c, root: {**c, "ociVersion": "1.0.0", "root": root}, VALID_WITH_UNKNOWN, lib.JSON_VALUES
        ),
    )
)
def test_validate_config_raises_only_config_error(doc: Any) -> None:
    one_line_error(doc)


@pytest.mark.parametrize("name", ["config.schema.json", "state.schema.json"])
def test_schema_files_parse(name: str) -> None:
    assert load_schema(name)["type"] == "object"
