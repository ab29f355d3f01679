"""A small client of systemd's D-Bus API (org.freedesktop.systemd1), on jeepney.

Only what the systemd cgroup driver needs: StartTransientUnit and waiting
for its job, StopUnit, ResetFailedUnit, SetUnitProperties, reading a unit's
properties. jeepney (pure Python, no dependencies) does the wire protocol;
this module picks the bus, authenticates and turns D-Bus errors into one-line
HakoErrors. Imported only by the systemd driver: the hot verbs never load it.

Which bus:
* root: the system bus ($DBUS_SYSTEM_BUS_ADDRESS, /run/dbus/system_bus_socket),
  else systemd's private socket /run/systemd/private (no bus daemon needed);
* rootless: the user's manager on the session bus ($DBUS_SESSION_BUS_ADDRESS,
  $XDG_RUNTIME_DIR/bus), else $XDG_RUNTIME_DIR/systemd/private.

Authentication is EXTERNAL with the uid the daemon sees (the host uid our
euid maps to): a rootless engine runs hako as uid 0 of its user namespace,
where jeepney's own os.geteuid() would be refused.
"""

from __future__ import annotations

import os
import socket
import time

from runtime.errors import HakoError

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
CALL_TIMEOUT = 30.0
JOB_TIMEOUT = 30.0


def load_jeepney() -> None:
    """Import jeepney, or say clearly that it is missing (the venv launcher has
    the venv's site-packages on its path, the frozen binary bundles it)."""
    try:
        import jeepney  # noqa: F401
    except ImportError:
        raise HakoError("--systemd-cgroup needs the Python package jeepney (D-Bus client), "
                        "which is not installed; run without --systemd-cgroup") from None


class BusError(HakoError):
    """A D-Bus error reply: ``name`` is the error name systemd sent."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text)
        self.name = name


def _addresses(user: bool) -> list[str]:
    """Socket paths to try, best first."""
    out: list[str] = []
    env = os.environ.get("DBUS_SESSION_BUS_ADDRESS" if user else "DBUS_SYSTEM_BUS_ADDRESS")
    if env:
        for part in env.split(";"):
            kind, _, rest = part.partition(":")
            kv = dict(x.split("=", 1) for x in rest.split(",") if "=" in x)
            if kind == "unix" and "path" in kv:
                out.append(kv["path"])
            elif kind == "unix" and "abstract" in kv:
                out.append("\0" + kv["abstract"])
    if user:
        rt = os.environ.get("XDG_RUNTIME_DIR")
        if not rt:
            rt = f"/run/user/{host_uid()}"
        out += [os.path.join(rt, "bus"), os.path.join(rt, "systemd", "private")]
    else:
        out += ["/run/dbus/system_bus_socket", "/run/systemd/private"]
    return out


def host_uid() -> int:
    """The uid the kernel reports to the bus for us (SO_PEERCRED is in the
    daemon's namespace): our euid mapped through /proc/self/uid_map."""
    euid = os.geteuid()
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, outside, count = (int(x) for x in line.split())
                if inside <= euid < inside + count:
                    return outside + euid - inside
    except (OSError, ValueError):
        pass
    return euid


def _auth(sock: socket.socket, uid: int, deadline: float) -> None:
    """SASL EXTERNAL, as every D-Bus client on Linux does it."""
    def line() -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(512)
            if not chunk:
                raise ConnectionResetError("connection closed during authentication")
            buf += chunk
        return buf
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    sock.sendall(b"\0AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\n")
    reply = line()
    if not reply.startswith(b"OK "):
        raise PermissionError(f"authentication refused: {reply.decode(errors='replace').strip()}")
    sock.sendall(b"BEGIN\r\n")
    sock.settimeout(None)


class Bus:
    """One connection to a systemd manager (system or user)."""

    def __init__(self, conn, where: str, user: bool) -> None:
        self.conn = conn
        self.where = where
        self.user = user

    # -- connection -------------------------------------------------------------
    @classmethod
    def connect(cls, *, user: bool, timeout: float = 5.0) -> "Bus":
        load_jeepney()
        from jeepney.io.blocking import DBusConnection
        errors = []
        for path in _addresses(user):
            if not path.startswith("\0") and not os.path.exists(path):
                errors.append(f"{path}: no such socket")
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(path)
                _auth(sock, host_uid(), time.monotonic() + timeout)
                if path.endswith("/systemd/private"):
                    conn = _direct_connection(sock)  # peer to peer: no Hello
                else:
                    conn = DBusConnection(sock)
            except (OSError, ValueError) as e:
                sock.close()
                errors.append(f"{path}: {getattr(e, 'strerror', None) or e}")
                continue
            return cls(conn, path.lstrip("\0"), user)
        who = "the user's systemd instance (systemctl --user)" if user else "systemd"
        raise HakoError(f"--systemd-cgroup: cannot reach {who} over D-Bus "
                        f"({'; '.join(errors)}); run without --systemd-cgroup to use "
                        "hako's cgroupfs driver")

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass

    # -- calls ------------------------------------------------------------------
    def call(self, method: str, signature: str = "", body: tuple = (), *,
             path: str = MANAGER_PATH, iface: str = MANAGER_IFACE,
             timeout: float = CALL_TIMEOUT) -> tuple:
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.low_level import HeaderFields
        addr = DBusAddress(path, bus_name=SYSTEMD, interface=iface)
        msg = new_method_call(addr, method, signature or None, body)
        try:
            reply = self.conn.send_and_get_reply(msg, timeout=timeout)
        except TimeoutError:
            raise HakoError(f"systemd: {method}: no reply within {timeout:g}s") from None
        except OSError as e:
            raise HakoError(f"systemd: {method}: connection lost: {e}") from None
        if reply.header.message_type == MessageType.error:
            name = reply.header.fields.get(HeaderFields.error_name, "")
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
            raise BusError(name, f"systemd: {method}: {text}")
        return reply.body

    def get_property(self, path: str, iface: str, name: str):
        (variant,) = self.call("Get", "ss", (iface, name), path=path,
                               iface="org.freedesktop.DBus.Properties")
        return variant[1]

    def unit_path(self, unit: str) -> str | None:
        try:
            return self.call("GetUnit", "s", (unit,))[0]
        except BusError as e:
            if e.name.endswith(".NoSuchUnit"):
                return None
            raise

    def run_job(self, method: str, signature: str, body: tuple, *,
                timeout: float = JOB_TIMEOUT) -> str:
        """Call a method that queues a job and wait for the job's JobRemoved
        signal; returns its result ("done", "failed", "canceled", ...)."""
        from collections import deque
        from jeepney import MatchRule
        # the bus matches the well-known sender; locally the header carries
        # systemd's unique name, so the local filter leaves the sender out
        rule = MatchRule(type="signal", interface=MANAGER_IFACE, member="JobRemoved",
                         path=MANAGER_PATH)
        queue: deque = deque()
        with self.conn.filter(rule, queue=queue):
            if not self._direct():
                bus_rule = MatchRule(type="signal", sender=SYSTEMD, interface=MANAGER_IFACE,
                                     member="JobRemoved", path=MANAGER_PATH)
                self.conn.send_and_get_reply(_add_match(bus_rule), timeout=CALL_TIMEOUT)
            try:
                self.call("Subscribe")  # job signals for a connection that tracks them
            except BusError:
                pass
            (job,) = self.call(method, signature, body)
            deadline = time.monotonic() + timeout
            while True:
                while queue:
                    _id, jpath, _unit, result = queue.popleft().body
                    if jpath == job:
                        return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HakoError(f"systemd: {method} {body[0]}: the job did not finish "
                                    f"within {timeout:g}s")
                try:
                    queue.appendleft(self.conn.recv_until_filtered(queue, timeout=left))
                except TimeoutError:
                    continue
                except OSError as e:
                    raise HakoError(f"systemd: {method}: connection lost: {e}") from None

    def _direct(self) -> bool:
        return self.where.endswith("/systemd/private")


def _add_match(rule):
    from jeepney.bus_messages import message_bus
    return message_bus.AddMatch(rule)


def _direct_connection(sock: socket.socket):
    """A jeepney connection to a peer that is not a bus (systemd's private
    socket): the same machinery without the Hello call."""
    from jeepney.io.blocking import DBusConnection, DBusConnectionBase
    from jeepney.io.common import MessageFilters

    class Direct(DBusConnection):
        def __init__(self, s: socket.socket) -> None:
            DBusConnectionBase.__init__(self, s, False)
            self._filters = MessageFilters()
            self.unique_name = None

    return Direct(sock)
