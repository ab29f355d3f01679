"""Linux capabilities by name, and setting all five sets.

Unknown names are an error (runc and crun drop them silently, which hides
typos in security policy); names the running kernel does not know are
reported separately, since the config may be right for a newer kernel.
"""

from __future__ import annotations

from runtime import syscalls as S
from runtime.errors import HakoError

NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
NUMBERS = {n: i for i, n in enumerate(NAMES)}
SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def to_mask(names: list[str], where: str, last: int) -> int:
    mask = 0
    for i, name in enumerate(names):
        n = NUMBERS.get(name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper())
        if n is None:
            raise HakoError(f"{where}[{i}]: unknown capability {name!r}")
        if n > last:
            raise HakoError(f"{where}[{i}]: capability {name} is not supported by this kernel "
                            f"(last capability is {NAMES[last]})")
        mask |= 1 << n
    return mask


class CapPlan:
    """Masks computed (and validated) before anything is changed."""

    def __init__(self, caps: dict) -> None:
        self.last = last_cap()
        self.masks = {s: to_mask(caps.get(s) or [], f"process.capabilities.{s}", self.last)
                      for s in SETS}

    def drop_bounding(self, sc: S.Syscalls = S.SYS) -> None:
        keep = self.masks["bounding"]
        for n in range(self.last + 1):
            if not keep & (1 << n):
                try:
                    sc.prctl(S.PR_CAPBSET_DROP, n)
                except OSError as e:
                    raise HakoError(f"dropping {NAMES[n]} from the bounding set: "
                                    f"{e.strerror}") from None

    def apply(self, sc: S.Syscalls = S.SYS) -> None:
        """After the uid switch (with PR_SET_KEEPCAPS held across it)."""
        m = self.masks
        try:
            sc.capset(m["effective"], m["permitted"], m["inheritable"])
        except OSError as e:
            raise HakoError(f"setting capabilities: {e.strerror} (effective/permitted/"
                            f"inheritable must be within the bounding set)") from None
        try:
            sc.prctl(S.PR_CAP_AMBIENT, S.PR_CAP_AMBIENT_CLEAR_ALL)
        except OSError:
            pass
        # The kernel only raises an ambient capability that is both permitted
        # and inheritable. runc's own `spec` lists ambient caps without
        # inheritable ones and runc skips them; so does hako (with a debug
        # line), or every runc-made config would fail.
        possible = m["permitted"] & m["inheritable"]
        for n in range(self.last + 1):
            if not m["ambient"] & (1 << n):
                continue
            if not possible & (1 << n):
                from runtime import log
                log.debug(f"ambient {NAMES[n]} skipped: not permitted and inheritable")
                continue
            try:
                sc.prctl(S.PR_CAP_AMBIENT, S.PR_CAP_AMBIENT_RAISE, n)
            except OSError as e:
                raise HakoError(f"raising ambient {NAMES[n]}: {e.strerror}") from None
