"""The waiting container init keeps only its own memory resident
(runtime/residency.py): the code it ran to set the container up is dropped
before it blocks on exec.fifo, and the container still starts and runs."""

from __future__ import annotations

import json
import time

import pytest

from runtime import residency


def _resident_code_kib(pid: int) -> int:
    """Resident KiB of the mappings residency.py lets go of."""
    try:
        smaps = open(f"/proc/{pid}/smaps", "rb").read()
    except OSError as e:
        pytest.skip(f"cannot read /proc/{pid}/smaps of the init as this user: {e}")
    keep = set(residency.clean_file_mappings(smaps))
    total, current = 0, None
    for line in smaps.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and b"-" in head[0]:
            lo, hi = (int(x, 16) for x in head[0].split(b"-"))
            current = (lo, hi - lo)
        elif line.startswith(b"Rss:") and current in keep:
            total += int(line.split()[1])
    return total


#: (seccomp profile, whether the init may drop its pages while it is loaded)
PROFILES = {
    "none": (None, True),
    "allows madvise": ({"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["mbind"], "action": "SCMP_ACT_ERRNO"}]}, True),
    "kills on madvise": ({"defaultAction": "SCMP_ACT_ALLOW",
                          "syscalls": [{"names": ["madvise"], "action": "SCMP_ACT_KILL"}]}, False),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_waiting_init_drops_its_code_and_still_starts(rt, profile):
    seccomp, drops = PROFILES[profile]
    cid = rt.new_id()
    patch = {"process": {"args": ["sleep", "100"]}}
    if seccomp:  # loaded before the init waits (no no_new_privs)
        patch["linux"] = {"seccomp": seccomp}
        patch["process"]["noNewPrivileges"] = False
    bundle = rt.bundle(patch=patch)
    pidfile = rt.dir / f"{cid}.pid"
    assert rt.hako("create", "--bundle", bundle, "--pid-file", pidfile, cid).returncode == 0
    pid = int(pidfile.read_text())
    # ~5 MiB of it before (interpreter, libc, frozen modules); what the init
    # runs between dropping and blocking on the fifo comes back (~2 MiB)
    assert (_resident_code_kib(pid) < 3072) == drops
    assert rt.hako("start", cid).returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the init execs the user's program
        if open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].endswith(b"sleep"):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the init did not exec sleep")
    assert json.loads(rt.hako("state", cid).stdout)["status"] == "running"
