"""The supervisor: started by the createRuntime phase (:func:`start`), it waits for
the createContainer phase (:func:`join`, run inside the container's namespaces),
starts the helper for those namespaces, and stops it when the container's init
exits, however it exits.
"""

from __future__ import annotations

import json
import os
import sys

from hooks.network import pasta, slirp4netns
from hooks.network.checks import helper_path
from hooks.network.common import (
    CTL_SOCKET, LOG_FILE, OWNED_MARK, PASTA_LOG, READY_TIMEOUT, STATE_FILE, STOP_TIMEOUT,
    NetworkError, _short,
)
from hooks.network.options import Options
from hooks.network.state import _start_time, _write_state, cleanup


def _peer_ns_fds(pid: int) -> tuple[int, int]:
    """The network namespace of *pid* (and its user namespace when not ours)."""
    try:
        net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetworkError(f"cannot open the network namespace of pid {pid}: "
                           f"{e.strerror}") from None
    if os.fstat(net).st_ino == os.stat("/proc/self/ns/net").st_ino:
        os.close(net)
        raise NetworkError("the container has no network namespace of its own")
    user = -1
    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino:
            user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        os.close(net)
        raise NetworkError(f"cannot open the user namespace of pid {pid}: "
                           f"{e.strerror}") from None
    return net, user


def _helper_argv(opts: Options, helper: str, state_dir: str, pid: int, netfd: int,
                 userfd: int, exit_r: int, ready_w: int) -> list[str]:
    if opts.driver == "slirp4netns":
        return slirp4netns.argv(opts, helper, state_dir, pid, exit_r, ready_w)
    return pasta.argv(opts, helper, state_dir, netfd, userfd, ready_w)


def _log_tail(state_dir: str, limit: int = 3) -> str:
    lines: list[str] = []
    for name in (LOG_FILE, PASTA_LOG):
        try:
            with open(os.path.join(state_dir, name), errors="replace") as f:
                text = f.read()[-8192:]
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("Failed to send", "WARNING:", "pasta ", "hako-network:",
                                            "sent tapfd", "received tapfd", "Starting slirp",
                                            "* ", "api_handler", "apifd event")):
                continue
            if ": ERROR:" in line:
                line = line.split(": ERROR:", 1)[1].strip()
            if line not in lines:
                lines.append(line)
    return "; ".join(lines[-limit:])


def _pdeathsig(parent: int):
    """preexec_fn: the helper gets SIGKILL when the supervisor dies."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:
            os._exit(1)  # the supervisor died already
    return preexec


def _send(fd_or_sock, **msg) -> None:
    data = json.dumps(msg).encode() + b"\n"
    try:
        if isinstance(fd_or_sock, int):
            os.write(fd_or_sock, data)
        else:
            fd_or_sock.sendall(data)
    except OSError:
        pass


def _recv_line(fd: int, timeout: float) -> dict | None:
    """One JSON line from *fd* (None at EOF or after *timeout*)."""
    import select
    import time
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return None
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.split(b"\n", 1)[0].decode()) if data else None
    except ValueError:
        return None


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


class _Helper:
    """The running slirp4netns or pasta process, from the supervisor's side."""

    def __init__(self, proc, exit_w: int) -> None:
        self.proc = proc
        self.exit_w = exit_w
        self.fd = os.pidfd_open(proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        import subprocess
        if self.exit_w >= 0:  # slirp4netns exits when its exit-fd pipe closes
            os.close(self.exit_w)
            self.exit_w = -1
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except OSError:
                pass


def _start_helper(opts: Options, target: int, init_fd: int, peer, state_dir: str,
                  stop: list, wake: int) -> _Helper:
    """Start the helper for the namespaces of *target* (the createContainer hook,
    alive and waiting on *peer*) and wait until the interface is configured."""
    import select
    import subprocess
    import time
    helper = helper_path(opts.driver)
    netfd, userfd = _peer_ns_fds(target)
    exit_r, exit_w = os.pipe()   # slirp4netns exits when exit_w (ours) closes
    ready_r, ready_w = os.pipe()
    if opts.driver == "pasta":
        keep = [netfd, ready_w] + ([userfd] if userfd >= 0 else [])
        os.close(exit_r)
        os.close(exit_w)
        exit_r = exit_w = -1
    else:
        keep = [exit_r, ready_w]
    argv = _helper_argv(opts, helper, state_dir, target, netfd, userfd, exit_r, ready_w)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=2, stderr=2,
                                pass_fds=keep, close_fds=True, cwd=state_dir,
                                preexec_fn=_pdeathsig(os.getpid()))
    except OSError as e:
        raise NetworkError(f"cannot run {helper}: {e.strerror}") from None
    finally:
        for fd in {netfd, userfd, exit_r, ready_w} - {-1}:
            os.close(fd)
    h = _Helper(proc, exit_w)
    me = os.getpid()
    _write_state(state_dir, {"driver": opts.driver, "supervisor": [me, _start_time(me)],
                             "helper": [proc.pid, _start_time(proc.pid)]})
    try:
        poller = select.poll()
        poller.register(ready_r, select.POLLIN)
        poller.register(h.fd, select.POLLIN)
        poller.register(init_fd, select.POLLIN)
        poller.register(peer.fileno(), select.POLLIN)
        poller.register(wake, select.POLLIN)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if stop:
                raise NetworkError(f"the network supervisor got signal {stop[0]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NetworkError(f"{opts.driver} did not configure the interface within "
                                   f"{READY_TIMEOUT:g}s")
            events = dict(poller.poll(int(left * 1000) + 1))
            if events.get(ready_r):
                if os.read(ready_r, 64):
                    break
                poller.unregister(ready_r)  # EOF: the exit status follows
            if events.get(init_fd):
                raise NetworkError("the container's init exited during network setup")
            if events.get(peer.fileno()):
                raise NetworkError("the createContainer hook went away during network setup")
            if events.get(h.fd):
                proc.wait()
                why = _log_tail(state_dir)
                raise NetworkError(f"{opts.driver} exited with status {proc.returncode}"
                                   + (f": {why}" if why else ""))
        if opts.driver == "slirp4netns" and opts.ports:
            slirp4netns.add_forwards(opts, state_dir, h.alive)
    except BaseException:
        h.stop()
        raise
    finally:
        os.close(ready_r)
    return h


def _await_peer(lsock, init_fd: int, init_pid: int, stop: list, wake: int):
    """Wait for the createContainer hook; None when the init exits first."""
    import select
    import socket
    import struct
    poller = select.poll()
    poller.register(lsock.fileno(), select.POLLIN)
    poller.register(init_fd, select.POLLIN)
    poller.register(wake, select.POLLIN)
    while not stop:
        events = dict(poller.poll())
        if events.get(init_fd):
            return None
        if not events.get(lsock.fileno()):
            continue
        try:
            conn, _ = lsock.accept()
        except OSError:
            continue
        pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        # only a process the container's init started (its createContainer hook)
        if _ppid(pid) != init_pid:
            _send(conn, error=f"pid {pid} is not a child of the container's init {init_pid}")
            conn.close()
            continue
        return conn, pid
    return None


def _supervise(opts: Options, init_pid: int, init_fd: int, state_dir: str,
               report_fd: int) -> int:
    """The supervisor: wait for the container's namespaces, start the helper,
    then tie the helper's life to the init's."""
    import select
    import signal
    import socket
    stop: list = []

    def on_signal(signum, _frame):
        stop.append(signum)

    # a signal writes a byte to `wake`, which every poll() below watches
    wake, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    ctl = os.path.join(state_dir, CTL_SOCKET)
    helper = None
    status = 1
    try:
        try:
            os.unlink(ctl)
        except FileNotFoundError:
            pass
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        lsock.bind(_short(state_dir, CTL_SOCKET))
        # the hook runs as the container's root, which may be any host uid;
        # _await_peer accepts only children of the init
        os.chmod(ctl, 0o666)
        lsock.listen(4)
        me = os.getpid()
        _write_state(state_dir, {"driver": opts.driver, "supervisor": [me, _start_time(me)]})
        _send(report_fd, ok=True)
        os.close(report_fd)
        report_fd = -1
        got = _await_peer(lsock, init_fd, init_pid, stop, wake)
        if got is None:
            return 0
        conn, peer = got
        try:
            helper = _start_helper(opts, peer, init_fd, conn, state_dir, stop, wake)
        except NetworkError as e:
            _send(conn, error=str(e))
            return 1
        finally:
            lsock.close()
            try:
                os.unlink(ctl)
            except OSError:
                pass
        _send(conn, ok=True, helper=helper.proc.pid)
        conn.close()
        # live as long as the container's init (or the helper)
        poller = select.poll()
        poller.register(init_fd, select.POLLIN)
        poller.register(helper.fd, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while not stop:
            events = dict(poller.poll())
            if events.get(init_fd):
                break
            if events.get(helper.fd):
                helper.proc.wait()
                print(f"hako-network: {opts.driver} exited with status "
                      f"{helper.proc.returncode} while the container runs", file=sys.stderr)
                break
        status = 0
    except NetworkError as e:
        if report_fd >= 0:
            _send(report_fd, error=str(e))
    finally:
        if helper is not None:
            helper.stop()
        for name in (STATE_FILE, CTL_SOCKET):
            try:
                os.unlink(os.path.join(state_dir, name))
            except OSError:
                pass
        if report_fd < 0 and os.path.exists(os.path.join(state_dir, OWNED_MARK)):
            cleanup(state_dir)
    return status


def start(state: dict, state_dir: str, opts: Options) -> None:
    """createRuntime: start the supervisor; return once it listens."""
    import signal
    pid = int(state.get("pid") or 0)
    if pid <= 0:
        raise NetworkError("the state on stdin has no pid: run this as a createRuntime hook")
    try:
        init_fd = os.pidfd_open(pid)
    except OSError as e:
        raise NetworkError(f"the container's init (pid {pid}) is gone: {e.strerror}") from None
    helper_path(opts.driver)  # fail now, with the message, rather than later
    rd, wr = os.pipe()
    child = os.fork()
    if child == 0:  # the supervisor
        code = 1
        try:
            os.close(rd)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            log = os.open(os.path.join(state_dir, LOG_FILE),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(log, 2)
            os.close(devnull)
            os.close(log)
            sys.stderr = open(2, "w", closefd=False, buffering=1)
            os.chdir(state_dir)
            code = _supervise(opts, pid, init_fd, state_dir, wr)
        except BaseException as e:  # noqa: BLE001 - a child never returns
            _send(wr, error=f"network supervisor: {type(e).__name__}: {e}")
        finally:
            os._exit(code)
    os.close(wr)
    os.close(init_fd)
    try:
        msg = _recv_line(rd, READY_TIMEOUT)
    finally:
        os.close(rd)
    if not msg or not msg.get("ok"):
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        raise NetworkError((msg or {}).get("error") or "the network supervisor did not start")


def join(state_dir: str, opts: Options) -> None:
    """createContainer (inside the container's namespaces): have the supervisor
    attach the helper to our namespaces; return once the interface is up."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        ctl = _short(state_dir, CTL_SOCKET)
        if not os.path.isabs(ctl):
            os.chdir(state_dir)
        try:
            s.connect(ctl)
        except OSError as e:
            raise NetworkError(f"no network supervisor at {os.path.join(state_dir, CTL_SOCKET)}"
                               f" ({e.strerror}): the createRuntime hook starts it") from None
        # the connection stays open: the supervisor sees us give up
        msg = _recv_line(s.fileno(), READY_TIMEOUT + 10)
    finally:
        s.close()
    if not msg or not msg.get("ok"):
        raise NetworkError((msg or {}).get("error") or f"{opts.driver}: the network supervisor "
                           f"went away")
