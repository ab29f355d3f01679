"""The configuration `hako spec` writes: runc's default spec, rootful or rootless.

Standard library only, and cheap to import: `hako spec` must not load the config
model (pydantic) just to print a starter file.

The result is what `runc spec` / `runc spec --rootless` write (runc 1.1), with two
deliberate differences: ``ociVersion`` is the highest runtime-spec version hako
claims to support, and ``hostname`` is "hako" instead of "runc".
"""

from __future__ import annotations

import os

#: Highest OCI runtime-spec version hako supports (it accepts 1.0.0 ... 1.3.0).
OCI_VERSION = "1.3.0"

DEFAULT_ARGS = ("sh",)

_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")

_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)

_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


def _mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def _to_rootless(spec: dict, uid: int, gid: int) -> None:
    """Apply runc's ToRootless (libcontainer/specconv) to *spec* in place."""
    linux = spec["linux"]
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    namespaces.append({"type": "user"})
    linux["namespaces"] = namespaces
    # Key order as runc writes it (Go struct order): mappings first.
    rest = dict(linux)
    linux.clear()
    linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    linux.update(rest)

    mounts = []
    for mount in spec["mounts"]:
        if os.path.normpath(mount["destination"]) == "/sys":
            # No network namespace of our own: sysfs cannot be mounted, bind the host's.
            mounts.append({
                "destination": "/sys",
                "type": "none",
                "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
            })
            continue
        if "options" in mount:
            # Only the container's own uid/gid exist in the user namespace.
            mount["options"] = [
                o for o in mount["options"] if not o.startswith(("gid=", "uid="))
            ]
        mounts.append(mount)
    spec["mounts"] = mounts

    # An unprivileged user cannot set cgroup limits (and runc drops them all).
    linux.pop("resources", None)


def default_spec(
    rootless: bool = False,
    args: list[str] | None = None,
    *,
    uid: int | None = None,
    gid: int | None = None,
) -> dict:
    """Return a fresh default config.json document.

    *args* replaces ``process.args`` (default ``["sh"]``). With *rootless*, the
    config gets a user namespace mapping container root to *uid*/*gid* (default:
    the caller's effective ids, as ``runc spec --rootless`` does), loses the
    network namespace and cgroup resources, and bind-mounts /sys.
    """
    spec: dict = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": list(DEFAULT_ARGS if args is None else args),
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": list(_CAPS),
                "effective": list(_CAPS),
                "permitted": list(_CAPS),
                "ambient": list(_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "hako",
        "mounts": _mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": list(_MASKED_PATHS),
            "readonlyPaths": list(_READONLY_PATHS),
        },
    }
    if rootless:
        _to_rootless(
            spec,
            os.geteuid() if uid is None else uid,
            os.getegid() if gid is None else gid,
        )
    return spec
