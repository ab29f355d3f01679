"""The generated schema: fresh, equivalent to the official one, cheap to use at run time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import spec_testlib as lib

from spec import gen_schema

REPO = Path(__file__).resolve().parents[2]

#: Where hako's schema is deliberately not the official one (see spec/models.py).
DEVIATIONS = {
    f"{where}.size: minimum 0 (official) != 1 (hako)"
    for where in (
        "mounts[].uidMappings[]",
        "mounts[].gidMappings[]",
        "linux.uidMappings[]",
        "linux.gidMappings[]",
    )
} | {
    # rprivate, rshared, rslave, runbindable too: runc and crun accept them and
    # containerd's CRI writes them
    "linux.rootfsPropagation: enum differs",
}


def test_generated_schema_is_not_stale() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "spec.gen_schema", "--check"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def test_check_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in gen_schema.TARGETS:
        (tmp_path / name).write_text((lib.SPEC_DIR / name).read_text())
    monkeypatch.setattr(gen_schema, "SPEC_DIR", tmp_path)
    assert gen_schema.main(["--check"]) == 0
    (tmp_path / "state.schema.json").write_text("{}\n")
    assert gen_schema.main(["--check"]) == 1
    assert gen_schema.main([]) == 0  # rewrites it
    assert gen_schema.main(["--check"]) == 0


def test_compact_refuses_keywords_the_validator_lacks() -> None:
    with pytest.raises(ValueError, match="uniqueItems"):
        gen_schema.compact({"type": "array", "uniqueItems": True})
    assert gen_schema.compact(
        {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "X"}
    ) == {"type": "string"}


def test_runtime_path_imports_only_the_standard_library() -> None:
    """`hako create` must not pay for pydantic (or jsonschema, or typing)."""
    code = (
        "import sys, shutil, tempfile, spec.config\n"
        "d = tempfile.mkdtemp()\n"
        f"shutil.copy({str(lib.DATA_DIR / 'runc-spec.json')!r}, d + '/config.json')\n"
        "spec.config.load_config(d)\n"
        "shutil.rmtree(d)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'pydantic_core', 'jsonschema', 'typing', 'hypothesis', 'spec.models'))\n"
        "assert not bad, bad\n"
        "assert 'spec.models' not in sys.modules and 'spec.gen_schema' not in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    plain = subprocess.run(
        [sys.executable, "-c", "import spec.config, sys; assert 'pydantic' not in sys.modules"],
        check=False,
        cwd=REPO,
    )
    assert plain.returncode == 0


# --- structural equivalence with the official schema (Linux subset) ---------------------------


def differences(official: dict, hako: dict, defs: dict, path: str = "") -> list[str]:
    """Every difference in type, enum, bounds, pattern, properties and required."""
    hako = lib.deref(hako, defs)
    if "anyOf" in official and len(official["anyOf"]) == 1:  # linux.namespaces items
        official = official["anyOf"][0]
    out: list[str] = []
    where = path or "(root)"
    for key in ("type", "minimum", "maximum", "pattern", "minItems"):
        if official.get(key) != hako.get(key) and (key != "type" or official.get(key) is not None):
            out.append(f"{where}: {key} {official.get(key)} (official) != {hako.get(key)} (hako)")
    if sorted(official.get("enum", [])) != sorted(hako.get("enum", [])):
        out.append(f"{where}: enum differs")
    if set(official.get("required", [])) != set(hako.get("required", [])):
        out.append(f"{where}: required {official.get('required')} != {hako.get('required')}")
    o_props, h_props = official.get("properties", {}), hako.get("properties", {})
    if set(o_props) != set(h_props):
        out.append(f"{where}: properties differ: {sorted(set(o_props) ^ set(h_props))}")
    for name in set(o_props) & set(h_props):
        out += differences(o_props[name], h_props[name], defs, f"{path}.{name}" if path else name)
    # a map: official additionalProperties, or patternProperties ".{1,}" (mapStringString)
    o_values = official.get("additionalProperties") or next(
        iter(official.get("patternProperties", {}).values()), None
    )
    h_values = hako.get("additionalProperties")
    if (o_values is None) != (h_values is None):
        out.append(f"{where}: map values differ")
    elif o_values is not None and h_values is not None:
        out += differences(o_values, h_values, defs, f"{path}.*")
    if "items" in official or "items" in hako:
        out += differences(official.get("items", {}), hako.get("items", {}), defs, f"{path}[]")
    return out


def test_same_structure_as_the_official_schema(official_dir: Path) -> None:
    hako = lib.hako_schema()
    found = set(differences(lib.inline_official(), hako, hako["$defs"]))
    assert found == DEVIATIONS


def test_state_schema_matches_the_official_one(official_dir: Path) -> None:
    hako = lib.hako_schema("state.schema.json")
    official = lib.inline_official("state-schema.json", linux_only=False)
    assert differences(official, hako, hako.get("$defs", {})) == []


def test_generated_schema_is_valid_2020_12() -> None:
    from jsonschema import Draft202012Validator

    for name in gen_schema.TARGETS:
        Draft202012Validator.check_schema(json.loads((lib.SPEC_DIR / name).read_text()))


def test_every_keyword_in_the_generated_schema_is_implemented() -> None:
    def keywords(node: Any) -> set[str]:
        if isinstance(node, list):
            return set().union(*map(keywords, node)) if node else set()
        if not isinstance(node, dict):
            return set()
        found = set(node) - {"properties", "$defs"}
        for key, value in node.items():
            if key in ("properties", "$defs"):
                found |= set().union(*map(keywords, value.values())) if value else set()
            else:
                found |= keywords(value)
        return found

    for name in gen_schema.TARGETS:
        used = keywords(json.loads((lib.SPEC_DIR / name).read_text())) - {"$schema", "$comment"}
        assert used <= gen_schema.KEYWORDS, used - gen_schema.KEYWORDS
