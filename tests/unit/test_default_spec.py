"""runtime.default_spec: what `hako spec` writes, checked against `runc spec`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.default_spec import OCI_VERSION, default_spec

RUNC = os.environ.get("RUNC") or "/usr/sbin/runc"
REPO = Path(__file__).resolve().parents[2]
needs_runc = pytest.mark.skipif(
    not (os.access(RUNC, os.X_OK) or shutil.which("runc")), reason="runc is not installed"
)


def runc_spec(tmp_path: Path, rootless: bool) -> dict:
    runc = RUNC if os.access(RUNC, os.X_OK) else shutil.which("runc")
    d = tmp_path / ("rootless" if rootless else "root")
    d.mkdir()
    subprocess.run([runc, "spec", *(["--rootless"] if rootless else [])], cwd=d,
                   check=True, capture_output=True, timeout=30)
    return json.loads((d / "config.json").read_text())


def all_options(spec: dict) -> list[str]:
    return [o for m in spec["mounts"] for o in m.get("options", [])]


def test_basics():
    spec = default_spec()
    assert spec["ociVersion"] == OCI_VERSION == "1.3.0"
    assert spec["process"]["args"] == ["sh"]
    assert spec["process"]["terminal"] is True
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert default_spec(args=["echo", "hi"])["process"]["args"] == ["echo", "hi"]
    assert default_spec(args=[])["process"]["args"] == []


def test_fresh_documents():
    a = default_spec()
    a["mounts"].clear()
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    b = default_spec()
    assert b["mounts"] and "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["bounding"]
    args = ["x"]
    spec = default_spec(args=args)
    spec["process"]["args"].append("y")
    assert args == ["x"]


def test_json_round_trip():
    for rootless in (False, True):
        spec = default_spec(rootless)
        assert json.loads(json.dumps(spec)) == spec


def test_rootful_shape():
    spec = default_spec()
    ns = [n["type"] for n in spec["linux"]["namespaces"]]
    assert ns == ["pid", "network", "ipc", "uts", "mount"]
    assert "uidMappings" not in spec["linux"]
    assert spec["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sysfs["type"] == "sysfs"
    assert "gid=5" in all_options(spec)


def test_rootless_shape():
    spec = default_spec(rootless=True)
    linux = spec["linux"]
    ns = [n["type"] for n in linux["namespaces"]]
    assert ns == ["pid", "ipc", "uts", "mount", "user"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in linux
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sysfs == {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    assert not [o for o in all_options(spec) if o.startswith(("gid=", "uid="))]
    devpts = next(m for m in spec["mounts"] if m["destination"] == "/dev/pts")
    assert "newinstance" in devpts["options"]
    # everything else is the rootful spec
    rootful = default_spec()
    assert spec["process"] == rootful["process"]
    assert linux["maskedPaths"] == rootful["linux"]["maskedPaths"]
    assert linux["readonlyPaths"] == rootful["linux"]["readonlyPaths"]


def test_rootless_explicit_ids():
    linux = default_spec(rootless=True, uid=1234, gid=5678)["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1234, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 5678, "size": 1}]


@needs_runc
@pytest.mark.parametrize("rootless", [False, True], ids=["rootful", "rootless"])
def test_matches_runc_spec(tmp_path, rootless):
    ours, theirs = default_spec(rootless), runc_spec(tmp_path, rootless)
    # the parts that matter, one by one for readable failures
    assert ours["mounts"] == theirs["mounts"]
    assert ours["linux"].get("namespaces") == theirs["linux"].get("namespaces")
    assert ours["process"]["capabilities"] == theirs["process"]["capabilities"]
    assert ours["linux"]["maskedPaths"] == theirs["linux"]["maskedPaths"]
    assert ours["linux"]["readonlyPaths"] == theirs["linux"]["readonlyPaths"]
    assert ours["linux"].get("uidMappings") == theirs["linux"].get("uidMappings")
    assert ours["linux"].get("gidMappings") == theirs["linux"].get("gidMappings")
    assert ours["linux"].get("resources") == theirs["linux"].get("resources")
    # and the whole document, apart from the two deliberate differences
    for doc in (ours, theirs):
        doc.pop("ociVersion")
        doc.pop("hostname")
    assert ours == theirs
    # same key order as runc writes (so `hako spec` output diffs cleanly)
    assert list(ours) == list(theirs)
    assert list(ours["linux"]) == list(theirs["linux"])


def test_schema_valid():
    schema_path = REPO / "spec" / "config.schema.json"
    if not schema_path.exists():
        pytest.skip("spec/config.schema.json not generated yet")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_path.read_text())
    for rootless in (False, True):
        jsonschema.validate(default_spec(rootless), schema)


def test_cheap_import():
    """`hako spec` must not pay for pydantic (or anything heavy)."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "import runtime.default_spec\n"
        "new = sorted(m.split('.')[0] for m in set(sys.modules) - before)\n"
        "print(' '.join(new))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    foreign = {m for m in out if m != "runtime" and m not in sys.stdlib_module_names}
    assert not foreign, f"runtime.default_spec pulls in non-stdlib modules: {sorted(foreign)}"
