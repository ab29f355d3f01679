#!/usr/bin/env python3
"""Minimal busybox root filesystems and OCI bundles for tests and `make demo`.

Library use::

    build_rootfs(Path("cache/rootfs"))                  # once per session
    make_bundle(Path("b1"), config, Path("cache/rootfs"))

Command line (used by `make demo`)::

    python3 tests/busybox.py BUNDLE_DIR [--rootless] [--owner USER] [-- ARGS...]

writes BUNDLE_DIR/rootfs and BUNDLE_DIR/config.json (from
runtime.default_spec, terminal false). With --owner (as root), the bundle is
chowned to USER and a rootless config maps container root to USER.

Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BUSYBOX = Path(os.environ.get("BUSYBOX", "/bin/busybox"))

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\n"
HOSTNAME = "busybox\n"


def applets(busybox: Path = BUSYBOX) -> list[str]:
    """Names of the applets compiled into *busybox* (`busybox --list`)."""
    out = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    return sorted({a.strip() for a in out.split() if a.strip() and "/" not in a})


def build_rootfs(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Build (or complete) a minimal busybox rootfs in *dest*.

    /bin/busybox (static) plus a /bin symlink per applet (so /bin/sh exists),
    /etc/{passwd,group,hostname}, and empty /proc /sys /dev /tmp /root.
    """
    dest = Path(dest)
    if not busybox.is_file():
        raise FileNotFoundError(
            f"{busybox} not found: install busybox-static (make host-deps)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(exist_ok=True)
        os.chmod(dest / d, 0o755)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "root", 0o700)

    shutil.copy2(busybox, dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    names = set(applets(busybox)) | {"sh"}
    names.discard("busybox")
    for name in sorted(names):
        link = dest / "bin" / name
        if not link.is_symlink():
            link.symlink_to("busybox")

    for name, text in (("passwd", PASSWD), ("group", GROUP), ("hostname", HOSTNAME)):
        (dest / "etc" / name).write_text(text)
        os.chmod(dest / "etc" / name, 0o644)
    return dest


def make_bundle(
    dest: Path, config: dict, rootfs_src: Path, *, hardlink: bool = False
) -> Path:
    """Create bundle *dest*: copy of *rootfs_src* as ``rootfs/`` plus config.json.

    The rootfs is copied (default) so that a container, or a chown, cannot alter
    the cached source; ``hardlink=True`` links regular files instead (faster,
    but they share inodes with the source: only for read-only use by one owner).
    ``config["root"]["path"]`` is honoured if it is relative.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    root_rel = (config.get("root") or {}).get("path", "rootfs")
    if os.path.isabs(root_rel):
        raise ValueError(f"make_bundle wants a relative root.path, not {root_rel!r}")
    shutil.copytree(
        rootfs_src,
        dest / root_rel,
        symlinks=True,
        copy_function=os.link if hardlink else shutil.copy2,
    )
    write_config(dest, config)
    return dest


def rootfs_tar(rootfs: Path, tar: Path) -> Path:
    """The rootfs as a tar owned by root (what `podman import`/`docker import` take)."""
    import tarfile
    with tarfile.open(tar, "w") as tf:
        for entry in sorted(rootfs.rglob("*")):
            ti = tf.gettarinfo(str(entry), str(entry.relative_to(rootfs)))
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if ti.isreg():
                with open(entry, "rb") as f:
                    tf.addfile(ti, f)
            else:
                tf.addfile(ti)
    return tar


def write_config(bundle: Path, config: dict) -> Path:
    path = Path(bundle) / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks."""
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _main(argv: list[str]) -> int:
    import argparse

    if "--" in argv:
        i = argv.index("--")
        argv, args = argv[:i], argv[i + 1:]
    else:
        args = None
    p = argparse.ArgumentParser(
        prog="busybox.py", description="Write a busybox OCI bundle (rootfs + config.json)."
    )
    p.add_argument("bundle", type=Path)
    p.add_argument("--rootless", action="store_true", help="rootless config (user namespace)")
    p.add_argument("--owner", help="(root) chown the bundle to this user; rootless mappings use its ids")
    p.add_argument("--terminal", action="store_true", help="keep process.terminal true")
    p.add_argument("--hostname", help="set the container hostname")
    opts = p.parse_args(argv)

    # Runnable from a checkout without installing: make `runtime` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from runtime.default_spec import default_spec

    uid = gid = None
    if opts.owner:
        import pwd

        pw = pwd.getpwnam(opts.owner)
        uid, gid = pw.pw_uid, pw.pw_gid
    config = default_spec(rootless=opts.rootless, args=args, uid=uid, gid=gid)
    config["process"]["terminal"] = opts.terminal
    if opts.hostname:
        config["hostname"] = opts.hostname

    bundle: Path = opts.bundle
    rootfs = bundle / config["root"]["path"]
    if rootfs.exists():
        write_config(bundle, config)  # keep the existing rootfs
    else:
        bundle.mkdir(parents=True, exist_ok=True)
        build_rootfs(rootfs)
        write_config(bundle, config)
    if uid is not None:
        chown_tree(bundle, uid, gid)
    print(bundle)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
