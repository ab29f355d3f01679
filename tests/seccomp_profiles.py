"""The engines' default seccomp profiles, turned into OCI ``linux.seccomp``.

Podman's (/usr/share/containers/seccomp.json, Debian package
golang-github-containers-common) and docker's (profiles/seccomp/default.json)
are not OCI sections: each rule has ``includes``/``excludes`` by capability,
architecture and kernel version, and ``archMap`` lists sub-architectures. The
engine resolves them for the container's bounding set and the host's
architecture before writing config.json; :func:`to_oci` does the same, the way
containers/common and moby do, so tests can load what an engine would hand to
hako.

Docker's profile is compiled into dockerd: the docker.io package ships no
file. The JSON is in golang-github-docker-docker-dev (a heavy -dev package);
set HAKO_DOCKER_SECCOMP to a copy to run the docker tests.
"""

from __future__ import annotations

import json
import os
import platform

PODMAN_PROFILE = "/usr/share/containers/seccomp.json"
DOCKER_PROFILE_CANDIDATES = (
    os.environ.get("HAKO_DOCKER_SECCOMP") or "",
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json",
)

#: docker's default bounding set (podman's is a subset of it)
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]

_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_SCMP_NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def docker_profile_path() -> str | None:
    for p in DOCKER_PROFILE_CANDIDATES:
        if p and os.path.isfile(p):
            return p
    return None


def _kernel() -> tuple[int, int]:
    rel = platform.release().split("-")[0].split(".")
    return int(rel[0]), int(rel[1])


def _kver(s: str) -> tuple[int, int]:
    a, _, b = s.partition(".")
    return int(a), int(b.split(".")[0] or 0)


def to_oci(profile: dict | str, caps: list[str] | None = None,
           machine: str | None = None) -> dict:
    if isinstance(profile, str):
        with open(profile) as f:
            profile = json.load(f)
    caps = DEFAULT_CAPS if caps is None else caps
    machine = machine or platform.machine()
    goarch = _GO_ARCH.get(machine, machine)
    native = _SCMP_NATIVE.get(machine)
    out: dict = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = []
    for m in profile.get("archMap") or []:
        if m["architecture"] == native:
            arches = [m["architecture"], *m.get("subArchitectures", [])]
    if not arches and profile.get("architectures"):
        arches = list(profile["architectures"])
    if arches:
        out["architectures"] = arches
    rules = []
    for call in profile.get("syscalls") or []:
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if goarch in (exc.get("arches") or []):
            continue
        if any(c in caps for c in exc.get("caps") or []):
            continue
        if exc.get("minKernel") and _kernel() >= _kver(exc["minKernel"]):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if any(c not in caps for c in inc.get("caps") or []):
            continue
        if inc.get("minKernel") and _kernel() < _kver(inc["minKernel"]):
            continue
        rule = {"names": call.get("names") or [call["name"]], "action": call["action"]}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [{"index": a["index"], "value": a["value"],
                             "valueTwo": a.get("valueTwo", 0), "op": a["op"]}
                            for a in call["args"]]
        rules.append(rule)
    out["syscalls"] = rules
    return out
