"""The state directory: the only state shared between hako invocations.

Layout: ``<root>/<id>/`` holds ``state.json`` (written atomically) and, while
the container is created but not started, ``exec.fifo``. Operations on one
container are serialised with ``flock`` on its directory, so that two
concurrent ``start``/``delete`` calls cannot interleave.
"""

import fcntl
import os

from runtime import fastjson

from runtime.errors import ContainerNotExist, HakoError

_ID_EXTRA = frozenset("_+.-")
STATE_FILE = "state.json"
FIFO = "exec.fifo"
#: left by an interrupted create: the cgroup and extensions to take back
CREATING = "creating.json"


def in_initial_userns() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def is_rootless(setting: str | None = None) -> bool:
    """runc's rule: rootless when not uid 0, or uid 0 in a user namespace
    someone else made (rootless podman runs us like that)."""
    if setting in ("true", "false"):
        return setting == "true"
    if setting not in (None, "auto"):
        raise HakoError(f"--rootless: invalid value {setting!r} (auto, true or false)")
    return os.geteuid() != 0 or not in_initial_userns()


def default_root() -> str:
    if os.geteuid() == 0 and in_initial_userns():
        return "/run/hako"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "hako")
    if os.geteuid() == 0:
        return "/run/hako"
    return f"/tmp/hako-{os.getuid()}"


def state_root(g: dict) -> str:
    root = g.get("root") or default_root()
    return os.path.abspath(root)


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
        self.dir = os.path.join(root, cid)
        self.dirfd = dirfd
        self.state: dict = {}

    # -- locking ----------------------------------------------------------
    @classmethod
    def open(cls, root: str, cid: str, *, lock: bool = True, shared: bool = False) -> "Container":
        check_id(cid)
        try:
            fd = os.open(os.path.join(root, cid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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
            os.close(fd)
            raise
        return c

    @classmethod
    def new(cls, root: str, cid: str) -> "Container":
        """Create the directory (atomic: mkdir fails if the id is taken) and lock it."""
        check_id(cid)
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
            os.close(self.dirfd)
            self.dirfd = -1

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state.json ---------------------------------------------------------
    def _read(self) -> dict:
        try:
            fd = os.open(STATE_FILE, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dirfd)
        except FileNotFoundError:
            # a directory without state: an interrupted create (or a racing delete)
            raise ContainerNotExist(self.id) from None
        with os.fdopen(fd) as f:
            try:
                return fastjson.loads(f.read())
            except ValueError:
                raise HakoError(f"container {self.id}: state.json is corrupt") from None

    def save(self) -> None:
        tmp = f".{STATE_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600,
                     dir_fd=self.dirfd)
        with os.fdopen(fd, "w") as f:
            f.write(fastjson.dumps(self.state))
        os.rename(tmp, STATE_FILE, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)

    def remove(self) -> None:
        """Remove the directory and everything in it (no subdirectories are made)."""
        for name in os.listdir(self.dirfd):
            try:
                os.unlink(name, dir_fd=self.dirfd)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass
        self.close()

    # -- status -------------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.state.get("pid") or 0)

    def has_fifo(self) -> bool:
        try:
            os.stat(FIFO, dir_fd=self.dirfd)
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
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # fields after "comm": state is field 3, starttime is field 22
    return rest[0].decode(), int(rest[19])


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if not n.startswith("."))
    except FileNotFoundError:
        return []
