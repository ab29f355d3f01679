"""The remaining ``process.*`` security fields, LSM labels, and which sysctls a
container may set.

Integration (written against init.py/container.py of 932daa1)
-------------------------------------------------------------
Parent, ``checks.check_supported()`` (before anything is forked), in
place of the apparmorProfile/selinuxLabel/mountLabel refusals::

    from runtime import security
    security.check_sysctl(spec)           # linux.sysctl: only namespaced keys
    security.lsm_check(spec)              # apparmorProfile/selinuxLabel/mountLabel
    security.check_process_attrs(spec)    # personality, scheduler, ioPriority,
                                          # execCPUAffinity: config mistakes now

Init, ``init.container_init()``::

    security.apply_initial_affinity(spec, sc)  # right after os.setsid()
    ...
    security.apply_process_attrs(spec, sc)     # after finalize_rootfs(), just before
                                               # become(): ioPriority RT and real-time
                                               # scheduling need the capabilities
                                               # become() drops (runc's order too)
    ...
    security.lsm_apply(spec)                   # late: after the startContainer hook,
                                               # before the seccomp install and the
                                               # fifo's "0" (errors: b"E" + message)

and in ``init._sysctl``: ``security.sysctl_path(key)`` instead of
``"/proc/sys/" + key.replace(".", "/")`` (keys may use "/" separators, where
dots belong to a name, e.g. ``net/ipv4/conf/eth0.100/rp_filter``). For
``hako exec``: apply_process_attrs and lsm_apply in
``execute._become_and_exec`` before ``become()`` / exec as above.

Why each piece is where it is: validation runs in the parent so a bad config
fails ``create`` before a process exists; the calls that change the process
run in the init, which cannot import anything after pivot_root (this module
imports all it needs at its top). AppArmor and SELinux labels are
"on exec" attributes: written late they apply to the container's program and
not to hooks the init still runs.
"""

from __future__ import annotations

import errno as E
import os

from runtime import syscalls as S
from runtime.errors import HakoError

# -- personality (linux/personality.h) ---------------------------------------
PER_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
PER_FLAGS = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000, "SHORT_INODE": 0x1000000,
    "WHOLE_SECONDS": 0x2000000, "STICKY_TIMEOUTS": 0x4000000, "ADDR_LIMIT_3GB": 0x8000000,
}

# -- scheduler (linux/sched.h, uapi/linux/sched/types.h) -----------------------
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                  "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
_RT = ("SCHED_FIFO", "SCHED_RR")

# -- I/O priority (linux/ioprio.h) ---------------------------------------------
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13

_MAX_CPU = 8192  # the kernel's NR_CPUS ceiling


# -- small validators (shared: runtime/validators.py) ------------------------------
from runtime.validators import as_int as _int  # noqa: E402
from runtime.validators import as_obj as _obj  # noqa: E402
from runtime.validators import as_str as _str  # noqa: E402
from runtime.validators import number_list  # noqa: E402
from runtime.validators import shown as _j  # noqa: E402


def _names(v, where: str, table: dict[str, int], what: str) -> int:
    if v is None:
        return 0
    if not isinstance(v, list):
        raise HakoError(f"{where}: must be an array, not {_j(v)}")
    bits = 0
    for i, name in enumerate(v):
        name = _str(name, f"{where}[{i}]")
        if name not in table:
            raise HakoError(f'{where}[{i}]: unknown {what} "{name}" (known: '
                            f'{", ".join(table)})')
        bits |= table[name]
    return bits


# -- personality ---------------------------------------------------------------
def personality_of(proc: dict) -> int | None:
    """process.personality as the persona number, or None when absent."""
    p = proc.get("personality")
    if p is None:
        return None
    where = "process.personality"
    p = _obj(p, where)
    dom = _str(p.get("domain"), f"{where}.domain")
    if dom not in PER_DOMAINS:
        raise HakoError(f'{where}.domain: unknown domain "{dom}" (known: LINUX, LINUX32)')
    return PER_DOMAINS[dom] | _names(p.get("flags"), f"{where}.flags", PER_FLAGS,
                                     "personality flag")


# -- scheduler -----------------------------------------------------------------
def scheduler_of(proc: dict) -> dict | None:
    """process.scheduler as sched_setattr's arguments, validated as runc does
    (and a little more: priorities of real-time policies are 1 to 99)."""
    s = proc.get("scheduler")
    if s is None:
        return None
    where = "process.scheduler"
    s = _obj(s, where)
    if "policy" not in s:
        raise HakoError(f"{where}.policy: missing (it is required)")
    policy = _str(s["policy"], f"{where}.policy")
    if policy not in SCHED_POLICIES:
        raise HakoError(f'{where}.policy: unknown policy "{policy}" (known: '
                        f'{", ".join(SCHED_POLICIES)})')
    if policy == "SCHED_ISO":
        raise HakoError(f"{where}.policy: SCHED_ISO is not implemented by Linux")
    nice = _int(s.get("nice", 0), f"{where}.nice", -20, 19)
    prio = _int(s.get("priority", 0), f"{where}.priority", 0, 99)
    if policy in _RT and prio == 0:
        raise HakoError(f"{where}.priority: {policy} needs a priority from 1 to 99")
    if policy not in _RT and prio:
        raise HakoError(f"{where}.priority: only SCHED_FIFO and SCHED_RR take a priority "
                        f"({policy} has none)")
    times = {k: _int(s.get(k, 0), f"{where}.{k}", 0, 2**63 - 1)
             for k in ("runtime", "deadline", "period")}
    if policy != "SCHED_DEADLINE" and any(times.values()):
        raise HakoError(f"{where}: runtime, deadline and period only apply to SCHED_DEADLINE")
    if policy == "SCHED_DEADLINE":
        rt, dl, per = times["runtime"], times["deadline"], times["period"]
        if not rt or not dl:
            raise HakoError(f"{where}: SCHED_DEADLINE needs runtime and deadline (ns)")
        if not rt <= dl <= (per or dl):
            raise HakoError(f"{where}: SCHED_DEADLINE needs runtime <= deadline <= period "
                            f"(got {rt} / {dl} / {per})")
    flags = _names(s.get("flags"), f"{where}.flags", SCHED_FLAGS, "scheduler flag")
    return {"policy": SCHED_POLICIES[policy], "flags": flags, "nice": nice,
            "priority": prio, "runtime": times["runtime"], "deadline": times["deadline"],
            "period": times["period"], "_name": policy}


def _sched_eperm(sched: dict) -> str:
    name = sched["_name"]
    if name in _RT or name == "SCHED_DEADLINE":
        return (f"{name} needs CAP_SYS_NICE in the host's user namespace"
                f"{' (or a matching RLIMIT_RTPRIO)' if name in _RT else ''}; "
                f"a rootless container cannot have it")
    if sched["nice"] < 0:
        return ("a negative nice value needs CAP_SYS_NICE in the host's user namespace "
                "(or a matching RLIMIT_NICE)")
    return "leaving a real-time or deadline policy needs CAP_SYS_NICE"


# -- I/O priority --------------------------------------------------------------
def ioprio_of(proc: dict) -> int | None:
    io = proc.get("ioPriority")
    if io is None:
        return None
    where = "process.ioPriority"
    io = _obj(io, where)
    cls = _str(io.get("class"), f"{where}.class")
    if cls not in IOPRIO_CLASSES:
        raise HakoError(f'{where}.class: unknown class "{cls}" (known: '
                        f'{", ".join(IOPRIO_CLASSES)})')
    prio = _int(io.get("priority", 0), f"{where}.priority", 0, 7)
    return (IOPRIO_CLASSES[cls] << _IOPRIO_CLASS_SHIFT) | prio


# -- CPU affinity --------------------------------------------------------------
def parse_cpus(text, where: str) -> set[int]:
    """A kernel cpu list ("0-3,7", "0-7:2") as a set; "" is the empty set."""
    return number_list(text, where, "CPU", _MAX_CPU)


def affinity_of(proc: dict) -> tuple[set[int] | None, set[int] | None]:
    aff = proc.get("execCPUAffinity")
    if aff is None:
        return None, None
    where = "process.execCPUAffinity"
    aff = _obj(aff, where)
    out = []
    for k in ("initial", "final"):
        v = aff.get(k)
        out.append(parse_cpus(v, f"{where}.{k}") or None if v is not None else None)
    return out[0], out[1]


def _set_affinity(cpus: set[int], where: str, sc: S.Syscalls) -> None:
    try:
        sc.sched_setaffinity(0, cpus)
    except OSError as e:
        msg = f"{where}: sched_setaffinity: {e.strerror}"
        if e.errno == E.EINVAL:
            try:
                allowed = _fmt_cpus(os.sched_getaffinity(0))
            except OSError:
                allowed = "?"
            msg += f" (none of these CPUs is online and allowed here; allowed: {allowed})"
        raise HakoError(msg) from None


def _fmt_cpus(cpus) -> str:
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


# -- the process attributes, together ------------------------------------------
def check_process_attrs(spec: dict) -> None:
    """Parent: every config mistake in personality/scheduler/ioPriority/
    execCPUAffinity as a HakoError naming the field, before fork."""
    proc = spec.get("process") or {}
    personality_of(proc)
    scheduler_of(proc)
    ioprio_of(proc)
    affinity_of(proc)
    if (spec.get("linux") or {}).get("memoryPolicy") is not None:
        from runtime import mempolicy
        mempolicy.of(spec["linux"])


def apply_initial_affinity(spec: dict, sc: S.Syscalls = S.SYS) -> None:
    """execCPUAffinity.initial: the CPUs the runtime's own process runs on
    before it becomes the container's process. Call first thing in the init."""
    initial, _ = affinity_of(spec.get("process") or {})
    if initial:
        _set_affinity(initial, "process.execCPUAffinity.initial", sc)


def apply_process_attrs(spec: dict, sc: S.Syscalls = S.SYS) -> None:
    """Init, before the capabilities are dropped: ioPriority, scheduler,
    execCPUAffinity.final, personality, linux.memoryPolicy. Each failure
    names its field."""
    proc = spec.get("process") or {}
    ioprio = ioprio_of(proc)
    if ioprio is not None:
        try:
            sc.ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio)
        except OSError as e:
            why = e.strerror
            if e.errno == E.EPERM:
                why += (" (the real-time class needs CAP_SYS_ADMIN or CAP_SYS_NICE in the "
                        "host's user namespace)")
            raise HakoError(f"process.ioPriority: ioprio_set: {why}") from None
    sched = scheduler_of(proc)
    if sched is not None:
        args = {k: v for k, v in sched.items() if not k.startswith("_")}
        try:
            sc.sched_setattr(**args)
        except OSError as e:
            why = e.strerror
            if e.errno == E.EPERM:
                why += f" ({_sched_eperm(sched)})"
            elif e.errno == E.EBUSY:
                why += " (not enough deadline bandwidth for this runtime/period)"
            elif e.errno == E.EINVAL:
                why += " (the kernel refused these parameters or flags)"
            raise HakoError(f"process.scheduler: sched_setattr({sched['_name']}): {why}") from None
    _, final = affinity_of(proc)
    if final:
        _set_affinity(final, "process.execCPUAffinity.final", sc)
    persona = personality_of(proc)
    if persona is not None:
        try:
            sc.personality(persona)
        except OSError as e:
            raise HakoError(f"process.personality: personality({persona:#x}): "
                            f"{e.strerror}") from None
    if (spec.get("linux") or {}).get("memoryPolicy") is not None:
        from runtime import mempolicy
        mempolicy.apply(spec["linux"], sc)


# -- LSMs ----------------------------------------------------------------------
def _p(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def apparmor_enabled(root: str = "/") -> bool:
    """As runc: securityfs shows apparmor and the module says it is enabled."""
    if not os.path.isdir(_p(root, "/sys/kernel/security/apparmor")):
        return False
    try:
        with open(_p(root, "/sys/module/apparmor/parameters/enabled"), "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled(root: str = "/") -> bool:
    """selinuxfs is mounted (it always has an ``enforce`` file)."""
    return os.path.exists(_p(root, "/sys/fs/selinux/enforce"))


def _lsm_fields(spec: dict) -> tuple[str, str, str]:
    proc = spec.get("process") or {}
    linux = spec.get("linux") or {}
    aa = proc.get("apparmorProfile") or ""
    label = proc.get("selinuxLabel") or ""
    mount = linux.get("mountLabel") or ""
    return (_str(aa, "process.apparmorProfile"), _str(label, "process.selinuxLabel"),
            _str(mount, "linux.mountLabel"))


def lsm_check(spec: dict, root: str = "/") -> None:
    """Parent: refuse a label the host cannot apply (empty means "none")."""
    aa, label, mount = _lsm_fields(spec)
    if aa and not apparmor_enabled(root):
        raise HakoError(f"process.apparmorProfile: AppArmor is not enabled on this host "
                        f"(no /sys/kernel/security/apparmor); cannot apply profile {aa!r}: "
                        f"remove the field or leave it empty")
    for value, where in ((label, "process.selinuxLabel"), (mount, "linux.mountLabel")):
        if value and not selinux_enabled(root):
            raise HakoError(f"{where}: SELinux is not enabled on this host (no selinuxfs at "
                            f"/sys/fs/selinux); cannot apply label {value!r}: remove the field "
                            f"or leave it empty")
    for value, where in ((aa, "process.apparmorProfile"), (label, "process.selinuxLabel")):
        if "\n" in value or "\0" in value:
            raise HakoError(f"{where}: {value!r} contains a newline or NUL")


def lsm_exec_paths(root: str = "/") -> dict[str, str]:
    """Where each enabled LSM takes its on-exec label: AppArmor prefers its own
    directory (LSM stacking, Linux 5.8+), then the shared attr/exec."""
    out = {}
    shared = _p(root, "/proc/thread-self/attr/exec")
    if apparmor_enabled(root):
        own = _p(root, "/proc/thread-self/attr/apparmor/exec")
        out["apparmor"] = own if os.path.exists(own) else shared
    if selinux_enabled(root):
        out["selinux"] = shared
    return out


def lsm_apply(spec: dict, root: str = "/") -> None:
    """Init, late: set the AppArmor profile / SELinux label the next execve takes.
    Needs /proc (the container's is fine: the attributes are the task's own)."""
    aa, label, _ = _lsm_fields(spec)
    if not aa and not label:
        return
    lsm_check(spec, root)
    paths = lsm_exec_paths(root)
    for value, lsm, data, where in ((aa, "apparmor", f"exec {aa}", "process.apparmorProfile"),
                                    (label, "selinux", label, "process.selinuxLabel")):
        if not value:
            continue
        path = paths[lsm]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, data.encode())
            finally:
                os.close(fd)
        except OSError as e:
            hint = " (is /proc mounted in the container?)" if e.errno == E.ENOENT else ""
            raise HakoError(f"{where}: writing {path}: {e.strerror}{hint}") from None


# -- sysctl ----------------------------------------------------------------------
_NS_PROC = {"network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "pid": "pid",
            "user": "user", "cgroup": "cgroup", "time": "time"}
_IPC_PREFIXES = ("kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.")


def own_namespaces(spec: dict) -> set[str]:
    """Namespace types the container does not share with the host: new ones,
    and joined ones whose path is not the host's own (as runc decides)."""
    out = set()
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if not isinstance(ns, dict) or not isinstance(ns.get("type"), str):
            continue
        t, path = ns["type"], ns.get("path")
        if not path:
            out.add(t)
            continue
        try:
            st = os.stat(path)
            host = os.stat(f"/proc/self/ns/{_NS_PROC.get(t, t)}")
            if (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino):
                continue
        except (OSError, TypeError, ValueError):
            pass  # joining it fails later, with its own message
        out.add(t)
    return out


def _sysctl_dotted(key: str) -> str:
    return key.replace("/", ".") if "/" in key else key


def sysctl_path(key: str) -> str:
    """/proc/sys path of a key in dotted or slashed form."""
    rel = key if "/" in key else key.replace(".", "/")
    return "/proc/sys/" + rel.strip("/")


def check_sysctl(spec: dict, namespaces: set[str] | None = None) -> None:
    """Parent: every linux.sysctl key must live in a namespace the container
    has of its own (runc's rule): IPC keys need ipc, net.* needs network,
    kernel.hostname/domainname need uts; anything else would change the host."""
    values = (spec.get("linux") or {}).get("sysctl")
    if not values:
        return
    if not isinstance(values, dict):
        raise HakoError(f"linux.sysctl: must be an object, not {_j(values)}")
    ns = own_namespaces(spec) if namespaces is None else set(namespaces)
    for key, value in values.items():
        where = f"linux.sysctl[{_j(key)}]"
        _str(value, where)
        parts = key.strip("/").split("/") if "/" in key else key.split(".")
        if not key or any(p in ("", ".", "..") for p in parts) or "\0" in key:
            raise HakoError(f"{where}: not a sysctl name")
        dotted = _sysctl_dotted(key)
        if dotted.startswith(_IPC_PREFIXES):
            need, what = "ipc", "an IPC namespace"
        elif dotted.startswith("net."):
            need, what = "network", "a network namespace"
        elif dotted in ("kernel.hostname", "kernel.domainname"):
            need, what = "uts", "a UTS namespace"
            field = dotted.split(".")[1]
            if spec.get(field):
                raise HakoError(f"{where}: conflicts with the config's {field!r} field; "
                                f"set only one of them")
        else:
            raise HakoError(f"{where}: not namespaced, refusing to set it from a container")
        if need not in ns:
            raise HakoError(f"{where}: needs {what} of the container's own (it shares the "
                            f"host's), refusing to change the host")
