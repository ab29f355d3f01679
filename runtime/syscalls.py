"""Every raw system call hako makes, behind one interface.

Keeping them here means rootfs, namespace and security logic can be unit-tested
without root through a recording fake (tests/fakes.py), the way youki's
``Syscall`` trait and ``TestHelperSyscall`` work. Failures raise ``OSError``
with the errno *and* the call's arguments, so the one-line error the user sees
says what was attempted, not only "Operation not permitted".

Only ``os`` and the ctypes subset in runtime/ctlite.py are imported: this
module sits on create's hot path.
"""

from __future__ import annotations

import os

from runtime import ctlite as ctypes

# --- constants (linux/sched.h, linux/mount.h, linux/fs.h) -------------------
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_CHILD_CLEARTID = 0x00200000
CLONE_CHILD_SETTID = 0x01000000
CLONE_INTO_CGROUP = 0x200000000
SIGCHLD = 17

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# mount_setattr(2) (linux/mount.h)
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# keyctl operations (linux/keyctl.h)
KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5
KEYCTL_DESCRIBE = 6

_ARCH = os.uname().machine  # not platform.machine(): `platform` costs ~5 ms to import
# Numbers of the calls glibc has no wrapper for (or that old glibc lacks).
_NR = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126, "openat2": 437,
               "close_range": 436, "pidfd_open": 434, "pidfd_send_signal": 424,
               "mount_setattr": 442, "open_tree": 428, "move_mount": 429, "ioprio_set": 251,
               "seccomp": 317,
               "sched_setattr": 314, "clone3": 435, "set_mempolicy": 238, "keyctl": 250},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91, "openat2": 437,
                "close_range": 436, "pidfd_open": 434, "pidfd_send_signal": 424,
                "mount_setattr": 442, "open_tree": 428, "move_mount": 429, "ioprio_set": 30,
                "seccomp": 277,
                "sched_setattr": 274, "clone3": 435, "set_mempolicy": 237, "keyctl": 219},
}.get(_ARCH, {})

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]


class _CloneArgs(ctypes.Structure):
    """struct clone_args up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, 88 bytes)."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
        "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


class _Forker:
    """What os.fork does around fork(2), for clone3: CPython's fork hooks
    (PyOS_BeforeFork / PyOS_AfterFork_*: the import lock, the GIL and thread
    states, os.register_at_fork), and glibc's cached tid of the calling
    thread, which its fork() has the kernel write in the child
    (CLONE_CHILD_SETTID). Where that tid lives is glibc's own business; its
    debugger interface publishes it (``_thread_db_pthread_tid``: bits, count,
    offset into struct pthread). Without it (another libc) there is no clone3
    fork, and callers fork(2) as before."""

    def __init__(self) -> None:
        py = ctypes.PyDLL(None, use_errno=True)  # the GIL stays held across the call
        self.syscall = py.syscall
        self.syscall.restype = ctypes.c_long
        for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"):
            getattr(py, name).restype = None
        self.before = py.PyOS_BeforeFork
        self.child = py.PyOS_AfterFork_Child
        self.parent = py.PyOS_AfterFork_Parent
        desc = ctypes.c_uint32.in_dll(_libc, "_thread_db_pthread_tid")
        bits = desc.value
        offset = ctypes.c_uint32.from_address(ctypes.addressof(desc) + 8).value
        if bits != 32 or not 0 < offset < 4096:
            raise OSError(38, "clone3: this libc's thread descriptor is not understood")
        self.offset = offset
        self.pthread_self = _libc.pthread_self
        self.pthread_self.restype = ctypes.c_ulong

    def tid_slot(self) -> int:
        """Where the calling thread's struct pthread keeps its tid."""
        return self.pthread_self() + self.offset


_FORKER: "_Forker | None" = None


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]


RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF


class Syscalls:
    """The real kernel. Tests substitute tests/fakes.FakeSyscalls."""

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        """prlimit64 on ourselves (the `resource` module is a ~2 ms import)."""
        new = _Rlimit(soft, hard)
        if _libc.prlimit64(ctypes.c_int(0), ctypes.c_int(resource), ctypes.byref(new), None) != 0:
            raise _fail(f"setrlimit({resource}, {soft}, {hard})")

    # -- namespaces --------------------------------------------------------
    def unshare(self, flags: int) -> None:
        if _libc.unshare(ctypes.c_int(flags)) != 0:
            raise _fail(f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int = 0, what: str = "") -> None:
        if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
            raise _fail(f"setns({what or fd})")

    # -- mounts ------------------------------------------------------------
    def mount(self, source: str | None, target: str, fstype: str | None,
              flags: int = 0, data: str | None = None, *, label: str = "") -> None:
        """``label`` is what the user knows the target as (for messages)."""
        if _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags),
                       _b(data)) != 0:
            raise _fail(f"mount {source or fstype or 'none'} on "
                        f"{label or target} (type {fstype or 'none'}, flags {flags:#x}"
                        f"{', data ' + data if data else ''})")

    def umount2(self, target: str, flags: int = 0) -> None:
        if _libc.umount2(_b(target), ctypes.c_int(flags)) != 0:
            raise _fail(f"umount {target}")

    def mount_setattr(self, dirfd: int, path: str, flags: int, attr_set: int,
                      attr_clr: int = 0, propagation: int = 0, userns_fd: int = 0, *,
                      label: str = "") -> None:
        """Change the attributes of a mount (``AT_RECURSIVE``: of the whole tree)."""
        attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
        if _syscall(ctypes.c_long(_NR["mount_setattr"]), ctypes.c_int(dirfd), _b(path),
                    ctypes.c_uint(flags), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
            raise _fail(f"mount_setattr({label or path}, set {attr_set:#x}, "
                        f"clear {attr_clr:#x})")

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        """A detached copy of the mount tree at *path* (OPEN_TREE_CLONE)."""
        fd = _syscall(ctypes.c_long(_NR["open_tree"]), ctypes.c_int(dirfd), _b(path),
                      ctypes.c_uint(flags))
        if fd < 0:
            raise _fail(f"open_tree({path})")
        return fd

    def move_mount(self, from_fd: int, to_fd: int, flags: int, *, label: str = "") -> None:
        """Attach the detached tree *from_fd* on the target fd (both by fd)."""
        if _syscall(ctypes.c_long(_NR["move_mount"]), ctypes.c_int(from_fd), b"",
                    ctypes.c_int(to_fd), b"", ctypes.c_uint(flags)) != 0:
            raise _fail(f"move_mount onto {label or to_fd}")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        if _syscall(ctypes.c_long(_NR["pivot_root"]), _b(new_root), _b(put_old)) != 0:
            raise _fail(f"pivot_root({new_root}, {put_old})")

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0,
                resolve: int = 0) -> int:
        how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
        fd = _syscall(ctypes.c_long(_NR["openat2"]), ctypes.c_int(dirfd), _b(path),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd < 0:
            raise _fail(f"openat2({path})")
        return fd

    # -- identity ----------------------------------------------------------
    def sethostname(self, name: str) -> None:
        raw = _b(name)
        if _libc.sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
            raise _fail(f"sethostname({name})")

    def setdomainname(self, name: str) -> None:
        raw = _b(name)
        if _libc.setdomainname(raw, ctypes.c_size_t(len(raw))) != 0:
            raise _fail(f"setdomainname({name})")

    def setgroups(self, gids: list[int]) -> None:
        os.setgroups(gids)

    def setresgid(self, gid: int) -> None:
        os.setresgid(gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        os.setresuid(uid, uid, uid)

    # -- devices and files -------------------------------------------------
    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    # -- process -----------------------------------------------------------
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        r = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                        ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
        if r < 0:
            raise _fail(f"prctl({option}, {arg2})")
        return r

    def capget(self, pid: int = 0) -> tuple[int, int, int]:
        """(effective, permitted, inheritable) as 64-bit masks."""
        hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
        data = (_CapData * 2)()
        if _syscall(ctypes.c_long(_NR["capget"]), ctypes.byref(hdr), data) != 0:
            raise _fail("capget")
        return tuple(data[0].__getattribute__(f) | (data[1].__getattribute__(f) << 32)
                     for f in ("effective", "permitted", "inheritable"))  # type: ignore[return-value]

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        if _syscall(ctypes.c_long(_NR["capset"]), ctypes.byref(hdr), data) != 0:
            raise _fail("capset")

    def close_range(self, first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
        nr = _NR.get("close_range")
        if nr is not None and _syscall(ctypes.c_long(nr), ctypes.c_uint(first),
                                       ctypes.c_uint(last), ctypes.c_uint(flags)) == 0:
            return
        os.closerange(first, min(last, 65536))

    def madvise(self, addr: int, length: int, advice: int) -> None:
        if _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(length), ctypes.c_int(advice)) != 0:
            raise _fail(f"madvise({addr:#x}, {length}, {advice})")

    def ioprio_set(self, which: int, who: int, ioprio: int) -> None:
        if _syscall(ctypes.c_long(_NR["ioprio_set"]), ctypes.c_int(which),
                    ctypes.c_int(who), ctypes.c_int(ioprio)) != 0:
            raise _fail(f"ioprio_set({ioprio})")

    def personality(self, persona: int) -> None:
        if _libc.personality(ctypes.c_ulong(persona)) == -1:
            raise _fail(f"personality({persona:#x})")

    def sched_setattr(self, policy: int, flags: int = 0, nice: int = 0, priority: int = 0,
                      runtime: int = 0, deadline: int = 0, period: int = 0) -> None:
        """sched_setattr(2) on the calling thread (glibc has no wrapper)."""
        attr = _SchedAttr(ctypes.sizeof(_SchedAttr), policy, flags, nice, priority,
                          runtime, deadline, period, 0, 0)
        if _syscall(ctypes.c_long(_NR["sched_setattr"]), ctypes.c_int(0), ctypes.byref(attr),
                    ctypes.c_uint(0)) != 0:
            raise _fail(f"sched_setattr(policy {policy}, priority {priority}, nice {nice})")

    def sched_setaffinity(self, pid: int, cpus: set[int]) -> None:
        os.sched_setaffinity(pid, cpus)

    def seccomp_filter(self, program: bytes, flags: int = 0) -> int:
        """Load a raw cBPF seccomp program (struct sock_filter[]); returns the
        notify fd when ``flags`` has SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0.
        prctl when no flag is asked for (works on every seccomp kernel)."""
        buf = ctypes.create_string_buffer(program, len(program))
        prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        if flags == 0:
            r = _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(2),  # MODE_FILTER
                            ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0))
        else:
            r = _syscall(ctypes.c_long(_NR["seccomp"]), ctypes.c_uint(1),  # SET_MODE_FILTER
                         ctypes.c_uint(flags), ctypes.byref(prog))
        if r < 0:
            raise _fail(f"seccomp(SET_MODE_FILTER, flags {flags:#x})")
        return r

    def clone_into_cgroup(self, cgroup_fd: int) -> int:
        """fork(2) whose child starts inside the cgroup2 directory
        ``cgroup_fd`` (clone3 CLONE_INTO_CGROUP): nobody migrates it later, so
        nobody waits for the RCU grace period that a write to cgroup.procs
        does (5-25 ms after a quiet spell). Returns as os.fork does; OSError,
        with nothing forked, when the kernel (before 5.7: ENOSYS, E2BIG) or
        libc cannot, or the kernel refuses that cgroup (callers then fork and
        write cgroup.procs, whose error is the one to report)."""
        global _FORKER
        nr = _NR.get("clone3")
        if nr is None:
            raise OSError(38, "clone3: unknown on this architecture")
        if _FORKER is None:
            try:
                _FORKER = _Forker()
            except (AttributeError, ValueError) as e:  # a symbol dlsym cannot find
                raise OSError(38, f"clone3: {e}") from None
        f = _FORKER
        args = _CloneArgs(flags=CLONE_INTO_CGROUP | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID,
                          child_tid=f.tid_slot(), exit_signal=SIGCHLD, cgroup=cgroup_fd)
        f.before()
        pid = f.syscall(ctypes.c_long(nr), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
        if pid == 0:
            f.child()
            return 0
        err = ctypes.get_errno()
        f.parent()
        if pid < 0:
            raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
        return pid

    def set_mempolicy(self, mode: int, nodes: list[int]) -> None:
        """``mode`` with its MPOL_F_* flags; ``nodes`` the node numbers."""
        words = max(nodes) // 64 + 1 if nodes else 1
        mask = (ctypes.c_ulong * words)()
        for n in nodes:
            mask[n // 64] |= 1 << (n % 64)
        # maxnode counts one more bit than the mask holds (the kernel's off-by-one)
        if _syscall(ctypes.c_long(_NR["set_mempolicy"]), ctypes.c_int(mode),
                    mask if nodes else None, ctypes.c_ulong(words * 64 + 1 if nodes else 0)) != 0:
            raise _fail(f"set_mempolicy({mode:#x})")

    # -- keyrings (glibc has no keyctl wrapper) -----------------------------
    def _keyctl(self, op: int, what: str, arg2: "int | bytes", arg3: int = 0,
                arg4: int = 0) -> int:
        nr = _NR.get("keyctl")
        if nr is None:  # unknown here: as a kernel without keyrings
            raise OSError(38, f"{what}: {os.strerror(38)}")
        a2 = arg2 if isinstance(arg2, bytes) else ctypes.c_ulong(arg2)
        r = _syscall(ctypes.c_long(nr), ctypes.c_int(op), a2, ctypes.c_ulong(arg3),
                     ctypes.c_ulong(arg4))
        if r < 0:
            raise _fail(what)
        return r

    def join_session_keyring(self, name: str) -> int:
        """Replace our session keyring with the one named ``name``: an existing
        keyring of that name we may search, else a new one. Returns its serial
        (the kernel answers 0 when it is our session keyring already)."""
        serial = self._keyctl(KEYCTL_JOIN_SESSION_KEYRING,
                              f"keyctl(JOIN_SESSION_KEYRING, {name})", _b(name))
        if serial == 0:
            serial = self._keyctl(KEYCTL_GET_KEYRING_ID, "keyctl(GET_KEYRING_ID, session)",
                                  0xFFFFFFFD)  # KEY_SPEC_SESSION_KEYRING (-3)
        return serial

    def describe_key(self, serial: int) -> str:
        """KEYCTL_DESCRIBE: "type;uid;gid;perm;description" (perm in hex)."""
        size = 256
        while True:
            buf = ctypes.create_string_buffer(b"", size)
            r = self._keyctl(KEYCTL_DESCRIBE, f"keyctl(DESCRIBE, {serial})", serial,
                             ctypes.addressof(buf), size)
            if r <= size:  # the length, its NUL included
                return bytes(buf.raw[:r]).rstrip(b"\0").decode(errors="replace")
            size = r

    def set_key_perm(self, serial: int, perm: int) -> None:
        self._keyctl(KEYCTL_SETPERM, f"keyctl(SETPERM, {serial}, {perm:#010x})", serial, perm)

    def pidfd_open(self, pid: int) -> int:
        fd = _syscall(ctypes.c_long(_NR["pidfd_open"]), ctypes.c_int(pid), ctypes.c_uint(0))
        if fd < 0:
            raise _fail(f"pidfd_open({pid})")
        return fd


#: The process-wide instance; code takes a ``sc: Syscalls`` parameter
#: defaulting to this so tests can pass a fake.
SYS = Syscalls()
