"""linux.rootfsPropagation through the recording fake: what "/" gets before the
rootfs bind and after pivot_root, for every value (issue 13, part 3).

An unbindable mount cannot be bind-mounted, so "/" must never be made
unbindable before the rootfs is bound onto itself (that failed with EINVAL);
shared would make pivot_root fail. Both are applied to the new "/" afterwards.
"""

from __future__ import annotations

import pytest

from runtime import mountopts as M
from runtime import rootfs as R
from runtime.syscalls import (
    MS_BIND, MS_PRIVATE, MS_REC, MS_SHARED, MS_SLAVE, MS_UNBINDABLE,
)
from test_rootfs import bundle, host, make_fake, resolver, rootfs_of, setup, summary  # noqa: F401

RSLAVE = MS_SLAVE | MS_REC

#: value -> (flags for "/" before the rootfs bind, flags for "/" after pivot_root)
EXPECTED = {
    None: (RSLAVE, 0),
    "shared": (MS_SHARED, MS_SHARED),
    "rshared": (MS_SHARED | MS_REC, MS_SHARED | MS_REC),
    "slave": (MS_SLAVE, MS_SLAVE),
    "rslave": (RSLAVE, MS_SLAVE),
    "private": (MS_PRIVATE, MS_PRIVATE),
    "rprivate": (MS_PRIVATE | MS_REC, MS_PRIVATE),
    "unbindable": (RSLAVE, MS_UNBINDABLE),
    "runbindable": (RSLAVE, MS_UNBINDABLE | MS_REC),
}


@pytest.mark.parametrize("value", list(EXPECTED))
def test_pure_functions(value):
    prop = M.rootfs_propagation(value)
    assert (M.setup_propagation(prop), M.final_propagation(prop)) == EXPECTED[value]


@pytest.mark.parametrize("value", list(EXPECTED))
def test_setup_then_finalize(host, bundle, resolver, value):
    linux = {"rootfsPropagation": value} if value else {}
    spec = {"root": {"path": "rootfs"}, "linux": linux}
    before, after = EXPECTED[value]
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    got = summary(fake, rootfs_of(bundle))
    assert got[0] == ("mount", None, "/", None, before, None)
    binds = [i for i, c in enumerate(got) if c[0] == "mount" and c[1] == "R" and c[2] == "R"]
    assert binds and got[binds[0]][4] == MS_BIND | MS_REC
    # nothing unbindable before the rootfs is bound (the bind would fail)
    assert not any(c[0] == "mount" and c[4] & MS_UNBINDABLE for c in got[:binds[0] + 1])
    fake = make_fake(resolver)
    R.finalize_rootfs(spec, sc=fake, _root=rootfs_of(bundle))
    got = summary(fake, rootfs_of(bundle))
    assert got == ([("mount", None, "R", None, after, None)] if after else [])


def test_unbindable_with_no_pivot(host, bundle, resolver):
    """--no-pivot: set up as rslave like the default, unbindable after the chroot."""
    spec = {"root": {"path": "rootfs"}, "linux": {"rootfsPropagation": "runbindable"}}
    fake = make_fake(resolver)
    setup(spec, bundle, fake, no_pivot=True)
    assert summary(fake, rootfs_of(bundle))[0] == ("mount", None, "/", None, RSLAVE, None)
    with pytest.raises(R.RootfsError, match="not safe without pivot_root"):
        setup({"root": {"path": "rootfs"}, "linux": {"rootfsPropagation": "rprivate"}}, bundle,
              make_fake(resolver), no_pivot=True)


def test_failure_after_pivot_names_the_field(host, bundle, resolver):
    fake = make_fake(resolver, lambda c: 22 if c.name == "mount" else 0)
    with pytest.raises(R.RootfsError) as e:
        R.finalize_rootfs({"linux": {"rootfsPropagation": "runbindable"}}, sc=fake,
                          _root=rootfs_of(bundle))
    assert str(e.value) == ("linux.rootfsPropagation: make / runbindable: Invalid argument")
