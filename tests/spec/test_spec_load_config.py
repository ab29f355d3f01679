"""spec.config.load_config: file errors, messages, semantic rules, unknown properties."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spec.config import ConfigError, load_config, parse_semver, validate_config
from spec.validate import format_path

RUNC_SPEC = Path(__file__).resolve().parent / "data" / "runc-spec.json"


@pytest.fixture
def base() -> dict:
    """What `runc spec` writes: a typical, valid config."""
    return json.loads(RUNC_SPEC.read_text())


def write(tmp_path: Path, doc: Any) -> str:
    text = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(tmp_path / "config.json", mode) as f:
        f.write(text)
    return str(tmp_path)


def refusal(doc: Any) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(doc)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- files and JSON -------------------------------------------------------------------


def test_loads_runc_spec_unchanged(tmp_path: Path, base: dict) -> None:
    assert load_config(write(tmp_path, base)) == base


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f"no such file in bundle {tmp_path}"
    assert info.value.path == ""


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^no such file in bundle "):
        load_config(str(tmp_path / "nope"))


def test_config_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match="^is a directory"):
        load_config(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode-000 file")
def test_unreadable(tmp_path: Path, base: dict) -> None:
    bundle = write(tmp_path, base)
    os.chmod(tmp_path / "config.json", 0)
    with pytest.raises(ConfigError, match="^cannot read: Permission denied"):
        load_config(bundle)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{]", "invalid JSON at line 1, column 2: Expecting property name enclosed in double quotes"),
        ('{\n  "ociVersion": "1.0.0",\n}', "invalid JSON at line 3, column 1: "),
        ("", "invalid JSON at line 1, column 1: Expecting value"),
        ('{"ociVersion": NaN}', "invalid JSON: NaN is not a JSON value"),
        (b"\xff\xfe{", "invalid JSON: the file is not UTF-8 text"),
        ("[" * 100000, "invalid JSON: nested too deeply"),
    ],
)
def test_invalid_json(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).startswith(message), str(info.value)


def test_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[]"))
    assert str(info.value) == "expected an object, got array"


# --- schema messages --------------------------------------------------------------------


def edit(base: dict, change: Callable[[dict], None]) -> dict:
    doc = copy.deepcopy(base)
    change(doc)
    return doc


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 0}]),
            "linux.uidMappings[0].size: must be ≥ 1",
        ),
        (lambda c: c["process"].update(args="sh"), "process.args: must be an array of strings, got string"),
        (lambda c: c["process"].update(args=["sh", 1]), "process.args[1]: expected a string, got integer"),
        (lambda c: c["process"]["user"].update(uid="0"), "process.user.uid: expected an integer, got string"),
        (lambda c: c["process"]["user"].update(uid=0.0), "process.user.uid: expected an integer, got number"),
        (lambda c: c["process"]["user"].update(uid=2**32), "process.user.uid: must be ≤ 4294967295"),
        (
            lambda c: c["process"]["user"].update(uid=True),
            "process.user.uid: expected an integer, got boolean",
        ),
        (lambda c: c["process"].update(terminal=None), "process.terminal: expected a boolean, got null"),
        (
            lambda c: c["linux"]["namespaces"][2].update(type="net"),
            "linux.namespaces[2].type: must be one of cgroup, ipc, mount, network, pid, time, user, uts",
        ),
        (lambda c: c["linux"]["namespaces"].append({}), "linux.namespaces[6].type: is required"),
        (
            lambda c: c["process"]["rlimits"][0].update(type="NOFILE"),
            "process.rlimits[0].type: must match ^RLIMIT_[A-Z]+$",
        ),
        (
            lambda c: c["process"]["rlimits"][0].update(type="RLIMIT_NOFILE\n"),
            "process.rlimits[0].type: must match ",
        ),
        (lambda c: c["root"].pop("path"), "root.path: is required"),
        (lambda c: c.update(mounts={}), "mounts: must be an array of objects, got object"),
        (
            lambda c: c["linux"].update(rootfsPropagation="rsideways"),
            "linux.rootfsPropagation: must be one of private, rprivate, rshared, rslave, "
            "runbindable, shared, slave, unbindable",
        ),
        (
            lambda c: c["linux"].update(
                seccomp={
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}],
                }
            ),
            "linux.seccomp.syscalls[0].names: must not be empty",
        ),
        (
            lambda c: c["linux"].update(seccomp={"defaultAction": "ALLOW"}),
            "linux.seccomp.defaultAction: must be one of SCMP_ACT_ALLOW, ",
        ),
        (
            lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": 1}),
            'linux.sysctl["net.ipv4.ip_forward"]: expected a string, got integer',
        ),
        (lambda c: c.update(annotations={"a\nb": 1}), 'annotations["a\\nb"]: expected a string, got integer'),
        (
            lambda c: c["linux"].update(
                devices=[{"type": "c", "path": "/dev/x", "major": 1, "minor": 3, "fileMode": 0o1666}]
            ),
            "linux.devices[0].fileMode: must be ≤ 511",
        ),
        (
            lambda c: c.update(hooks={"poststop": [{"path": "/bin/true", "timeout": 0}]}),
            "hooks.poststop[0].timeout: must be ≥ 1",
        ),
        (
            lambda c: c["linux"].update(intelRdt={"memBwSchema": "MB:0=20\n"}),
            "linux.intelRdt.memBwSchema: must match ^MB:[^\\n]*$",
        ),
        (lambda c: c.pop("ociVersion"), "ociVersion: is required"),
        (lambda c: c.update(ociVersion=1.3), "ociVersion: expected a string, got number"),
    ],
)
def test_schema_messages(base: dict, change: Callable[[dict], None], message: str) -> None:
    assert refusal(edit(base, change)).startswith(message)


# --- ociVersion -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.0.0-rc5", "1.2.1", "1.3.0", "1.3.7+build.5"])
def test_supported_versions(base: dict, version: str) -> None:
    validate_config({**base, "ociVersion": version})


@pytest.mark.parametrize(
    "version, message",
    [
        ("2.0.0", 'ociVersion: unsupported version "2.0.0" (hako supports 1.x; written for 1.0.0 to 1.3.0)'),
        ("0.5.0-dev", 'ociVersion: unsupported version "0.5.0-dev" (hako supports 1.x; written for 1.0.0 to 1.3.0)'),
        ("1.0", 'ociVersion: "1.0" is not a SemVer 2.0.0 version'),
        ("01.0.0", 'ociVersion: "01.0.0" is not a SemVer 2.0.0 version'),
        ("1.0.0-", 'ociVersion: "1.0.0-" is not a SemVer 2.0.0 version'),
        ("", 'ociVersion: "" is not a SemVer 2.0.0 version'),
    ],
)
def test_unsupported_versions(base: dict, version: str, message: str) -> None:
    assert refusal({**base, "ociVersion": version}) == message


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("1.2.3", (1, 2, 3)),
        ("1.0.0-alpha.1", (1, 0, 0)),
        ("1.0.0-0.3.7", (1, 0, 0)),
        ("1.0.0-x-y-z.--", (1, 0, 0)),
        ("1.0.0+20130313144700", (1, 0, 0)),
        ("1.0.0-beta+exp.sha.5114f85", (1, 0, 0)),
        ("1.0.0-alpha.01", None),
        ("1.0.0+", None),
        ("1.0.0+a..b", None),
        ("1.2", None),
        ("1.2.3.4", None),
        ("v1.2.3", None),
        ("1.2.٣", None),
    ],
)
def test_parse_semver(text: str, parsed: tuple[int, int, int] | None) -> None:
    assert parse_semver(text) == parsed


# --- rules the schema cannot express ----------------------------------------------------


def ns(*types: str) -> list[dict]:
    return [{"type": t} for t in types]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("root"), "root: is required"),
        (lambda c: c["root"].update(path=""), "root.path: must not be empty"),
        (lambda c: c["process"].update(args=[]), "process.args: must not be empty"),
        (lambda c: c["process"].pop("args"), "process.args: is required"),
        (lambda c: c["process"].update(cwd="home"), "process.cwd: must be an absolute path"),
        (
            lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}),
            'process.rlimits[1].type: duplicate rlimit "RLIMIT_NOFILE"',
        ),
        (
            lambda c: c["linux"].update(namespaces=ns("pid", "ipc", "uts", "pid")),
            'linux.namespaces[3].type: duplicate namespace "pid"',
        ),
        (
            lambda c: c["linux"].update(namespaces=[{"type": "network", "path": "run/netns/x"}]),
            "linux.namespaces[0].path: must be an absolute path",
        ),
        (
            lambda c: c["mounts"][1].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
            "mounts[1].gidMappings: is required when uidMappings is set",
        ),
        (
            lambda c: c["mounts"][1].update(gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
            "mounts[1].uidMappings: is required when gidMappings is set",
        ),
        (
            lambda c: c["mounts"][1]["options"].append("idmap"),
            'mounts[1].options[4]: "idmap" needs uidMappings and gidMappings or a user namespace',
        ),
        (
            lambda c: c.update(hooks={"createRuntime": [{"path": "true"}]}),
            "hooks.createRuntime[0].path: must be an absolute path",
        ),
        (
            lambda c: c["linux"].update(devices=[{"type": "c", "path": "/dev/x", "minor": 3}]),
            'linux.devices[0].major: is required for device type "c"',
        ),
        (
            lambda c: c["linux"].update(maskedPaths=["/proc/kcore", "proc/keys"]),
            "linux.maskedPaths[1]: must be an absolute path",
        ),
        (
            lambda c: c["linux"].update(readonlyPaths=["sys"]),
            "linux.readonlyPaths[0]: must be an absolute path",
        ),
        (
            lambda c: c["linux"]["resources"].update(rdma={"mlx5_1": {}}),
            "linux.resources.rdma.mlx5_1: must set hcaHandles or hcaObjects",
        ),
        (
            lambda c: c["linux"]["resources"].update(blockIO={"weightDevice": [{"major": 8, "minor": 0}]}),
            "linux.resources.blockIO.weightDevice[0]: must set weight or leafWeight",
        ),
        (
            lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"}),
            "linux.seccomp.listenerMetadata: must not be set without listenerPath",
        ),
        (lambda c: c["linux"].update(personality={"flags": []}), "linux.personality.domain: is required"),
    ],
)
def test_semantic_rules(base: dict, change: Callable[[dict], None], message: str) -> None:
    assert refusal(edit(base, change)) == message


@pytest.mark.parametrize(
    "change",
    [
        # Nothing in the spec forbids these, so hako accepts them (runc refuses some).
        lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
        lambda c: c["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"}),
        lambda c: c.pop("process"),
        lambda c: c.update(hostname="h", linux={"namespaces": ns("mount")}),
        lambda c: (
            c["mounts"][1]["options"].append("idmap") or c["linux"]["namespaces"].append({"type": "user"})
        ),
        lambda c: c["mounts"][1].update(
            options=["rbind", "ridmap"],
            uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}],
            gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}],
        ),
        lambda c: c["linux"].update(devices=[{"type": "p", "path": "/dev/fifo"}]),
        lambda c: c["linux"]["resources"].update(rdma={"mlx5_1": {"hcaObjects": 1}}),
        lambda c: c["linux"].update(personality={"domain": "LINUX32"}),
    ],
)
def test_spec_valid_edge_cases_are_accepted(base: dict, change: Callable[[dict], None]) -> None:
    validate_config(edit(base, change))


# --- unknown properties ---------------------------------------------------------------------


def add_unknown_everywhere(node: Any) -> None:
    if isinstance(node, dict):
        for value in list(node.values()):
            add_unknown_everywhere(value)
        node["x-unknown"] = {"nested": [1, None, "two"], "ociVersion": 99}
    elif isinstance(node, list):
        for value in node:
            add_unknown_everywhere(value)


def test_unknown_properties_are_ignored_at_every_level(
    tmp_path: Path, official_dir: Path, base: dict
) -> None:
    example = json.loads((official_dir / "test/config/good/spec-example.json").read_text())
    for doc in (base, {**example, "ociVersion": "1.3.0"}):
        # maps (annotations, sysctl, ...) take any key, so only add unknowns to records
        doc = copy.deepcopy(doc)
        maps = {k: doc["linux"].pop(k) for k in ("sysctl",) if k in doc["linux"]}
        annotations = doc.pop("annotations", None)
        add_unknown_everywhere(doc)
        doc["linux"].update(maps)
        if annotations is not None:
            doc["annotations"] = annotations
        doc["windows"] = {"layerFolders": 3}  # other platforms' sections are ignored too
        assert load_config(write(tmp_path, doc)) == doc


def test_format_path() -> None:
    assert format_path([]) == ""
    assert format_path(["linux", "uidMappings", 0, "size"]) == "linux.uidMappings[0].size"
    assert format_path(["linux", "sysctl", "net.ipv4.ip_forward"]) == 'linux.sysctl["net.ipv4.ip_forward"]'
    assert format_path([0, "a-b_c"]) == "[0].a-b_c"
    assert format_path(["annotations", ""]) == 'annotations[""]'
    assert format_path(["x", "é"]) == 'x["\\u00e9"]'


def test_relative_mount_destination_and_newer_minor_are_accepted(tmp_path):
    """runtime-spec 1.3: a relative destination is relative to "/" (deprecated, still valid);
    a 1.x config of a newer minor only adds properties, which are ignored."""
    import json as _json
    from runtime.default_spec import default_spec
    cfg = default_spec()
    cfg["ociVersion"] = "1.4.0"
    cfg["mounts"][2]["destination"] = "dev/pts"
    (tmp_path / "config.json").write_text(_json.dumps(cfg))
    assert load_config(str(tmp_path))["mounts"][2]["destination"] == "dev/pts"
