"""Device access rules: from ``linux.resources.devices`` to the v1 devices cgroup.

The config's rules, in order, then the default allow list (mknod of anything,
the standard /dev nodes, ptys, /dev/net/tun), all folded through an emulator
of the kernel's devices cgroup -- a default policy (allow-all "blacklist" or
deny-all "whitelist") plus exceptions. The cgroup's current state is read back
from ``devices.list`` and only the difference is written, so a running
container is never momentarily denied every device; the result is read back
and compared.

Order (runtime-spec config-linux.md, "Allowed Device list": "The runtime MUST
apply entries in the listed order"): each rule acts on the state the earlier
ones left, as successive writes to devices.allow/deny do, so a later rule
overrides an earlier one for the devices both name (deny-then-allow allows,
allow-then-deny denies). The exceptions are also written in the order the
rules first name them -- the config's before the defaults -- so the kernel's
devices.list lists them as the config does: what crun does (it writes each
entry, then its defaults) and what the OCI validation suite checks
(linux_cgroups_devices: the config's allowed entries first, in order). runc
1.1 folds the same way but writes the exceptions sorted by device number, so
its devices.list starts with the defaults' wildcards (same access, other
order). The defaults come after the config's rules, as in runc and crun: a
config cannot take away the nodes the spec makes every container have
(config-linux.md "Default Devices"); hako's own are those of runc 1.1.

The same folded rule set drives the v2 eBPF device filter (runtime.cgroups.ebpf).
"""

from __future__ import annotations

from runtime.errors import HakoError

WILDCARD = -1
#: verify devices.list after writing (off only for fake cgroupfs tests)
VERIFY = True


class Rule:
    """One devices-cgroup rule: type a/b/c, major/minor (-1 = *), perms, allow."""

    __slots__ = ("type", "major", "minor", "perms", "allow")

    def __init__(self, type: str, major: int, minor: int, perms: str, allow: bool) -> None:
        self.type = type
        self.major = major
        self.minor = minor
        self.perms = perms
        self.allow = allow

    def cgroup_string(self) -> str:
        if self.type == "a":
            return "a *:* rwm"
        mj = "*" if self.major == WILDCARD else str(self.major)
        mn = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.type} {mj}:{mn} {self.perms}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and (self.type, self.major, self.minor, self.perms,
                                            self.allow) == (other.type, other.major,
                                                            other.minor, other.perms,
                                                            other.allow)

    def __repr__(self) -> str:
        return f"Rule({'allow' if self.allow else 'deny'} {self.cgroup_string()})"


#: runc 1.1's AllowedDevices: (path or None, type, major, minor, perms)
DEFAULT_ALLOWED = (
    (None, "c", WILDCARD, WILDCARD, "m"),
    (None, "b", WILDCARD, WILDCARD, "m"),
    ("/dev/null", "c", 1, 3, "rwm"),
    ("/dev/random", "c", 1, 8, "rwm"),
    ("/dev/full", "c", 1, 7, "rwm"),
    ("/dev/tty", "c", 5, 0, "rwm"),
    ("/dev/zero", "c", 1, 5, "rwm"),
    ("/dev/urandom", "c", 1, 9, "rwm"),
    (None, "c", 136, WILDCARD, "rwm"),  # /dev/pts/*
    (None, "c", 5, 2, "rwm"),           # /dev/ptmx
    (None, "c", 10, 200, "rwm"),        # /dev/net/tun
)

_PERM_ORDER = "rwm"


def _perms(s: str) -> str:
    return "".join(c for c in _PERM_ORDER if c in s)


def rules_for(resources: dict, dev_paths: list[str] | tuple[str, ...] = ()) -> list[Rule]:
    """The ordered rule list: ``resources.devices`` in order, then runc's
    defaults except those whose node ``linux.devices`` redefines (runc
    dedupes them by path)."""
    rules = []
    for i, d in enumerate(resources.get("devices") or []):
        t = d.get("type") or "a"
        if t not in ("a", "b", "c"):
            raise HakoError(f"linux.resources.devices[{i}]: invalid cgroup device type {t!r} "
                            "(a, b or c)")
        access = d.get("access") or ""
        if not access:
            raise HakoError(f"linux.resources.devices[{i}]: access cannot be empty")
        if any(c not in _PERM_ORDER for c in access):
            raise HakoError(f"linux.resources.devices[{i}]: invalid access {access!r} "
                            "(letters r, w, m)")
        major = d.get("major")
        minor = d.get("minor")
        rules.append(Rule(t, WILDCARD if major is None else int(major),
                          WILDCARD if minor is None else int(minor), _perms(access),
                          bool(d.get("allow"))))
    named = set(dev_paths)
    for path, t, mj, mn, p in DEFAULT_ALLOWED:
        if path and path in named:
            continue
        rules.append(Rule(t, mj, mn, p, True))
    return rules


def device_paths(spec: dict) -> list[str]:
    return [d.get("path") for d in (spec.get("linux") or {}).get("devices") or []
            if d.get("path")]


class Emulator:
    """The kernel's devices cgroup state: a default policy plus exceptions.

    ``default_allow`` True is a "blacklist" (exceptions deny), False a
    "whitelist" (exceptions allow). Exceptions: {(type, major, minor): perms}.
    """

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.rules: dict[tuple[str, int, int], str] = {}

    def copy(self) -> "Emulator":
        e = Emulator(self.default_allow)
        e.rules = dict(self.rules)
        return e

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Emulator) and self.default_allow == other.default_allow
                and self.rules == other.rules)

    def _add(self, key: tuple[str, int, int], perms: str) -> None:
        self.rules[key] = _perms(self.rules.get(key, "") + perms)

    def _remove(self, key: tuple[str, int, int], perms: str, strict: bool = True) -> None:
        t, mj, mn = key
        # cgroup v1 silently ignores removing part of a wildcard exception:
        # refuse instead of giving a false sense of security (as runc). Not
        # strict: what the kernel does with the write (drop the exact entry),
        # for replaying writes that only clean up bookkeeping.
        for partial in ((t, WILDCARD, mn), (t, mj, WILDCARD), (t, WILDCARD, WILDCARD)):
            if not strict:
                break
            if partial == key:
                continue
            overlap = set(self.rules.get(partial, "")) & set(perms)
            if overlap:
                rule = Rule(t, mj, mn, perms, True).cgroup_string()
                wild = Rule(*partial, self.rules[partial], True).cgroup_string()
                raise HakoError(f"linux.resources.devices: rule {rule!r} cannot be enforced by "
                                f"the devices cgroup (it punches a hole in the wildcard rule "
                                f"{wild!r})")
        left = "".join(c for c in self.rules.get(key, "") if c not in perms)
        if left:
            self.rules[key] = left
        else:
            self.rules.pop(key, None)

    def apply(self, rule: Rule, strict: bool = True) -> None:
        if rule.type == "a":
            self.default_allow = rule.allow
            self.rules = {}
            return
        key = (rule.type, rule.major, rule.minor)
        if rule.allow == self.default_allow:
            self._remove(key, rule.perms, strict)
        else:
            self._add(key, rule.perms)

    @classmethod
    def build(cls, rules: list[Rule]) -> "Emulator":
        e = cls(default_allow=False)
        for r in rules:
            e.apply(r)
        return e

    @classmethod
    def from_list(cls, text: str) -> "Emulator":
        """devices.list is an allow list; ``a *:* rwm`` means allow-all mode
        (whose deny exceptions cannot be read back)."""
        e = cls(default_allow=False)
        for line in text.splitlines():
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or ":" not in parts[1]:
                raise HakoError(f"devices.list: cannot parse line {line!r}")
            t = parts[0]
            mj, mn = parts[1].split(":", 1)
            r = Rule(t, WILDCARD if mj == "*" else int(mj), WILDCARD if mn == "*" else int(mn),
                     _perms(parts[2]), True)
            if t == "a":
                e.apply(Rule("a", WILDCARD, WILDCARD, "rwm", True))
            else:
                e.apply(r)
        return e

    def allows(self, t: str, major: int, minor: int, access: str) -> bool:
        """Would the kernel let a task do ``access`` (subset of rwm) on this
        device? An exception matches when its type is the device's, its
        numbers are the device's or wildcards, and it covers every access bit."""
        for (rt, mj, mn), perms in self.rules.items():
            if rt == t and mj in (WILDCARD, major) and mn in (WILDCARD, minor) \
                    and set(access) <= set(perms):
                return not self.default_allow
        return self.default_allow

    def ordered(self) -> list[tuple[tuple[str, int, int], str]]:
        """The exceptions in the order the rules first named them (the kernel
        keeps its list so: a new exception is appended, a wider one merged)."""
        return list(self.rules.items())

    def transition(self, target: "Emulator") -> list[Rule]:
        """The least disruptive writes that turn this state into ``target``:
        a deny-all/allow-all only when the policy must change (or the current
        state is allow-all, whose exceptions are unknowable), then the
        exceptions to drop, then the ones to add."""
        out: list[Rule] = []
        old = self.rules
        if self.default_allow or self.default_allow != target.default_allow:
            out.append(Rule("a", WILDCARD, WILDCARD, "rwm", target.default_allow))
            old = {}
        for key, perms in old.items():
            dropped = "".join(c for c in perms if c not in target.rules.get(key, ""))
            if dropped:
                out.append(Rule(*key, dropped, target.default_allow))
        for key, perms in target.ordered():
            gained = "".join(c for c in perms if c not in old.get(key, ""))
            if gained:
                out.append(Rule(*key, gained, not target.default_allow))
        return out


def apply_v1(path: str, rules: list[Rule]) -> None:
    """Bring ``path``'s devices cgroup to the state ``rules`` describe."""
    from runtime.cgroups import fsutil
    try:
        current = Emulator.from_list(fsutil.read(path, "devices.list"))
    except OSError as e:
        raise HakoError(f"cannot read {path}/devices.list: {e.strerror}") from None
    target = Emulator.build(rules)
    for r in current.transition(target):
        fsutil.write(path, "devices.allow" if r.allow else "devices.deny", r.cgroup_string(),
                     what="linux.resources.devices")
    if not VERIFY:
        return
    after = Emulator.from_list(fsutil.read(path, "devices.list"))
    if not target.default_allow and after != target:
        raise HakoError(f"linux.resources.devices: {path}/devices.list does not match the "
                        "requested rules after writing them")
    if target.default_allow != after.default_allow:
        raise HakoError(f"linux.resources.devices: {path} is not in the requested "
                        f"{'allow' if target.default_allow else 'deny'}-by-default mode")
