"""``linux.netDevices`` (runtime-spec 1.3): existing host network devices
moved into the container's network namespace, as runc 1.3 does.

When: the parent moves them once the init is in its namespaces and stopped
before pivot_root (the runtime-hooks sync point, forced on for this), so
they are there before prestart/createRuntime hooks, sysctl and the
container's process, as runc moves them before it sends the init its config.

How (per device): its permanent addresses of global scope are read (before
the link goes down: IPv6 drops them on down unless keep_addr_on_down), the
link is set down, then one RTM_NEWLINK moves and renames it at once; inside
the namespace the addresses are added back and the link is brought up.

Delete does nothing, as the spec requires (and runc does): when the
namespace goes, the kernel returns physical devices to the initial
namespace and destroys virtual ones. A *failed* create moves what it moved
back, under the old name, with its addresses and up state.

Checked before anything is forked (``check``): root only, a network
namespace of the container's own, valid names, the devices exist.
"""

from __future__ import annotations

import os

from runtime import syscalls as S
from runtime.errors import HakoError

WHERE = "linux.netDevices"
IFNAMSIZ = 16  # with the NUL: names are at most 15 bytes


def _where(host: str, field: str = "") -> str:
    return f'{WHERE}["{host}"]' + (f".{field}" if field else "")


def name_problem(name) -> str | None:
    """Why the kernel would refuse ``name`` (its dev_valid_name), or None."""
    if not isinstance(name, str):
        return "must be a string"
    if not name:
        return "is empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"{name!r} is longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return f"{name!r} is not a device name"
    if any(c in "/:" or c.isspace() for c in name):
        return f"{name!r} contains '/', ':' or whitespace"
    return None


def pairs(spec: dict) -> list[tuple[str, str]]:
    """(name on the host, name in the container) for each device, names
    checked; the same container name twice is refused (unless a "%d" template)."""
    devs = (spec.get("linux") or {}).get("netDevices") or {}
    if not isinstance(devs, dict):
        raise HakoError(f"{WHERE}: must be an object")
    out = []
    seen: dict[str, str] = {}
    for host, entry in devs.items():
        why = name_problem(host)
        if why:
            raise HakoError(f"{_where(host)}: the device name {why}")
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise HakoError(f"{_where(host)}: must be an object")
        inside = entry.get("name") or host
        why = name_problem(inside)
        if why:
            raise HakoError(f"{_where(host, 'name')}: {why}")
        if inside in seen and "%" not in inside:
            raise HakoError(f'{_where(host, "name")}: {inside!r} is also the name of '
                            f'{_where(seen[inside])} in the container')
        seen[inside] = host
        out.append((host, inside))
    return out


def check(spec: dict, plan, *, rootless: bool) -> None:
    """Before anything is made: what would make the move fail."""
    if rootless or os.geteuid() != 0:
        raise HakoError(f"{WHERE}: moving host network devices needs root "
                        "(a rootless container cannot)")
    if not plan.has("network"):
        raise HakoError(f'{WHERE}: moving network devices needs a network namespace of the '
                        'container\'s own (add {"type": "network"})')
    path = plan.join.get("network")
    if path and _same_file(path, "/proc/self/ns/net"):
        raise HakoError(f"{WHERE}: linux.namespaces: {path} is the runtime's own network "
                        "namespace: the devices would not move")
    import socket
    for host, _ in pairs(spec):
        try:
            socket.if_nametoindex(host)
        except OSError:
            raise HakoError(f"{_where(host)}: there is no network device {host!r} in the "
                            "runtime's network namespace") from None


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False  # the join reports a bad path itself
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class _Moved:
    """One device moved: enough to move it back as it was."""

    def __init__(self, host: str, link, addrs: list) -> None:
        self.host = host
        self.was_up = link.up
        self.addrs = addrs
        self.name = ""  # its name in the container, once known


class Mover:
    """The devices of one create. Holds the container's network namespace
    open until ``close``, so that an undo still finds the devices even when
    the init died (a namespace going away would destroy virtual ones)."""

    def __init__(self, spec: dict, init_pid: int) -> None:
        self.pairs = pairs(spec)
        self.moved: list[_Moved] = []
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.target = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(self.home)
            raise HakoError(f"{WHERE}: the container's network namespace: {e.strerror}") from None

    def move_all(self) -> None:
        for host, inside in self.pairs:
            self._move(host, inside)

    def _move(self, host: str, inside: str) -> None:
        from runtime.rtnetlink import Route
        where = _where(host)
        with Route() as rt:
            try:
                link = rt.link(host)
                addrs = [a for a in rt.addresses(link.index) if a.permanent_global]
                rt.set_up(link.index, False)
            except OSError as e:
                raise HakoError(f"{where}: {host}: {e.strerror}") from None
            rec = _Moved(host, link, addrs)
            try:
                rt.move(link.index, inside, self.target)
            except OSError as e:
                if _still_here(rt, host, link.index):
                    if rec.was_up:
                        _quietly(rt.set_up, link.index, True)
                else:
                    # the kernel moves, then renames: moved under its host name,
                    # the rename refused (EEXIST there); the undo brings it back
                    self.moved.append(rec)
                raise HakoError(f"{where}: moving {host} into the container's network "
                                f"namespace as {inside!r}: {e.strerror}") from None
        self.moved.append(rec)
        try:
            with self._route_in(self.target) as rt:
                new = _find(rt, inside, link.hwaddr)
                rec.name = new.name
                for a in addrs:
                    try:
                        rt.add_address(new.index, a)
                    except OSError as e:
                        raise HakoError(f"{where}: address {a} in the container: "
                                        f"{e.strerror}") from None
                rt.set_up(new.index, True)
        except OSError as e:
            raise HakoError(f"{where}: {inside} in the container: {e.strerror}") from None

    def _route_in(self, netns_fd: int):
        """A rtnetlink socket of another network namespace: a socket stays in
        the namespace it was made in, so hako steps in for socket() only."""
        from runtime.rtnetlink import Route
        S.SYS.setns(netns_fd, S.CLONE_NEWNET, "the container's network namespace")
        try:
            return Route()
        finally:
            S.SYS.setns(self.home, S.CLONE_NEWNET, "hako's network namespace")

    def undo(self) -> None:
        """A failed create: each device back under its host name, newest first."""
        from runtime import log
        from runtime.rtnetlink import Route
        while self.moved:
            rec = self.moved.pop()
            try:
                with self._route_in(self.target) as rt:
                    link = rt.link(rec.name or rec.host)  # no name yet: the move's rename failed
                    rt.set_up(link.index, False)
                    rt.move(link.index, rec.host, self.home)
                with Route() as rt:
                    link = rt.link(rec.host)
                    for a in rec.addrs:
                        _quietly(rt.add_address, link.index, a)
                    if rec.was_up:
                        rt.set_up(link.index, True)
            except (OSError, HakoError) as e:
                log.warn(f"{_where(rec.host)}: moving {rec.host} back: {e}")

    def close(self) -> None:
        for fd in (self.target, self.home):
            try:
                os.close(fd)
            except OSError:
                pass
        self.target = self.home = -1


def _find(rt, name: str, hwaddr: bytes):
    """The moved device in its new namespace: by name, or for a "%d"
    template (the kernel picked the number) by hardware address."""
    if "%" not in name:
        return rt.link(name)
    prefix = name.split("%", 1)[0]
    for link in rt.links():
        if link.hwaddr == hwaddr and link.name.startswith(prefix):
            return link
    raise OSError(19, os.strerror(19))  # ENODEV


def _still_here(rt, name: str, index: int) -> bool:
    try:
        return rt.link(name).index == index
    except OSError:
        return False


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass
