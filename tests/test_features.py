"""`hako features` is a valid runtime-spec features document and tells the truth."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import support

SCHEMAS = support.REPO.parent / "shared" / "oci-runtime-spec-v1.3.0"


def features() -> dict:
    r = subprocess.run([str(support.HAKO), "features"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_features_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4
    if not (SCHEMAS / "features-schema.json").exists():
        pytest.skip(f"OCI schemas not found at {SCHEMAS}")
    registry = Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text()), default_specification=DRAFT4))
        for p in SCHEMAS.glob("*.json"))
    validator = jsonschema.Draft4Validator(
        json.loads((SCHEMAS / "features-schema.json").read_text()), registry=registry)
    validator.validate(features())
    # and the schema's own bad fixture stays bad (the validator is not vacuous)
    bad = SCHEMAS / "test" / "features" / "bad" / "missing-ociVersionMax.json"
    assert list(validator.iter_errors(json.loads(bad.read_text())))


def test_features_match_what_hako_does():
    f = features()
    assert f["ociVersionMax"] == "1.3.0"
    assert f["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer",
                          "poststart", "poststop"]
    assert sorted(f["linux"]["namespaces"]) == sorted(
        ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"])
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    assert len(f["linux"]["capabilities"]) == last + 1
    assert {"idmap", "ridmap"} <= set(f["mountOptions"])
    # every annotation an extension acts on is named, as an exact key or a "." prefix
    from runtime import extensions
    unsafe = f["potentiallyUnsafeConfigAnnotations"]
    for key in ("io.hako.network", "io.hako.network.ports", "io.hako.rootfs.driver"):
        assert key in unsafe or any(p.endswith(".") and key.startswith(p) for p in unsafe)
        assert extensions._wanted({key: "x"}), key
    # idmapped mounts need root (runtime/idmapped.py)
    assert f["linux"]["mountExtensions"]["idmap"]["enabled"] == (os.geteuid() == 0)
    assert {"rro", "rnosuid", "rnoatime", "rsymfollow"} <= set(f["mountOptions"])
    assert {"rbind", "ro", "nosuid", "rprivate", "tmpcopyup"} <= set(f["mountOptions"])
    sec = f["linux"]["seccomp"]
    if sec["enabled"]:
        assert "SCMP_ACT_NOTIFY" in sec["actions"] and "SCMP_CMP_MASKED_EQ" in sec["operators"]
        assert "SCMP_ARCH_X86_64" in sec["archs"]
        assert set(sec["supportedFlags"]) <= set(sec["knownFlags"])
    assert f["linux"]["apparmor"]["enabled"] == Path("/sys/kernel/security/apparmor").is_dir()
    assert f["linux"]["cgroup"]["systemd"] is True and f["linux"]["cgroup"]["systemdUser"] is True
