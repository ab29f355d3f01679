"""Device-rule sequences shared by tests/test_devices_order.py (real v1 cgroup)
and tests/unit/test_cgroups_devices_order.py (emulator, fake cgroupfs, eBPF)."""

DENY_ALL = {"allow": False, "access": "rwm"}
ALLOW_ALL = {"allow": True, "access": "rwm"}
KMSG = {"type": "c", "major": 1, "minor": 11}   # /dev/kmsg: not among the default devices
KMSG_NODE = {"path": "/dev/kmsg", **KMSG, "fileMode": 0o666, "uid": 0, "gid": 0}
#: the OCI validation suite's linux_cgroups_devices config
SUITE = [DENY_ALL, {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
         {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"},
         {"allow": True, "type": "b", "major": 10, "minor": 200, "access": "r"}]

#: (name, linux.resources.devices, what /dev/kmsg then allows among r, w, m);
#: m is always allowed by the default "c *:* m"
SEQUENCES = [
    ("deny-then-allow", [DENY_ALL, {"allow": True, **KMSG, "access": "w"}], "wm"),
    ("allow-then-deny", [DENY_ALL, {"allow": True, **KMSG, "access": "rwm"},
                         {"allow": False, **KMSG, "access": "w"}], "rm"),
    ("allow-all-then-deny", [ALLOW_ALL, {"allow": False, **KMSG, "access": "w"}], "rm"),
    ("deny-then-allow-again", [ALLOW_ALL, {"allow": False, **KMSG, "access": "w"},
                               {"allow": True, **KMSG, "access": "w"}], "rwm"),
    ("allow-then-deny-all", [DENY_ALL, {"allow": True, **KMSG, "access": "rwm"}, DENY_ALL], "m"),
]
