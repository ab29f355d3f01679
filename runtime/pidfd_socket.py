"""``--pidfd-socket``: hand an engine a pidfd of the container's process.

runc 1.2's protocol, which containerd's go-runc receives: the runtime
connects to PATH (a unix stream socket) and sends one message whose payload
names the kind of process, ``standard`` for the init of create/run and
``setns`` for the process of exec, with a pidfd of that process in
SCM_RIGHTS. Through it the engine signals and waits for exactly that process,
whatever becomes of its pid number.

runc's container process opens the pidfd of itself during its setup; hako's
parent opens it (pidfd_open on the host pid) once the pid is known, and sends
it before create returns, before run waits, before exec returns or waits.
The connection is made first, before anything exists: a path that does not
exist, is not a socket, or has nobody listening is one line and nothing made.

Imported only when the option is given (socket costs ~10 ms to import).
"""

from __future__ import annotations

import os
import socket

from runtime.errors import HakoError
from runtime.terminal import check_socket_path

INIT = "standard"  # runc's names for the payload
EXEC = "setns"
TIMEOUT = 10.0  # a receiver that never reads must not hold hako forever


def connect(path: str) -> socket.socket:
    """Connect now, in the parent, so that a bad path fails before any
    state, process or cgroup is made. The socket is close-on-exec; the
    caller keeps it out of the container's processes."""
    check_socket_path(path, "--pidfd-socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(TIMEOUT)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        why = e.strerror or "timed out"
        raise HakoError(f"--pidfd-socket {path}: cannot connect: {why}") from None
    return s


def send(sock: socket.socket, pid: int, name: str) -> None:
    """Send a pidfd of ``pid`` with ``name`` as the payload, then close the
    connection: the receiver reads one message and sees EOF after it."""
    try:
        try:
            fd = os.pidfd_open(pid)
        except OSError as e:
            raise HakoError(f"--pidfd-socket: pidfd_open({pid}): {e.strerror}") from None
        try:
            socket.send_fds(sock, [name.encode()], [fd], socket.MSG_NOSIGNAL)
        except OSError as e:
            why = e.strerror or "timed out"
            raise HakoError(f"--pidfd-socket: sending the pidfd: {why}") from None
        finally:
            os.close(fd)
    finally:
        sock.close()
