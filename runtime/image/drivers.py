"""Rootfs drivers: overlay, fuse-overlayfs, vfs.

A bundle written by ``hako bundle --image`` has an empty ``rootfs/`` and
annotations naming the driver and the layer directories (bottom first). The
container's init calls :func:`mount_root` inside the container's user and
mount namespaces, right before ``setup_rootfs`` bind-mounts the rootfs onto
itself; ``delete`` calls :func:`cleanup`. The read-write layer of a container
lives in ``<bundle>/rw/<container id>/`` (annotation ``io.hako.rootfs.rwdir``
moves ``rw``) and is removed by ``delete`` unless ``io.hako.rootfs.keep`` is
"true" (a later container with the same id then starts from it).

- ``overlay``: kernel overlayfs, lowerdir = the store's layers, upperdir and
  workdir per container; ``userxattr`` when the init is not in the initial
  user namespace (rootless: kernel >= 5.11). The mount belongs to the
  container's mount namespace and goes away with it.
- ``fuse-overlayfs``: started by the init, inside the container's user and
  mount namespaces (where it can chown to every mapped id and the mount needs
  no setuid helper), before the init moves on to a fresh mount namespace
  (``unshare(CLONE_NEWNS)``, a copy that has the fuse mount): the daemon stays
  in the original one, so the init's pivot_root never touches it. It is a
  child of the init, so in a pid namespace it dies with the container; its
  host pid is in the state directory and ``delete`` kills it in any case
  (it also dies with the init: PR_SET_PDEATHSIG).
- ``vfs``: the layers flattened into a private copy (reflinks where the
  filesystem has them, ``flatten``), bind-mounted on the rootfs.

This module is imported by the init at the top (the init cannot import after
pivot_root): it imports nothing beyond ``os`` until a container uses it.
"""

from __future__ import annotations

import os

from runtime.image.annotations import (  # noqa: F401  (the names callers use here)
    ANN_DRIVER, ANN_KEEP, ANN_LAYERS, ANN_ROOT, ANN_RWDIR,
)

DRIVERS = ("overlay", "fuse-overlayfs", "vfs")
FUSE_PIDFILE = "fuse-overlayfs.pid"
FUSE_TIMEOUT = 10.0


def _err(msg: str):
    from runtime.errors import HakoError
    return HakoError(msg)


def rw_path(bundle: str, ann: dict, cid: str) -> str:
    base = ann.get(ANN_RWDIR) or "rw"
    parts = [p for p in base.split("/") if p not in ("", ".")]
    if base.startswith("/") or ".." in parts or not parts:
        raise _err(f"annotation {ANN_RWDIR}: {base!r} must be a directory inside the bundle")
    return os.path.join(bundle, *parts, cid)


OWNER_FILE = ".state-dir"


def _claim_rw(rw: str, state_dir: str, keep: bool) -> None:
    """The read-write layer is ours: refuse one another live container (same
    id under another --root) uses; remove one left by a container that is gone."""
    owner = None
    try:
        with open(os.path.join(rw, OWNER_FILE)) as f:
            owner = f.read().strip()
    except OSError:
        pass
    if owner and owner != state_dir and os.path.exists(os.path.join(owner, "state.json")):
        raise _err(f"read-write layer {rw} belongs to the container of {owner}: delete it "
                   "first, or use another container id")
    if os.path.lexists(rw) and not keep:
        from runtime.image.store import rmtrees
        rmtrees([rw])  # left by a container that was never deleted
    os.makedirs(os.path.dirname(rw), mode=0o700, exist_ok=True)
    os.makedirs(rw, mode=0o700, exist_ok=True)
    with open(os.path.join(rw, OWNER_FILE), "w") as f:
        f.write(state_dir + "\n")


# ------------------------------------------------------------------ driver choice
def _kernel_at_least(major: int, minor: int) -> bool:
    rel = os.uname().release.split("-")[0].split(".")
    try:
        return (int(rel[0]), int(rel[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def overlay_problem(rootless: bool, probe_dir: str | None = None) -> str | None:
    """Why kernel overlayfs cannot be used (None: it can)."""
    if rootless and not _kernel_at_least(5, 11):
        return f"kernel {os.uname().release} < 5.11 has no unprivileged overlayfs"
    try:
        with open("/proc/filesystems") as f:
            known = "overlay" in f.read().split()
    except OSError:
        known = False
    if not known and not os.path.exists("/sys/module/overlay"):
        mods = f"/lib/modules/{os.uname().release}"
        if not os.path.isdir(mods) or os.geteuid() != 0:
            return "the kernel has no overlay filesystem"
    if probe_dir is not None:
        return _probe_overlay(rootless, probe_dir)
    return None


def _probe_overlay(rootless: bool, where: str) -> str | None:
    """Mount a tiny overlay in a throwaway (user and) mount namespace."""
    import shutil
    import tempfile

    from runtime import userns
    from runtime.syscalls import CLONE_NEWNS, CLONE_NEWUSER, MS_REC, MS_SLAVE, SYS
    tmp = tempfile.mkdtemp(prefix=".probe-", dir=where)
    try:
        for d in ("l", "u", "w", "m"):
            os.mkdir(os.path.join(tmp, d))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                if rootless:
                    uid, gid = os.geteuid(), os.getegid()
                    SYS.unshare(CLONE_NEWUSER | CLONE_NEWNS)
                    userns.write_self([(0, uid, 1)], [(0, gid, 1)])
                else:
                    SYS.unshare(CLONE_NEWNS)
                SYS.mount(None, "/", None, MS_SLAVE | MS_REC, None)
                opts = (f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w"
                        + (",userxattr" if rootless else ""))
                SYS.mount("overlay", f"{tmp}/m", "overlay", 0, opts)
                code = 0
            except BaseException as e:  # noqa: BLE001
                try:
                    os.write(w, str(e).encode()[:500])
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        msg = b""
        while chunk := os.read(r, 4096):
            msg += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return f"overlay mount refused: {msg.decode(errors='replace') or 'unknown error'}"
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fuse_problem() -> str | None:
    import shutil
    if shutil.which("fuse-overlayfs") is None:
        return "fuse-overlayfs is not installed"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not usable (it must be mode 0666 for rootless use)"
    return None


def choose(requested: str | None, rootless: bool, probe_dir: str) -> tuple[str, list[str]]:
    """(driver, notes on why others were skipped)."""
    if requested:
        if requested not in DRIVERS:
            raise _err(f"--driver: unknown driver {requested!r} ({', '.join(DRIVERS)})")
        why = (overlay_problem(rootless, probe_dir) if requested == "overlay" else
               fuse_problem() if requested == "fuse-overlayfs" else None)
        if why:
            raise _err(f"--driver {requested}: {why}")
        return requested, []
    notes = []
    why = overlay_problem(rootless, probe_dir)
    if why is None:
        return "overlay", notes
    notes.append(f"overlay: {why}")
    why = fuse_problem()
    if why is None:
        return "fuse-overlayfs", notes
    notes.append(f"fuse-overlayfs: {why}")
    return "vfs", notes


# --------------------------------------------------------------- in the init
def mount_root(spec: dict, bundle: str, state_dir: str) -> None:
    """Called by the container's init before setup_rootfs: put the layered
    filesystem on the bundle's rootfs directory. A no-op for other bundles."""
    ann = spec.get("annotations")
    if not ann or ANN_DRIVER not in ann:
        return
    _mount_root(spec, ann, os.path.abspath(bundle), state_dir)


def _in_initial_userns() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def _mount_root(spec: dict, ann: dict, bundle: str, state_dir: str) -> None:
    import json

    from runtime.syscalls import MS_BIND, MS_REC, MS_SLAVE, SYS
    driver = ann[ANN_DRIVER]
    if driver not in DRIVERS:
        raise _err(f"annotation {ANN_DRIVER}: unknown rootfs driver {driver!r}")
    try:
        layers = json.loads(ann.get(ANN_LAYERS) or "[]")
        root_attr = json.loads(ann.get(ANN_ROOT) or "{}")
    except ValueError as e:
        raise _err(f"annotation {ANN_LAYERS}: {e}") from None
    if not layers or not all(isinstance(x, str) and os.path.isabs(x) for x in layers):
        raise _err(f"annotation {ANN_LAYERS}: a JSON list of absolute layer directories")
    for lp in layers:
        if not os.path.isfile(os.path.join(os.path.dirname(lp), "layer.json")):
            raise _err(f"rootfs layer {lp} is not in the layer store (removed by "
                       "`hako layers rm/prune`?): write the bundle again")
    path = (spec.get("root") or {}).get("path") or "rootfs"
    rootfs = os.path.realpath(path if os.path.isabs(path) else os.path.join(bundle, path))
    cid = os.path.basename(state_dir.rstrip("/"))
    rw = rw_path(bundle, ann, cid)
    keep = ann.get(ANN_KEEP) == "true"
    # nothing we mount may propagate back to the host
    SYS.mount(None, "/", None, MS_SLAVE | MS_REC, None, label="/")
    _claim_rw(rw, os.path.abspath(state_dir), keep)
    if driver == "vfs":
        root = os.path.join(rw, "root")
        done = os.path.join(rw, ".root-complete")
        if not os.path.exists(done):
            from runtime.image.flatten import flatten
            if os.path.lexists(root):
                from runtime.image.store import rmtrees
                rmtrees([root])
            flatten(layers, root, root_attr)
            with open(done, "w"):
                pass
        SYS.mount(root, rootfs, None, MS_BIND | MS_REC, None, label=rootfs)
        return
    upper, work = os.path.join(rw, "upper"), os.path.join(rw, "work")
    fresh = not os.path.isdir(upper)
    os.makedirs(upper, mode=0o755, exist_ok=True)
    os.makedirs(work, mode=0o700, exist_ok=True)
    if fresh:
        _set_root_attr(upper, root_attr)
    lowers = list(reversed(layers))  # overlay: the first lowerdir is the top
    if driver == "overlay":
        _mount_overlay(lowers, upper, work, rootfs)
    else:
        _mount_fuse(lowers, upper, work, rootfs, rw, state_dir)


def _set_root_attr(path: str, attr: dict) -> None:
    try:
        os.chown(path, int(attr.get("uid", 0)), int(attr.get("gid", 0)))
    except OSError:
        pass
    os.chmod(path, int(attr.get("mode", 0o755)))


def _mount_overlay(lowers: list[str], upper: str, work: str, rootfs: str) -> None:
    from runtime.syscalls import SYS
    # relative lower paths from their common parent: the options of one
    # mount(2) call must fit in a page
    common = os.path.commonpath(lowers) if len(lowers) > 1 else os.path.dirname(lowers[0])
    rel = [os.path.relpath(x, common) for x in lowers]
    for p in rel + [upper, work]:
        if any(c in p for c in ":,\\"):
            raise _err(f"overlay: path {p} has a ':' ',' or '\\' (not allowed in overlay options)")
    opts = f"lowerdir={':'.join(rel)},upperdir={upper},workdir={work}"
    if not _in_initial_userns():
        opts += ",userxattr"
    if len(opts) >= 4096:
        raise _err(f"overlay: {len(lowers)} layers make mount options longer than a page: "
                   "use --driver fuse-overlayfs or vfs")
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(common)
        try:
            SYS.mount("overlay", rootfs, "overlay", 0, opts, label=rootfs)
        except OSError as e:
            raise _err(f"rootfs driver overlay: {e.strerror or e}") from None
    finally:
        os.fchdir(cwd)
        os.close(cwd)


def _mount_fuse(lowers: list[str], upper: str, work: str, rootfs: str, rw: str,
                state_dir: str) -> None:
    import shutil
    import time

    from runtime.syscalls import CLONE_NEWNS, PR_SET_PDEATHSIG, SYS
    exe = shutil.which("fuse-overlayfs") or "/usr/bin/fuse-overlayfs"
    for p in lowers + [upper, work]:
        if any(c in p for c in ":,"):
            raise _err(f"fuse-overlayfs: path {p} has a ':' or ','")
    opts = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},allow_other"
    logp = os.path.join(rw, "fuse-overlayfs.log")
    before = os.stat(rootfs).st_dev
    pid = os.fork()
    if pid == 0:
        code = 127
        try:
            SYS.prctl(PR_SET_PDEATHSIG, 9)
            host_pid = int(os.readlink("/proc/self"))
            with open(f"/proc/{host_pid}/stat", "rb") as f:
                data = f.read()
            start = int(data[data.rindex(b")") + 2:].split()[19])
            with open(os.path.join(state_dir, FUSE_PIDFILE), "w") as f:
                f.write(f"{host_pid} {start}\n")
            log = os.open(logp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execv(exe, ["fuse-overlayfs", "-f", "-o", opts, rootfs])
        except BaseException:  # noqa: BLE001
            pass
        finally:
            os._exit(code)
    deadline = time.monotonic() + FUSE_TIMEOUT
    while True:
        try:
            if os.stat(rootfs).st_dev != before:
                break
        except OSError:
            pass
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            why = _tail(logp)
            if "not permitted" in why:
                why += (" (the container's device cgroup must allow /dev/fuse, c 10:229 rw, "
                        "as `hako bundle` writes it)")
            raise _err(f"rootfs driver fuse-overlayfs: exited with status "
                       f"{os.waitstatus_to_exitcode(status)} before mounting: {why}")
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise _err(f"rootfs driver fuse-overlayfs: no mount after {FUSE_TIMEOUT:g}s: "
                       f"{_tail(logp)}")
        time.sleep(0.003)
    # on to a copy of this mount namespace: the daemon stays here, untouched
    # by the pivot_root to come
    SYS.unshare(CLONE_NEWNS)


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [x.strip() for x in f.read().splitlines() if x.strip()]
        return lines[-1] if lines else "no message"
    except OSError:
        return "no message"


# ------------------------------------------------------------------ at delete
def cleanup(state_dir: str, cid: str, bundle: str | None, ann: dict) -> None:
    """Stop the fuse-overlayfs daemon, remove the read-write layer (unless
    kept). Called by delete (and by a failed create) once the container's
    processes are gone. Never raises: problems are warnings."""
    from runtime import log
    try:
        _stop_fuse(state_dir)
    except Exception as e:  # noqa: BLE001
        log.warn(f"rootfs: stopping fuse-overlayfs: {e}")
    if ann.get(ANN_KEEP) == "true" or not bundle:
        return
    try:
        rw = rw_path(bundle, ann, cid)
    except Exception as e:  # noqa: BLE001
        log.warn(f"rootfs: {e}")
        return
    if not os.path.lexists(rw):
        return
    try:
        with open(os.path.join(rw, OWNER_FILE)) as f:
            owner = f.read().strip()
        if owner != os.path.abspath(state_dir):
            return  # another container's (same id, another --root)
    except OSError:
        pass
    try:
        _remove_rw(rw, state_dir, bundle)
    except Exception as e:  # noqa: BLE001
        log.warn(f"rootfs: removing the read-write layer {rw}: {e}")
        return
    try:
        os.rmdir(os.path.dirname(rw))
    except OSError:
        pass


def _stop_fuse(state_dir: str) -> None:
    import time

    from runtime.state import proc_stat
    try:
        with open(os.path.join(state_dir, FUSE_PIDFILE)) as f:
            pid, start = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        return
    st = proc_stat(pid)
    if st is None or st[1] != start:
        return
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st = proc_stat(pid)
        if st is None or st[1] != start or st[0] in ("Z", "X"):
            return
        try:
            os.waitpid(pid, os.WNOHANG)  # ours when we are its subreaper
        except ChildProcessError:
            pass
        time.sleep(0.005)
    raise _err(f"fuse-overlayfs (pid {pid}) did not exit")


def _remove_rw(rw: str, state_dir: str, bundle: str) -> None:
    from runtime.image import idmap
    from runtime.image.store import rmtrees
    if os.geteuid() == 0:
        rmtrees([rw])
        return
    m = None
    for p in (os.path.join(state_dir, "config.json"), os.path.join(bundle, "config.json")):
        try:
            import json
            with open(p) as f:
                m = idmap.from_spec(json.load(f))
            break
        except (OSError, ValueError):
            continue
    if m is None or not idmap.has_subids(m):
        rmtrees([rw])
        return
    try:
        rmtrees([rw])  # cheap when the container wrote only as root (= us)
        return
    except OSError:
        pass  # files of other ids: as root of a user namespace with the same mapping
    idmap.run_in_userns(m, rmtrees, [rw])
