"""runtime.mountopts: OCI mount options -> flags, cleared flags, propagation, data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime import mountopts as M  # noqa: E402
from runtime.syscalls import (  # noqa: E402
    MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_STRICTATIME, MS_BIND, MS_DIRSYNC, MS_LAZYTIME, MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME,
    MS_NOEXEC, MS_NOSUID, MS_NOSYMFOLLOW, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME,
    MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE,
)

SETS = {
    "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
    "sync": MS_SYNCHRONOUS, "dirsync": MS_DIRSYNC, "remount": MS_REMOUNT, "mand": MS_MANDLOCK,
    "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME, "lazytime": MS_LAZYTIME, "nosymfollow": MS_NOSYMFOLLOW,
    "bind": MS_BIND, "rbind": MS_BIND | MS_REC,
}
CLEARS = {
    "rw": MS_RDONLY, "suid": MS_NOSUID, "dev": MS_NODEV, "exec": MS_NOEXEC,
    "async": MS_SYNCHRONOUS, "nomand": MS_MANDLOCK, "atime": MS_NOATIME,
    "diratime": MS_NODIRATIME, "norelatime": MS_RELATIME, "nostrictatime": MS_STRICTATIME,
    "nolazytime": MS_LAZYTIME, "symfollow": MS_NOSYMFOLLOW,
}
PROPAGATIONS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC, "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


@pytest.mark.parametrize("opt,flag", sorted(SETS.items()))
def test_setting_options(opt, flag):
    o = M.parse_options([opt])
    assert o.flags == flag
    assert o.cleared == 0
    assert o.data == "" and o.propagation == []


@pytest.mark.parametrize("opt,flag", sorted(CLEARS.items()))
def test_clearing_options(opt, flag):
    # a clearing option removes what an earlier one set, and is remembered as cleared
    setter = next(k for k, v in SETS.items() if v == flag)
    o = M.parse_options([setter, opt])
    assert o.flags == 0
    assert o.cleared == flag
    # and a later setter wins again
    o = M.parse_options([opt, setter])
    assert o.flags == flag and o.cleared == 0


@pytest.mark.parametrize("opt,flags", sorted(PROPAGATIONS.items()))
def test_propagation_is_separate(opt, flags):
    o = M.parse_options(["rbind", opt, "ro"])
    assert o.propagation == [flags]
    assert o.flags == MS_BIND | MS_REC | MS_RDONLY  # never mixed into the mount flags


def test_data_keeps_unknown_options_in_order():
    o = M.parse_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert o.flags == MS_NOSUID | MS_STRICTATIME
    assert o.data == "mode=755,size=65536k"
    o = M.parse_options(["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"])
    assert o.flags == MS_NOSUID | MS_NOEXEC
    assert o.data == "newinstance,ptmxmode=0666,mode=0620,gid=5"


def test_defaults_and_empty():
    assert M.parse_options(None).flags == 0
    assert M.parse_options([]).data == ""
    assert M.parse_options(["defaults"]).flags == 0
    assert M.parse_options(["defaults", ""]).data == ""


def test_runc_spec_mounts():
    assert M.parse_options(["nosuid", "noexec", "nodev", "relatime", "ro"]).flags == (
        MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY)
    o = M.parse_options(["rbind", "nosuid", "noexec", "nodev", "ro"])
    assert o.is_bind and o.flags & MS_REC


def test_extensions_and_idmap():
    o = M.parse_options(["tmpcopyup", "mode=1777"])
    assert o.tmpcopyup and o.data == "mode=1777"
    assert not M.parse_options(["tmpcopyup", "notmpcopyup"]).tmpcopyup
    o = M.parse_options(["rbind", "idmap", "rro"])
    assert o.idmap == "idmap" and o.recursive_bind and o.recursive == ["rro"]
    assert o.data == ""
    assert M.parse_options(["bind", "ridmap"]).idmap == "ridmap"
    assert not M.parse_options(["bind"]).recursive_bind


@pytest.mark.parametrize("opts,want_set,want_clr", [
    (["rro"], MOUNT_ATTR_RDONLY, 0),
    (["rro", "rrw"], 0, MOUNT_ATTR_RDONLY),
    (["rrw", "rro"], MOUNT_ATTR_RDONLY, 0),
    (["rnosuid", "rnodev", "rnoexec"], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
     | MOUNT_ATTR_NOEXEC, 0),
    (["rsuid", "rdev", "rexec", "rsymfollow"], 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
     | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSYMFOLLOW),
    # an access-time mode set needs the whole atime field cleared (mount_setattr(2))
    (["rnoatime"], MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    (["rnoatime", "rstrictatime"], MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
    (["rnoatime", "rrelatime"], 0, MOUNT_ATTR__ATIME),
    (["rnodiratime", "rnosymfollow"], MOUNT_ATTR_NODIRATIME | MOUNT_ATTR_NOSYMFOLLOW, 0),
])
def test_recursive_attributes(opts, want_set, want_clr):
    o = M.parse_options(["rbind", "ro", *opts])
    assert (o.rec_set, o.rec_clr) == (want_set, want_clr)
    assert o.recursive == opts and o.flags & MS_RDONLY and not o.idmap


@given(st.lists(st.sampled_from(sorted(M.RECURSIVE)), max_size=8))
def test_recursive_attributes_are_consistent(opts):
    """Never a flag both set and cleared (but the atime field, which a mode set
    needs cleared whole), and at most one atime mode set."""
    o = M.parse_options(opts)
    assert not o.rec_set & o.rec_clr & ~MOUNT_ATTR__ATIME
    atime = o.rec_set & MOUNT_ATTR__ATIME
    assert atime in (0, MOUNT_ATTR_NOATIME, MOUNT_ATTR_STRICTATIME)
    if atime:
        assert o.rec_clr & MOUNT_ATTR__ATIME == MOUNT_ATTR__ATIME


def test_rootfs_propagation():
    assert M.rootfs_propagation(None) == 0
    assert M.rootfs_propagation("") == 0
    assert M.rootfs_propagation("rslave") == MS_SLAVE | MS_REC
    assert M.rootfs_propagation("shared") == MS_SHARED
    assert M.rootfs_propagation("runbindable") == MS_UNBINDABLE | MS_REC
    with pytest.raises(ValueError, match="rootfsPropagation"):
        M.rootfs_propagation("sideways")


def test_statvfs_flags():
    # ST_RDONLY|ST_NOSUID|ST_NODEV|ST_RELATIME
    assert M.statvfs_to_flags(0x1 | 0x2 | 0x4 | 0x1000) == (
        MS_RDONLY | MS_NOSUID | MS_NODEV | MS_RELATIME)
    # no atime flag at all: strictatime
    assert M.statvfs_to_flags(0x8) == MS_NOEXEC | MS_STRICTATIME
    assert M.statvfs_to_flags(0x400 | 0x800 | 0x2000) == (
        MS_NOATIME | MS_NODIRATIME | MS_NOSYMFOLLOW)


ALL = sorted(set(SETS) | set(CLEARS) | set(PROPAGATIONS)) + ["mode=755", "size=1k", "uid=5"]


@given(st.lists(st.sampled_from(ALL), max_size=12))
def test_last_option_wins(opts):
    o = M.parse_options(opts)
    for flag in {**SETS, **CLEARS}.values():
        for bit in (1 << n for n in range(32) if flag & (1 << n)):
            if bit == MS_REC:
                continue  # only rbind sets it, nothing clears it
            last = None
            for opt in opts:
                if opt in SETS and SETS[opt] & bit:
                    last = True
                elif opt in CLEARS and CLEARS[opt] & bit:
                    last = False
            assert bool(o.flags & bit) == bool(last), (opts, hex(bit))
            assert bool(o.cleared & bit) == (last is False), (opts, hex(bit))
    assert o.propagation == [PROPAGATIONS[x] for x in opts if x in PROPAGATIONS]
    assert o.data == ",".join(x for x in opts if "=" in x)
    assert not o.flags & M.PROPAGATION_MASK
