"""Terminals: a pty allocated inside the container, its master handed out.

runc's protocol, which conmon and containerd's shim implement: the runtime
connects to ``--console-socket`` (a unix stream socket), allocates the pty
from the *container's* devpts, makes the slave the process' controlling
terminal and stdio, and sends the master with SCM_RIGHTS (the payload is the
pty's name). For ``run`` in the foreground without a console socket, hako
plays that receiver itself over a socketpair and bridges the master to its
own terminal.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from runtime.devices import mount_console as bind_console
from runtime.errors import HakoError

TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413


def connect(path: str) -> socket.socket:
    """Before pivot_root: the socket path is a host path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise HakoError(f"--console-socket {path}: cannot connect: {e.strerror}") from None
    return s


def check_socket_path(path: str, flag: str = "--console-socket") -> None:
    """Fail early, in the parent, for a path that cannot be a unix socket
    (``flag``: the option that named it, for the message)."""
    import stat
    try:
        st = os.stat(path)
    except OSError as e:
        raise HakoError(f"{flag} {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise HakoError(f"{flag} {path}: not a unix socket")


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def get_size(fd: int) -> tuple[int, int] | None:
    try:
        h, w, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8))
        return h, w
    except OSError:
        return None


def setup_pty(console: socket.socket, size: dict | None, uid: int, gid: int,
              mount_console: bool) -> None:
    """In the container's mount namespace: allocate, hand out the master,
    make the slave our controlling terminal and stdio."""
    try:
        master, slave = os.openpty()
    except OSError as e:
        raise HakoError(f"process.terminal: cannot allocate a pty in the container "
                        f"(is /dev/pts a devpts mount?): {e.strerror}") from None
    name = os.ttyname(slave)
    if size and size.get("height") and size.get("width"):
        set_size(master, int(size["height"]), int(size["width"]))
    try:
        os.fchown(slave, uid, gid)
    except OSError:
        pass  # not mapped: the pty stays root's, as with runc in that case
    try:
        socket.send_fds(console, [name.encode()], [master])
    except OSError as e:
        raise HakoError(f"--console-socket: sending the pty master: {e.strerror}") from None
    finally:
        os.close(master)
        console.close()
    if mount_console:
        bind_console(name)
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_master(sock: socket.socket, timeout: float | None = None) -> int:
    sock.settimeout(timeout)
    _, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise HakoError("the container did not send its terminal")
    return fds[0]


def bridge(master: int, is_done) -> None:
    """Copy between our stdio and the pty master until the container's
    process is gone and its output drained; raw mode and SIGWINCH while we do."""
    import select
    import signal
    import termios
    import tty

    stdin_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_tty else None
    if stdin_tty:
        size = get_size(0)
        if size:
            set_size(master, *size)

        def winch(_s: int, _f: object) -> None:
            sz = get_size(0)
            if sz:
                try:
                    set_size(master, *sz)
                except OSError:
                    pass
        signal.signal(signal.SIGWINCH, winch)
        tty.setraw(0)
    try:
        inputs = [master, 0]
        while True:
            try:
                ready, _, _ = select.select(inputs, [], [], 0.05)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if not data:
                    break
                _write_all(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    _write_all(master, data)
                else:
                    inputs.remove(0)
            if not ready and is_done():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]
