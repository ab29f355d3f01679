"""The official runtime-spec v1.3.0 test fixtures (test/config/good|bad, test/state)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spec.config import ConfigError, load_config, validate_state
from spec.validate import first_error, load_schema

GOOD = [
    "minimal.json",
    "spec-example.json",
    "minimal-for-start.json",
    "linux-netdevice.json",
    "linux-rdma.json",
]
#: Bad Linux fixtures and the path (or message start) the refusal must name.
BAD = {
    "linux-hugepage.json": "linux.resources.hugepageLimits[0].pageSize: must match ",
    "linux-netdevice.json": "linux.netDevices.eth0.name: expected a string, got integer",
    "linux-rdma.json": "linux.resources.rdma.mlx5_1.hcaHandles: expected an integer, got string",
    "invalid-json.json": "invalid JSON at line 1, column 2: ",
}


def bundle_with(tmp_path: Path, fixture: Path, **override: object) -> Path:
    # (a copy keeps the fixture's mode, 0444 in ../shared: only root could overwrite it)
    (tmp_path / "config.json").unlink(missing_ok=True)
    if override:
        doc = json.loads(fixture.read_text())
        doc.update(override)
        (tmp_path / "config.json").write_text(json.dumps(doc))
    else:
        shutil.copy(fixture, tmp_path / "config.json")
    return tmp_path


@pytest.mark.parametrize("name", GOOD)
def test_good_fixture_passes_the_schema(official_dir: Path, name: str) -> None:
    doc = json.loads((official_dir / "test/config/good" / name).read_text())
    assert first_error(doc, load_schema("config.schema.json")) is None


@pytest.mark.parametrize("name", [n for n in GOOD if n != "spec-example.json"])
def test_good_fixture_loads(official_dir: Path, tmp_path: Path, name: str) -> None:
    fixture = official_dir / "test/config/good" / name
    assert load_config(str(bundle_with(tmp_path, fixture))) == json.loads(fixture.read_text())


def test_spec_example_needs_only_a_1x_version(official_dir: Path, tmp_path: Path) -> None:
    """spec-example.json says ociVersion "0.5.0-dev": hako refuses pre-1.0 configs, nothing else."""
    fixture = official_dir / "test/config/good/spec-example.json"
    with pytest.raises(ConfigError, match=r'^ociVersion: unsupported version "0\.5\.0-dev"'):
        load_config(str(bundle_with(tmp_path, fixture)))
    config = load_config(str(bundle_with(tmp_path, fixture, ociVersion="1.3.0")))
    assert config["linux"]["seccomp"]["syscalls"][0]["names"] == ["getcwd", "chmod"]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_fixture_is_refused_naming_the_path(official_dir: Path, tmp_path: Path, name: str) -> None:
    fixture = official_dir / "test/config/bad" / name
    with pytest.raises(ConfigError) as info:
        load_config(str(bundle_with(tmp_path, fixture)))
    message = str(info.value)
    assert message.startswith(BAD[name]), message
    assert "\n" not in message


def test_state_fixture(official_dir: Path) -> None:
    doc = json.loads((official_dir / "test/state/good/spec-example.json").read_text())
    validate_state(doc)
    with pytest.raises(ConfigError, match=r"^status: must be one of created, creating, running, stopped$"):
        validate_state({**doc, "status": "paused"})
    with pytest.raises(ConfigError, match=r"^pid: must be ≥ 0$"):
        validate_state({**doc, "pid": -1})
    with pytest.raises(ConfigError, match=r"^bundle: is required$"):
        validate_state({k: v for k, v in doc.items() if k != "bundle"})
