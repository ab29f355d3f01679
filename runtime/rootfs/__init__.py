"""The container's filesystem: mounts, devices, pivot_root, masked/read-only paths.

Runs in the container's init, already inside its new mount namespace (and user
namespace when configured), before the user process is exec'd. The order is
runc's (libcontainer/rootfs_linux.go):

setup_rootfs
  1. "/" made rslave (or per linux.rootfsPropagation, unless [r]unbindable),
     the rootfs' parent mount made private, the rootfs bind-mounted onto itself;
  2. every ``mounts[]`` entry, in order, each target resolved *inside* the rootfs
     (runtime.inroot) and mounted onto ``/proc/self/fd/N``; before them, the
     mount points of hako's own entries that the rootfs cannot take
     (mountpoints);
  3. devices, /dev/ptmx and /dev symlinks (unless /dev is a bind mount);
  4. ``before_pivot()`` (the init's hook point), pivot_root (or MS_MOVE + chroot
     with --no-pivot), stdio on /dev/null re-opened.
finalize_rootfs (after hostname and sysctl)
  readonlyPaths, maskedPaths, tmpfs and /dev mounts asked ``ro`` remounted
  read-only, root.readonly, then linux.rootfsPropagation on the new "/"
  (mountopts.final_propagation says what and why).

Every failure is a :class:`RootfsError` whose str() is one line naming the
container path and the errno text.

One stage per module: ``setup`` (the order above, pivot_root included),
``mountpoints`` (hako's own mount points), ``entries`` (one mounts[] entry, by
type; nothing over /proc) and ``cgroupfs`` (cgroup entries), ``finalize``;
shared by them: ``context`` (the rootfs fd, targets and mount calls of one
setup, their one-line errors) and ``hostmounts`` (/proc/self/mountinfo).
Devices are runtime.devices, paths inside the rootfs runtime.inroot, mount
options runtime.mountopts.

The init imports this package before pivot_root, and with it every module of
it (below): nothing here imports lazily, since the host's sys.path is gone
afterwards.
"""

from __future__ import annotations

from runtime.inroot import RootfsError
from runtime.rootfs import (  # noqa: F401  (every stage, loaded now: see above)
    cgroupfs, context, entries, finalize, hostmounts, mountpoints, setup,
)
from runtime.rootfs.cgroupfs import cgroup_layout
from runtime.rootfs.finalize import finalize_rootfs
from runtime.rootfs.hostmounts import MountInfo, parse_mountinfo, read_mountinfo
from runtime.rootfs.setup import rootfs_path, setup_rootfs

__all__ = ["RootfsError", "finalize_rootfs", "setup_rootfs", "parse_mountinfo", "MountInfo",
           "read_mountinfo", "rootfs_path", "cgroup_layout"]
