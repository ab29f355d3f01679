"""The state directory: the only state shared between hako invocations.

Layout: ``<root>/<id>/`` holds ``state.json`` (written atomically), the same
state marshalled (``state.bin``: what the hot verbs read, without loading a
JSON parser) and, while the container is created but not started,
``exec.fifo``. Operations on one container are serialised with ``flock`` on
its directory, so that two concurrent ``start``/``delete`` calls cannot
interleave.

Hot verbs (start/state/kill/delete) read this module first: it uses
``posix`` rather than ``os``, whose import (``_collections_abc``,
``posixpath``) costs as much here as the rest of a ``state`` call.
"""

import fcntl
import marshal
import posix

from runtime.errors import ContainerNotExist, HakoError

_ID_EXTRA = frozenset("_+.-")
STATE_FILE = "state.json"
#: the same state, marshalled; a directory an older hako made has none
STATE_BIN = "state.bin"
_BIN_MAGIC = b"HAKOSTATE1\n"
FIFO = "exec.fifo"
#: left by an interrupted create: the cgroup and extensions to take back
CREATING = "creating.json"


def in_initial_userns() -> bool:
    try:
        return read_file("/proc/self/uid_map").split() == [b"0", b"0", b"4294967295"]
    except OSError:
        return True


def read_file(path: str, dir_fd: int | None = None) -> bytes:
    """The whole of a small file."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while True:
            b = posix.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        posix.close(fd)


def _environ(name: str) -> str | None:
    v = posix.environ.get(name.encode())
    return v.decode("utf-8", "surrogateescape") if v is not None else None


def _abspath(path: str) -> str:
    """os.path.abspath, without importing os for paths that are already
    absolute and normal (the usual --root)."""
    if (path.startswith("/") and not path.startswith("//") and "//" not in path
            and "/./" not in path and "/../" not in path and len(path) > 1
            and not path.endswith(("/", "/.", "/.."))):
        return path
    import os.path
    return os.path.abspath(path)


def is_rootless(setting: str | None = None) -> bool:
    """runc's rule: rootless when not uid 0, or uid 0 in a user namespace
    someone else made (rootless podman runs us like that)."""
    if setting in ("true", "false"):
        return setting == "true"
    if setting not in (None, "auto"):
        raise HakoError(f"--rootless: invalid value {setting!r} (auto, true or false)")
    return posix.geteuid() != 0 or not in_initial_userns()


def default_root() -> str:
    if posix.geteuid() == 0 and in_initial_userns():
        return "/run/hako"
    xdg = _environ("XDG_RUNTIME_DIR")
    if xdg:
        return xdg + "hako" if xdg.endswith("/") else xdg + "/hako"
    if posix.geteuid() == 0:
        return "/run/hako"
    return f"/tmp/hako-{posix.getuid()}"


def state_root(g: dict) -> str:
    return _abspath(g.get("root") or default_root())


def check_id(cid: str) -> None:
    if not cid:
        raise HakoError("container id cannot be empty")
    # runc's rule, ^[\w+-\.]+$, without importing re on the hot path
    if not all((c.isascii() and c.isalnum()) or c in _ID_EXTRA for c in cid) or cid in (".", ".."):
        raise HakoError(f"invalid container id {cid!r}: use letters, digits, '_', '+', '-', '.'")


class Container:
    """An open, locked container directory and its recorded state."""

    def __init__(self, root: str, cid: str, dirfd: int) -> None:
        self.root = root
        self.id = cid
        self.dir = root + cid if root.endswith("/") else f"{root}/{cid}"
        self.dirfd = dirfd
        self.state: dict = {}

    # -- locking ----------------------------------------------------------
    @classmethod
    def open(cls, root: str, cid: str, *, lock: bool = True, shared: bool = False) -> "Container":
        check_id(cid)
        try:
            fd = posix.open(root + cid if root.endswith("/") else f"{root}/{cid}",
                            posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotExist(cid) from None
        except NotADirectoryError:
            raise ContainerNotExist(cid) from None
        if lock:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        c = cls(root, cid, fd)
        try:
            c.state = c._read()
        except BaseException:
            posix.close(fd)
            raise
        return c

    @classmethod
    def new(cls, root: str, cid: str) -> "Container":
        """Create the directory (atomic: mkdir fails if the id is taken) and lock it."""
        check_id(cid)
        import os
        try:
            os.makedirs(root, mode=0o711, exist_ok=True)
        except OSError as e:
            raise HakoError(f"cannot create state directory {root}: {e.strerror}") from None
        path = os.path.join(root, cid)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise HakoError(f"container with id exists: {cid}") from None
        except OSError as e:
            raise HakoError(f"cannot create {path}: {e.strerror}") from None
        os.chmod(path, 0o711)  # umask must not make it unreachable for the container user
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(root, cid, fd)

    def close(self) -> None:
        if self.dirfd >= 0:
            posix.close(self.dirfd)
            self.dirfd = -1

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state.json / state.bin ---------------------------------------------
    def _read(self) -> dict:
        try:
            data = read_file(STATE_BIN, self.dirfd)
        except FileNotFoundError:
            data = b""
        if data.startswith(_BIN_MAGIC):
            try:
                state = marshal.loads(memoryview(data)[len(_BIN_MAGIC):])
            except (EOFError, ValueError, TypeError):
                state = None
            if isinstance(state, dict):
                return state
        # made by an older hako, or state.bin damaged: the JSON is authoritative
        try:
            data = read_file(STATE_FILE, self.dirfd)
        except FileNotFoundError:
            # a directory without state: an interrupted create (or a racing delete)
            raise ContainerNotExist(self.id) from None
        from runtime import fastjson
        try:
            state = fastjson.loads(data)
        except (ValueError, UnicodeDecodeError):
            state = None
        if not isinstance(state, dict):
            raise HakoError(f"container {self.id}: state.json is corrupt")
        return state

    def save(self) -> None:
        """state.json, then state.bin, each written aside and renamed over
        (a reader holds the lock, so it sees both old or both new)."""
        from runtime import fastjson
        self._write_atomic(STATE_FILE, fastjson.dumps(self.state).encode())
        self._write_atomic(STATE_BIN, _BIN_MAGIC + marshal.dumps(self.state))

    def _write_atomic(self, name: str, data: bytes) -> None:
        tmp = f".{name}.tmp"
        fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC,
                        0o600, dir_fd=self.dirfd)
        try:
            view = memoryview(data)
            while view:
                view = view[posix.write(fd, view):]
        finally:
            posix.close(fd)
        posix.rename(tmp, name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)

    def remove(self) -> None:
        """Remove the directory and everything in it (no subdirectories are made)."""
        for name in posix.listdir(self.dirfd):
            try:
                posix.unlink(name, dir_fd=self.dirfd)
            except FileNotFoundError:
                pass
        try:
            posix.rmdir(self.dir)
        except FileNotFoundError:
            pass
        self.close()

    # -- status -------------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.state.get("pid") or 0)

    def has_fifo(self) -> bool:
        try:
            posix.stat(FIFO, dir_fd=self.dirfd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def init_alive(self) -> bool:
        pid = self.pid
        if pid <= 0:
            return False
        st = proc_stat(pid)
        if st is None:
            return False
        state, start = st
        if state in ("Z", "X"):
            return False
        return start == int(self.state.get("hako", {}).get("init_start", -1))

    def status(self) -> str:
        if not self.init_alive():
            return "stopped"
        if self.state.get("hako", {}).get("cgroup"):
            from runtime.cgroups import is_paused
            if is_paused(self.state):
                return "paused"
        if self.has_fifo():
            return "created"
        return "running"

    def oci_state(self) -> dict:
        """What ``state`` prints: the OCI state plus runc's extra fields."""
        status = self.status()
        s = self.state
        out = {
            "ociVersion": s.get("ociVersion", "1.3.0"),
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": s.get("bundle", ""),
            "rootfs": s.get("rootfs", ""),
            "created": s.get("created", ""),
            "owner": s.get("owner", ""),
        }
        if s.get("annotations"):
            out["annotations"] = s["annotations"]
        return out


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None."""
    try:
        data = read_file(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # fields after "comm": state is field 3, starttime is field 22
    return rest[0].decode(), int(rest[19])


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in posix.listdir(root) if not n.startswith("."))
    except FileNotFoundError:
        return []
