"""The runtime-spec "features" document: what this hako, on this host, honours.

Built from the same tables the runtime uses (capability names, namespace
flags, mount options, seccomp actions), and probed where the host decides
(libseccomp present, kernel seccomp flags, LSMs, cgroup layout), so that it
cannot claim what the code does not do.
"""

from __future__ import annotations

import os

from runtime import capabilities, hooks, mountopts
from runtime.version import SPEC_VERSION, VERSION
from runtime.namespaces import FLAGS as NAMESPACES


def _mount_options() -> list[str]:
    opts = set(mountopts.FLAGS) | set(mountopts.PROPAGATION) | set(mountopts.EXTENSIONS)
    opts |= set(mountopts.RECURSIVE)  # mount_setattr: Linux 5.12, older gets a clear error
    opts |= set(mountopts.IDMAP)  # as root (runtime/idmapped.py); rootless gets a clear error
    return sorted(opts)


def _seccomp() -> dict:
    from runtime import seccomp
    try:
        version = seccomp.library_version()
    except Exception:  # noqa: BLE001 - libseccomp missing: seccomp is disabled
        return {"enabled": False}
    flags = sorted(seccomp.FLAGS)
    return {
        "enabled": True,
        "actions": sorted(seccomp.ACTIONS),
        "operators": sorted(seccomp.OPERATORS),
        "archs": sorted("SCMP_ARCH_" + a for a in seccomp.ARCHES),
        "knownFlags": flags,
        "supportedFlags": [f for f in flags if seccomp.kernel_has_flag(seccomp.FLAGS[f])],
        "_version": version,
    }


def _cgroup() -> dict:
    from runtime.cgroups import paths
    host = paths.Host.detect()
    return {
        "v1": host.mode in ("v1", "hybrid"),
        "v2": host.mode in ("v2", "hybrid"),
        # --systemd-cgroup: transient scopes through systemd's D-Bus API
        # (runtime/cgroups/systemd.py), rootless through the user's manager
        "systemd": True,
        "systemdUser": True,
        "rdma": "rdma" in getattr(host, "v1", {}) or host.mode == "v2",
    }


def features() -> dict:
    from runtime import mempolicy, security
    last = capabilities.last_cap()
    sec = _seccomp()
    version = sec.pop("_version", None)
    annotations = {"io.hako.version": VERSION}
    if version:
        annotations["io.github.seccomp.libseccomp.version"] = version
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(hooks.KINDS),
        "mountOptions": _mount_options(),
        "linux": {
            "namespaces": sorted(NAMESPACES),
            "capabilities": capabilities.NAMES[:last + 1],
            "cgroup": _cgroup(),
            "seccomp": sec,
            "apparmor": {"enabled": security.apparmor_enabled()},
            "selinux": {"enabled": security.selinux_enabled()},
            "intelRdt": {"enabled": False},
            # linux.memoryPolicy (runtime/mempolicy.py): every mode and flag is recognized
            "memoryPolicy": {"modes": list(mempolicy.MODES), "flags": list(mempolicy.FLAGS)},
            # idmapped bind mounts (runtime/idmapped.py): root only
            "mountExtensions": {"idmap": {"enabled": os.geteuid() == 0}},
            # linux.netDevices (runtime/netdevices.py): moved in at create, as root
            "netDevices": {"enabled": True},
        },
        "annotations": annotations,
        "potentiallyUnsafeConfigAnnotations": _behaviour_annotations(),
    }


def _behaviour_annotations() -> list[str]:
    """The config annotations that change what hako does: the extensions'
    (runtime/extensions.py), so that an engine can keep a pod's annotations
    from reaching them. A value ending in "." is a prefix (features.md)."""
    from runtime import extensions
    out = []
    for entry in extensions.REGISTRY:
        p = entry.annotation_prefix
        out += [p] if p.endswith(".") else [p, p + "."]
    return out

