"""The process model of ``create``: parent -> stage-1 -> init.

    parent (hako create)
      +-- fork -> stage-1: unshare(CLONE_NEWUSER) / setns(user)
      |   <---- "map me" when the parent must write the id maps
      |         setns(paths), unshare(other namespaces), time offsets
      |         fork -> init (pid 1 of a new pid namespace)
      |   <---- "pid N"; stage-1 exits
      |                  init: rootfs, hostname, sysctl, user, caps ...
      |   <----------------- "ready" (or "error")
      |   -----------------> "go" once state.json is written
      |                  init: blocks opening exec.fifo, then execve

Without a user namespace, a namespace to join, a time namespace or a cgroup
stage-1 must join first (the common rootful case), there is no stage-1: the
parent forks the init itself (``direct``), with unshare(CLONE_NEWPID) for
that one fork, and the init unshares the rest; it imports what it runs
itself, while the parent moves it into its cgroup.

No thread is ever started (unshare(CLONE_NEWUSER) fails in a threaded
process), every child leaves with os._exit, and every wait ends at EOF if
the other side dies, so nothing can wait forever.
"""

from __future__ import annotations

import os
import sys

from runtime import syscalls as S
from runtime import userns
from runtime.channel import Channel
from runtime.errors import HakoError, error_text
from runtime.launch import Launch
from runtime.namespaces import FLAGS, JOIN_ORDER


def fork_child(chan: Channel, body, *args, cgroup=None) -> int:
    """Fork; the child runs ``body(*args)`` and leaves with os._exit: 0 when
    it returns, 1 after sending any exception as {"error": line} on ``chan``.
    (A forked child must never return into the caller's code.)

    ``cgroup`` (runtime.cgroups.quick.Joiner): the child joins it before
    anything else, born inside its cgroup2 directory when the kernel can
    (clone3 CLONE_INTO_CGROUP) and writing itself into the v1 ones, so that
    neither side waits on the cgroup lock (see Joiner)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid, born_inside = _fork(cgroup)
    if pid == 0:
        code = 1
        try:
            if cgroup is not None:
                cgroup.enter_self(born_inside)
            body(*args)
            code = 0
        except BaseException as e:  # noqa: BLE001
            try:
                chan.send(error=error_text(e))
            except BaseException:
                pass
        finally:
            os._exit(code)
    return pid


def _fork(cgroup) -> tuple[int, bool]:
    """(os.fork()'s answer, whether the child was born in the cgroup2 dir)."""
    fd = cgroup.open_unified() if cgroup is not None else -1
    if fd < 0:
        return os.fork(), False
    try:
        pid = S.SYS.clone_into_cgroup(fd)
    except OSError:
        # no clone3 here, or the kernel refused the cgroup: the child's own
        # write to cgroup.procs joins it, or says why it cannot
        pid = -1
    os.close(fd)  # in both: the container must not inherit a host directory
    if pid < 0:
        return os.fork(), False
    return pid, True


def spawn(launch: Launch, chan: Channel, child: Channel, close_in_child: list[int],
          reaped: bool = True) -> tuple[int, int]:
    """Fork stage-1, or the init itself (``direct``); returns (stage-1's pid,
    the init's pid), one of them 0. The parent keeps ``chan``. ``reaped``: the
    caller exits, or is a subreaper, so the init may be its child (without,
    `run` must not become its parent: it would reap an init it does not wait for)."""
    if reaped and direct(launch):
        pid = _spawn_direct(launch, chan, child, close_in_child)
        if pid:
            return 0, pid
    # Everything the children will run is imported here, as the caller: after
    # unshare(CLONE_NEWUSER) they read hako's files as a mapped uid, which may
    # not be allowed to (a root-owned private cache, a 0700 home).
    import runtime.init  # noqa: F401
    if (launch.spec.get("process") or {}).get("terminal"):
        import runtime.terminal  # noqa: F401
    if launch.hook_sync:
        import runtime.hooks  # noqa: F401
    def body() -> None:
        for fd in close_in_child:
            os.close(fd)
        chan.close()
        _stage1(launch, child)
    return fork_child(child, body, cgroup=launch.cgroup_joiner), 0


def direct(launch: Launch) -> bool:
    """Whether the init can do stage-1's part itself: there is nothing to do
    before the other namespaces (user namespace, joins, time offsets, a cgroup
    to join before a cgroup namespace)."""
    plan = launch.plan
    return (not plan.join and "user" not in plan.new and "time" not in plan.new
            and launch.cgroup is None)


def _spawn_direct(launch: Launch, chan: Channel, child: Channel,
                  close_in_child: list[int]) -> int:
    """Fork the init; 0 when a new pid namespace cannot be made here (stage-1
    then tries, and reports the error as it always did)."""
    sc = S.SYS
    own = -1
    if "pid" in launch.plan.new:
        # pid_for_children only: this process stays where it is, and goes back
        # (its active namespace) right after the fork
        own = own_pidns()
        if own < 0:
            return 0
        try:
            sc.unshare(S.CLONE_NEWPID)
        except OSError:
            os.close(own)
            return 0

    def body() -> None:
        for fd in close_in_child:
            os.close(fd)
        chan.close()
        flags = launch.plan.unshare_flags(exclude=("user", "pid"))
        if flags:
            try:
                sc.unshare(flags)
            except OSError as e:  # as stage-1 words it: every flag it unshares
                raise OSError(e.errno, f"unshare({launch.plan.unshare_flags():#x}): "
                              f"{os.strerror(e.errno)}") from None
        _run_init(launch, child)

    return fork_and_return(own, child, body, cgroup=launch.cgroup_joiner)


def fork_and_return(own: int, chan: Channel, body, cgroup=None) -> int:
    """fork_child, then back into hako's own pid namespace (``own``: its fd
    from own_pidns, or -1 when the fork's namespace was not changed)."""
    try:
        return fork_child(chan, body, cgroup=cgroup)
    finally:
        if own >= 0:
            try:
                S.SYS.setns(own, S.CLONE_NEWPID, "pid namespace of hako")
            finally:
                os.close(own)


def own_pidns() -> int:
    """An fd of our pid namespace when we may setns back into it, else -1.
    Root of a user namespace that does not own it (rootless podman runs us so)
    may not: setns(CLONE_NEWPID) wants CAP_SYS_ADMIN over the owner, so try
    it first, changing nothing (it is also where our children go now)."""
    fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        S.SYS.setns(fd, S.CLONE_NEWPID, "pid namespace of hako")
    except OSError:
        os.close(fd)
        return -1
    return fd


def _stage1(launch: Launch, chan: Channel) -> None:
    plan = launch.plan
    sc = S.SYS
    if launch.cgroup is not None:
        # before unshare(user) (no cgroupfs rights after) and unshare(cgroup)
        # (the namespace root is the cgroup we are in then); the init inherits it
        launch.cgroup.enter(os.getpid())
    join_fds = plan.open_joins()
    if "user" in join_fds:
        sc.setns(join_fds.pop("user"), S.CLONE_NEWUSER, "user namespace " + plan.join["user"])
        _become_root_in_userns()
    elif "user" in plan.new:
        sc.unshare(S.CLONE_NEWUSER)
        if launch.self_map:
            userns.write_self(launch.uids, launch.gids)
        else:
            chan.send(map=os.getpid())
            reply = chan.recv()
            if reply is None or "error" in reply:
                os._exit(1)
        _become_root_in_userns()
    for t in JOIN_ORDER:
        if t in join_fds:
            sc.setns(join_fds.pop(t), FLAGS[t], f"{t} namespace {plan.join[t]}")
    flags = plan.unshare_flags()
    if flags:
        sc.unshare(flags)
    if "time" in plan.new:
        _write_time_offsets(launch.spec)
    pid = fork_child(chan, _run_init, launch, chan)
    chan.send(pid=pid)


def _run_init(launch: Launch, chan: Channel) -> None:
    from runtime.init import container_init
    container_init(launch, chan)  # never returns on success (execve)


def _become_root_in_userns() -> None:
    """Take uid/gid 0 of the new namespace when it is mapped (as runc does)."""
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError:
        pass  # 0 not mapped: stay who we are; the config's user is applied later


def _write_time_offsets(spec: dict) -> None:
    offsets = spec.get("linux", {}).get("timeOffsets") or {}
    lines = []
    for clock, name in (("monotonic", "monotonic"), ("boottime", "boottime")):
        o = offsets.get(clock)
        if o:
            lines.append(f"{name} {o.get('secs', 0)} {o.get('nanosecs', 0)}\n")
    if lines:
        try:
            with open("/proc/self/timens_offsets", "w") as f:
                f.write("".join(lines))
        except OSError as e:
            raise HakoError(f"linux.timeOffsets: {e.strerror}") from None


def map_ids(launch: Launch, pid: int) -> None:
    """Parent side of "map me"."""
    privileged = os.geteuid() == 0 and not launch.rootless
    userns.write_for(pid, launch.uids, launch.gids, privileged)


def wait_child(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
