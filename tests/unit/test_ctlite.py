"""runtime/ctlite.py behaves as the ctypes it stands in for (for what syscalls.py
uses), and process.direct() forks the init from hako only when nothing must
happen before the container's namespaces."""

import ctypes
import errno
import os

import pytest

from runtime import ctlite, process


@pytest.mark.parametrize("name", ["c_int", "c_uint", "c_long", "c_ulong", "c_ushort",
                                  "c_void_p", "c_char", "c_int32", "c_uint32", "c_uint64",
                                  "c_size_t"])
def test_types_match_ctypes(name):
    assert ctlite.sizeof(getattr(ctlite, name)) == ctypes.sizeof(getattr(ctypes, name))
    assert getattr(ctlite, name)._type_ == getattr(ctypes, name)._type_


def test_structure_layout_matches_ctypes():
    class Mine(ctlite.Structure):
        _fields_ = [("a", ctlite.c_uint32), ("b", ctlite.c_uint64), ("c", ctlite.c_ushort)]

    class Theirs(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint64), ("c", ctypes.c_ushort)]

    assert ctlite.sizeof(Mine) == ctypes.sizeof(Theirs)
    assert bytes(Mine(1, 2, 3)) == bytes(Theirs(1, 2, 3))
    assert ctlite.sizeof(Mine * 2) == 2 * ctlite.sizeof(Mine)


def test_cdll_calls_libc_and_keeps_errno():
    libc = ctlite.CDLL(None, use_errno=True)
    assert libc.getpid() == os.getpid()
    assert libc.getpid is libc.getpid  # cached: a restype set on it sticks
    assert libc.close(ctlite.c_int(-1)) == -1
    assert ctlite.get_errno() == errno.EBADF
    libc.syscall.restype = ctlite.c_long
    assert libc.syscall.restype is ctlite.c_long
    with pytest.raises(ValueError):
        ctlite.CDLL(None, use_errno=False)


def test_string_buffer_and_cast():
    data = b"ab\x00cd\x00"
    buf = ctlite.create_string_buffer(data, len(data))
    assert buf.raw == data
    ptr = ctlite.cast(buf, ctlite.c_void_p)
    assert ptr.value == ctlite.addressof(buf)
    assert ctypes.string_at(ptr.value, len(data)) == data


class _Plan:
    def __init__(self, new, join=None):
        self.new = set(new)
        self.join = dict(join or {})


class _Launch:
    def __init__(self, new, join=None, cgroup=None):
        self.plan = _Plan(new, join)
        self.cgroup = cgroup


@pytest.mark.parametrize("launch,direct", [
    (_Launch({"pid", "mount", "network", "ipc", "uts"}), True),
    (_Launch({"mount"}), True),
    (_Launch({"user", "pid", "mount"}), False),            # the user namespace comes first
    (_Launch({"pid", "mount"}, {"network": "/x"}), False),  # joins: stage-1
    (_Launch({"time", "pid", "mount"}), False),             # offsets before the init
    (_Launch({"cgroup", "mount"}, cgroup=object()), False),  # cgroup joined before unshare
])
def test_direct_only_without_a_first_stage(launch, direct):
    assert process.direct(launch) is direct


def test_own_pidns_only_where_we_may_go_back():
    """Root of the host: an fd (and nothing changed). Root of a user namespace
    that does not own our pid namespace (rootless podman): -1, so create and
    exec keep their first stage."""
    import subprocess
    import sys

    if os.geteuid() == 0:
        before = os.readlink("/proc/self/ns/pid_for_children")
        fd = process.own_pidns()
        assert fd >= 0
        os.close(fd)
        assert os.readlink("/proc/self/ns/pid_for_children") == before
    code = ("import os, sys; sys.path.insert(0, os.getcwd()); from runtime import process; "
            "print(process.own_pidns())")
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
                           capture_output=True, text=True, timeout=30,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                               os.path.abspath(__file__)))))
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if r.returncode != 0 and "unshare" in r.stderr:
        pytest.skip(f"no user namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "-1"
