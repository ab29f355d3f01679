"""Networking for a container's new network namespace: slirp4netns or pasta.

A pair of OCI hooks (createRuntime + createContainer; standard library only)
that any runtime can run, and that hako adds by itself when a config's
annotations ask for networking (``plan()``, called by ``hako create``).

Annotations (config.json ``annotations``; every value is a string)::

    io.hako.network                slirp4netns (default) | pasta | none
    io.hako.network.ports          comma-separated [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]
                                   (HOSTIP default: every address; an IPv6 one may be
                                   written in brackets: [::1]:8080:80)
    io.hako.network.host-loopback  true | false (default false): the gateway 10.0.2.2
                                   leads to the host's 127.0.0.1
    io.hako.network.mtu            68..65520 (default 65520)
    io.hako.network.dns            the resolver address written into the container's
                                   /etc/resolv.conf (default 10.0.2.3, the helper's DNS
                                   forwarder)

Any ``io.hako.network*`` key turns networking on. ``none`` leaves the namespace with
its loopback only (which hako brings up in every new network namespace). Joining
an existing namespace (``linux.namespaces`` entry with a ``path``) is plain OCI and
needs none of this.

Inside, both drivers give the same picture: ``eth0`` 10.0.2.100/24, default route
via 10.0.2.2, DNS forwarder 10.0.2.3, the chosen MTU. With host-loopback false,
slirp4netns refuses connections to 10.0.2.2; pasta (--no-map-gw) then treats
10.0.2.2 as an ordinary outside address instead.

How it runs: two hook phases, because a runtime's init may be non-dumpable while
it is being created (hako's is, against CVE-2019-5736), so that no process of the
same (rootless) user may open its /proc/PID/ns/* from outside:

- ``--phase runtime`` (createRuntime, in the runtime's namespaces): forks the
  *supervisor* (own session, stdio on network.log) that listens on
  ``network.ctl`` in the state directory, and returns at once.
- ``--phase container`` (createContainer, run by the init inside the container's
  namespaces, where it is an ordinary dumpable process): connects to the
  supervisor, which takes its pid from SO_PEERCRED (accepting only children of
  the container's init), opens its namespaces, starts the helper
  (slirp4netns --configure --ready-fd, or pasta --config-net writing its pid
  into an inherited pipe given as --pid /proc/self/fd/N) and answers once the
  interface is configured and the ports are forwarded. So the container's
  process never starts before its network is there.

Lifetime (the helper never outlives the container):

- The supervisor holds a pidfd of the container's init and one of the helper and
  sleeps in poll(): when the init exits (normal exit, SIGKILL, or the init giving
  up because the runtime died mid-create) it stops the helper and exits.
- If the supervisor itself is killed: slirp4netns exits because the supervisor
  held the write end of its --exit-fd pipe; pasta dies of PR_SET_PDEATHSIG.
- ``network.json`` in the state directory records both pids with their start
  times; ``cleanup()`` (hako's delete, or this hook at ``poststop``) kills what is
  still there, checking start times so that a reused pid is never hit.

State directory: hako passes ``--state-dir <container state dir>``; a plain hook
uses ``$XDG_RUNTIME_DIR/hako-network/<id>`` (``/run/hako-network/<id>`` for root)
and removes it when the container is gone; inside a user namespace the
createContainer phase cannot work that out: give every phase the same
``--state-dir``. Files: ``network.json``, ``network.ctl``, ``network.log`` (the
helper's and the supervisor's messages), ``pasta.log``, ``network.sock``
(slirp4netns API socket) and ``resolv.conf`` (written by hako).

As a plain OCI hook for another runtime (paths as the host sees them)::

    "hooks": {
      "createRuntime":   [{"path": "/usr/bin/python3", "args": ["python3",
                           "/path/to/hooks/network.py", "--state-dir", "/run/user/1000/n1"]}],
      "createContainer": [{"path": "/usr/bin/python3", "args": ["python3",
                           "/path/to/hooks/network.py", "--phase", "container",
                           "--state-dir", "/run/user/1000/n1"]}],
      "poststop":        [{"path": "/usr/bin/python3", "args": ["python3",
                           "/path/to/hooks/network.py", "--state-dir", "/run/user/1000/n1"]}]
    }

(without ``--phase`` the status on stdin decides: "stopped" cleans up, anything
else is the runtime phase). A resolv.conf for such a runtime is a mount entry
its config brings; ``plan()`` computes the entries hako adds.

hako's resolv.conf mount carries ``"x-hako-mountpoint": "overlay"``: on a rootfs
without /etc/resolv.conf that cannot take an empty mount point (rootless on a
rootfs owned by someone else, a read-only filesystem), the init makes it in a
read-only overlay of /etc instead of failing (runtime/mountpoints.py).
"""

from __future__ import annotations

import json
import os
import sys

try:  # inside hako: its one-line error type; as a standalone hook: a plain one
    from runtime.errors import HakoError as _Base
except ImportError:  # pragma: no cover - depends on how the hook is started
    _Base = Exception  # type: ignore[assignment,misc]

PREFIX = "io.hako.network"
ANN_DRIVER = "io.hako.network"
ANN_PORTS = "io.hako.network.ports"
ANN_LOOPBACK = "io.hako.network.host-loopback"
ANN_MTU = "io.hako.network.mtu"
ANN_DNS = "io.hako.network.dns"
KNOWN = (ANN_DRIVER, ANN_PORTS, ANN_LOOPBACK, ANN_MTU, ANN_DNS)

DRIVERS = ("slirp4netns", "pasta", "none")
PACKAGES = {"slirp4netns": "slirp4netns", "pasta": "passt"}
IFNAME = "eth0"
GUEST_IP = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS_IP = "10.0.2.3"
NETMASK_BITS = 24
DEFAULT_MTU = 65520
PORT_FORMAT = "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]"

STATE_FILE = "network.json"
LOG_FILE = "network.log"
PASTA_LOG = "pasta.log"
API_SOCKET = "network.sock"
CTL_SOCKET = "network.ctl"
RESOLV_FILE = "resolv.conf"
OWNED_MARK = ".hako-network-owned"
#: runtime.mountpoints.MARK (not imported: this file also runs as a standalone hook)
MOUNTPOINT_MARK = "x-hako-mountpoint"
#: how long the hook waits for the interface and the forwards
READY_TIMEOUT = 15.0
#: how long a helper gets to exit on SIGTERM before SIGKILL
STOP_TIMEOUT = 2.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NetworkError(_Base):
    """A network setup failure; str() is one line."""


# --------------------------------------------------------------------- options
class Port:
    __slots__ = ("host_ip", "host_port", "container_port", "proto", "text")

    def __init__(self, host_ip: str, host_port: int, container_port: int, proto: str,
                 text: str) -> None:
        self.host_ip = host_ip  # "" = every address
        self.host_port = host_port
        self.container_port = container_port
        self.proto = proto
        self.text = text

    def __repr__(self) -> str:
        return f"Port({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Port) and self._key() == other._key()

    def _key(self) -> tuple:
        return (self.host_ip, self.host_port, self.container_port, self.proto)


class Options:
    """What the annotations ask for, validated."""

    def __init__(self, driver: str = "slirp4netns", ports: list[Port] | None = None,
                 host_loopback: bool = False, mtu: int = DEFAULT_MTU,
                 dns: str | None = None) -> None:
        self.driver = driver
        self.ports = ports or []
        self.host_loopback = host_loopback
        self.mtu = mtu
        self.dns = dns  # None: the helper's forwarder (DNS_IP)

    @property
    def resolver(self) -> str:
        return self.dns or DNS_IP


def wanted(annotations: dict | None) -> bool:
    """Does the config ask for networking? (cheap: no parsing)"""
    return bool(annotations) and any(k.startswith(PREFIX) for k in annotations)


def _bad_port(text: str) -> NetworkError:
    return NetworkError(f'{ANN_PORTS}: "{text}": expected {PORT_FORMAT}')


def _port_number(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise _bad_port(whole)
    n = int(text)
    if not 1 <= n <= 65535:
        raise NetworkError(f'{ANN_PORTS}: "{whole}": port {n} is out of range (1-65535)')
    return n


def parse_port(text: str) -> Port:
    """One ``[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]``."""
    import ipaddress
    whole = text
    s = text.strip()
    proto = "tcp"
    if "/" in s:
        s, _, proto = s.rpartition("/")
        if proto not in ("tcp", "udp"):
            raise _bad_port(whole)
    host_ip = ""
    if s.startswith("["):  # [v6]:host:container
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":":
            raise _bad_port(whole)
        host_ip, s = s[1:end], s[end + 2:]
        parts = s.split(":")
        if len(parts) != 2:
            raise _bad_port(whole)
    else:
        parts = s.rsplit(":", 2)
        if len(parts) == 3:
            host_ip = parts.pop(0)
            if not host_ip:
                raise _bad_port(whole)
        elif len(parts) != 2:
            raise _bad_port(whole)
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise NetworkError(f'{ANN_PORTS}: "{whole}": {host_ip!r} is not an IP '
                               f"address") from None
    host_port = _port_number(parts[0], whole)
    container_port = _port_number(parts[1], whole)
    return Port(host_ip, host_port, container_port, proto, whole.strip())


def parse_ports(text: str) -> list[Port]:
    ports: list[Port] = []
    seen: dict[tuple, str] = {}
    for item in text.split(","):
        if not item.strip():
            if text.strip():
                raise _bad_port(item)
            continue
        p = parse_port(item)
        key = (p.host_ip, p.host_port, p.proto)
        if key in seen:
            raise NetworkError(f'{ANN_PORTS}: "{p.text}": host port {p.host_port}/{p.proto} '
                               f'is already forwarded by "{seen[key]}"')
        seen[key] = p.text
        ports.append(p)
    return ports


def parse_annotations(annotations: dict | None) -> Options | None:
    """The options the annotations ask for; None when they ask for nothing."""
    if not wanted(annotations):
        return None
    assert annotations is not None
    for k in annotations:
        if k.startswith(PREFIX) and k not in KNOWN:
            raise NetworkError(f"annotation {k}: unknown (known: {', '.join(KNOWN)})")
    driver = annotations.get(ANN_DRIVER) or "slirp4netns"
    if driver not in DRIVERS:
        raise NetworkError(f"{ANN_DRIVER}: unknown driver {driver!r} "
                           f"(slirp4netns, pasta or none)")
    ports = parse_ports(annotations.get(ANN_PORTS) or "")
    loop = (annotations.get(ANN_LOOPBACK) or "false").strip().lower()
    if loop not in ("true", "false"):
        raise NetworkError(f"{ANN_LOOPBACK}: {annotations[ANN_LOOPBACK]!r}: expected true or "
                           f"false")
    mtu_text = (annotations.get(ANN_MTU) or str(DEFAULT_MTU)).strip()
    top = 65521 if driver == "slirp4netns" else 65520
    if not (mtu_text.isascii() and mtu_text.isdigit()) or not 68 <= int(mtu_text) <= top:
        raise NetworkError(f"{ANN_MTU}: {mtu_text!r}: expected a number from 68 to {top}")
    dns = annotations.get(ANN_DNS)
    if dns is not None:
        import ipaddress
        try:
            dns = str(ipaddress.ip_address(dns.strip()))
        except ValueError:
            raise NetworkError(f"{ANN_DNS}: {dns!r} is not an IP address") from None
    if driver == "none" and ports:
        raise NetworkError(f"{ANN_PORTS}: driver none has no ports to forward (use "
                           f"slirp4netns or pasta)")
    return Options(driver, ports, loop == "true", int(mtu_text), dns)


# ---------------------------------------------------------------------- checks
def helper_path(driver: str, path: str | None = None) -> str:
    import shutil
    search = path if path is not None else (os.environ.get("PATH") or DEFAULT_PATH)
    found = shutil.which(driver, path=search)
    if not found:
        raise NetworkError(f"{ANN_DRIVER}={driver}: {driver} not found in PATH ({search}): "
                           f"install package {PACKAGES[driver]}")
    return found


def check_tun(path: str = "/dev/net/tun") -> None:
    """Both helpers open the tun device as the caller: it must be read-writable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        hint = ""
        if e.errno in (1, 13):  # EPERM, EACCES
            hint = (f" (uid {os.geteuid()} may not open it: distributions make it mode 0666, "
                    f"`chmod 0666 {path}` as root)")
        elif e.errno == 2:
            hint = " (no tun device: load the tun module, `modprobe tun`)"
        raise NetworkError(f"{path} is not usable: {e.strerror}{hint}") from None
    os.close(fd)


def check_ports_free(ports: list[Port]) -> None:
    """Bind every host port once, as the helper will, to fail before anything starts."""
    import errno
    import socket
    for p in ports:
        ip = p.host_ip or "0.0.0.0"
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        typ = socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(fam, typ)
        try:
            if p.proto == "tcp":  # as the helpers do: a TIME_WAIT leftover is no conflict
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, p.host_port))
            if p.proto == "tcp":
                s.listen(1)
        except OSError as e:
            where = f'{ANN_PORTS}: "{p.text}"'
            if e.errno == errno.EADDRINUSE:
                raise NetworkError(f"{where}: host port {p.host_port}/{p.proto} is already "
                                   f"in use") from None
            if e.errno == errno.EACCES:
                raise NetworkError(f"{where}: may not bind host port {p.host_port} "
                                   f"(ports below net.ipv4.ip_unprivileged_port_start need "
                                   f"privileges)") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise NetworkError(f"{where}: {ip} is not an address of this host") from None
            raise NetworkError(f"{where}: cannot bind host port {p.host_port}: "
                               f"{e.strerror}") from None
        finally:
            s.close()


def _netns_entry(spec: dict) -> dict | None:
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network":
            return ns
    return None


def configure_spec(spec: dict, driver: str | None = None, publish: list[str] | None = None,
                   host_loopback: bool = False) -> None:
    """``hako spec --network/--publish/--allow-host-loopback``: write the
    annotations (validated) and make sure the config has a network namespace of
    its own (a rootless config then mounts sysfs again instead of binding /sys)."""
    ann: dict[str, str] = {ANN_DRIVER: driver or "slirp4netns"}
    if publish:
        ann[ANN_PORTS] = ",".join(p.strip() for p in publish)
    if host_loopback:
        ann[ANN_LOOPBACK] = "true"
    try:
        parse_annotations(ann)
    except NetworkError as e:  # name the flag, not the annotation it becomes
        msg = str(e)
        for key, flag in ((ANN_PORTS, "--publish"), (ANN_DRIVER, "--network")):
            if msg.startswith(key + ":") or msg.startswith(key + "="):
                msg = flag + msg[len(key):]
                break
        raise NetworkError(msg) from None
    spec.setdefault("annotations", {}).update(ann)
    linux = spec.setdefault("linux", {})
    namespaces = linux.setdefault("namespaces", [])
    if not any(ns.get("type") == "network" for ns in namespaces):
        namespaces.append({"type": "network"})
        for m in spec.get("mounts") or []:
            if os.path.normpath(m.get("destination") or "") == "/sys" and m.get("source") == "/sys":
                m.update({"type": "sysfs", "source": "sysfs",
                          "options": ["nosuid", "noexec", "nodev", "ro"]})


# ------------------------------------------------------------------- the plan
class NetworkPlan:
    """What hako adds to a config for networking, decided before anything starts.

    ``hooks`` maps a hook kind (createRuntime, createContainer) to the entry that
    goes first in it; ``mount`` (or None) binds ``resolv_path`` on
    /etc/resolv.conf, replacing the entry at ``replace`` when not None (a bind of
    the host's own resolv.conf). ``prepare()`` writes the file once the state
    directory exists; ``cleanup()`` stops and removes everything.
    """

    def __init__(self, options: Options, state_dir: str, hooks: dict[str, dict],
                 mount: dict | None, replace: int | None, resolv_text: str | None) -> None:
        self.options = options
        self.state_dir = state_dir
        self.hooks = hooks
        self.mount = mount
        self.replace = replace
        self.resolv_text = resolv_text

    @property
    def resolv_path(self) -> str:
        return os.path.join(self.state_dir, RESOLV_FILE)

    def apply(self, spec: dict) -> None:
        """Merge the hooks and the mount into *spec* (in place)."""
        if self.hooks:
            hooks = spec.setdefault("hooks", {})
            for kind, entry in self.hooks.items():
                hooks[kind] = [entry] + list(hooks.get(kind) or [])
        if self.mount is not None:
            mounts = spec.setdefault("mounts", [])
            if self.replace is not None:
                mounts[self.replace] = self.mount
            else:
                mounts.append(self.mount)

    def prepare(self) -> None:
        """Write the files the config refers to (the state directory exists now)."""
        if self.resolv_text is None:
            return
        tmp = self.resolv_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(self.resolv_text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.resolv_path)

    def cleanup(self) -> None:
        cleanup(self.state_dir)


def hook_entries(state_dir: str) -> dict[str, dict]:
    """The two hooks that run this module as a script: createRuntime starts the
    supervisor, createContainer hands it the container's namespaces."""
    script = os.path.abspath(__file__)
    env = [f"PATH={os.environ.get('PATH') or DEFAULT_PATH}"]
    frozen = getattr(sys, "frozen", False)
    if frozen:
        # the frozen hako runs the hook itself (`hako network-hook`): the
        # single-file launcher names its own path in HAKO_LAUNCHER
        exe = os.environ.get("HAKO_LAUNCHER") or os.path.realpath(sys.executable)
        head = [exe, "network-hook"]
    else:
        exe = (os.path.realpath(sys.executable) if sys.executable and os.path.isfile(script)
               else helper_python())
        head = [exe, "-I", "-S", script]
    out = {}
    for kind, phase in (("createRuntime", "runtime"), ("createContainer", "container")):
        out[kind] = {"path": exe,
                     "args": head + ["--phase", phase, "--state-dir", state_dir],
                     "env": env, "timeout": int(READY_TIMEOUT + 15)}
    return out


def helper_python() -> str:
    import shutil
    script = os.path.abspath(__file__)
    python = shutil.which("python3", path=os.environ.get("PATH") or DEFAULT_PATH)
    if not python or not os.path.isfile(script):
        raise NetworkError("networking runs hooks/network.py with python3, and this hako has "
                           "no python3 or no hooks/network.py on disk")
    return python


def _host_resolv_extras() -> list[str]:
    """search/domain/options lines of the host's resolv.conf (never its nameservers)."""
    out = []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                w = line.split()
                if w and w[0] in ("search", "domain", "options"):
                    out.append(" ".join(w))
    except OSError:
        pass
    return out


def _rootfs_has_resolver(rootfs: str) -> bool:
    """True when the image brings a resolv.conf naming a non-loopback resolver
    (one on 127.0.0.0/8 or ::1 would be the container's own loopback)."""
    path = os.path.join(rootfs, "etc", "resolv.conf")
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            return False  # a symlink leads to a path we cannot judge from here
        with open(path) as f:
            text = f.read(65536)
    except OSError:
        return False
    for line in text.splitlines():
        w = line.split()
        if len(w) >= 2 and w[0] == "nameserver":
            if not (w[1].startswith("127.") or w[1] == "::1"):
                return True
    return False


def plan(spec: dict, state_dir: str, bundle: str | None = None) -> NetworkPlan | None:
    """Validate the networking annotations of *spec*; None when there are none.

    Raises NetworkError (one line) for a bad annotation, a missing helper, an
    unusable /dev/net/tun, a taken host port, or no network namespace of the
    container's own. Starts nothing and writes nothing.
    """
    opts = parse_annotations(spec.get("annotations"))
    if opts is None:
        return None
    ns = _netns_entry(spec)
    if ns is None:
        raise NetworkError(f"{ANN_DRIVER}={opts.driver}: the container has no network "
                           f'namespace of its own (add {{"type": "network"}} to '
                           f"linux.namespaces)")
    if ns.get("path"):
        raise NetworkError(f"{ANN_DRIVER}={opts.driver}: the container joins the network "
                           f"namespace {ns['path']}, which is configured already (drop the "
                           f"{PREFIX} annotations)")
    if opts.driver == "none":
        return NetworkPlan(opts, state_dir, {}, None, None, None)
    helper_path(opts.driver)
    check_tun()
    check_ports_free(opts.ports)
    hooks = hook_entries(state_dir)
    # resolv.conf: ours unless the config or the image brings a usable one
    mount = None
    replace = None
    resolv_text = None
    mounts = spec.get("mounts") or []
    existing = None
    for i, m in enumerate(mounts):
        if os.path.normpath("/" + (m.get("destination") or "")) == "/etc/resolv.conf":
            existing = i
    provide = True
    if existing is not None:
        src = mounts[existing].get("source") or ""
        if os.path.realpath(src) == os.path.realpath("/etc/resolv.conf"):
            replace = existing  # the host's: useless behind the helper's NAT
        else:
            provide = False  # the config's own choice
    elif opts.dns is None:
        root = (spec.get("root") or {}).get("path") or "rootfs"
        if not os.path.isabs(root):
            root = os.path.join(bundle or os.getcwd(), root)
        provide = not _rootfs_has_resolver(root)
    if provide:
        lines = [f"nameserver {opts.resolver}"] + _host_resolv_extras()
        resolv_text = "\n".join(lines) + "\n"
        # MOUNTPOINT_MARK: when the rootfs has no resolv.conf and cannot take an
        # empty one (rootless on someone else's rootfs, a read-only filesystem),
        # hako makes the mount point in a read-only overlay of /etc instead
        # (runtime/mountpoints.py); other runtimes ignore the key
        mount = {"destination": "/etc/resolv.conf", "type": "bind",
                 "source": os.path.join(state_dir, RESOLV_FILE),
                 "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
                 MOUNTPOINT_MARK: "overlay"}
    return NetworkPlan(opts, state_dir, hooks, mount, replace, resolv_text)


# ------------------------------------------------------------------ processes
def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None  # gone but for its parent's wait
    return int(rest[19])


def _open_verified(pid: int, start: int) -> int:
    """A pidfd for *pid* if it is still the process that started at *start*, else -1."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return -1
    if _start_time(pid) != start:  # exited, or the pid now names another process
        os.close(fd)
        return -1
    return fd


def _wait_fds(fds: list[int], timeout: float) -> list[int]:
    """Wait until every pidfd in *fds* reports an exit; returns those still alive."""
    import select
    import time
    deadline = time.monotonic() + timeout
    left_fds = list(fds)
    while left_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        p = select.poll()
        for fd in left_fds:
            p.register(fd, select.POLLIN)
        done = {fd for fd, _ in p.poll(int(left * 1000) + 1)}
        left_fds = [fd for fd in left_fds if fd not in done]
    return left_fds


def _read_state(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_state(state_dir: str, data: dict) -> None:
    tmp = os.path.join(state_dir, f".{STATE_FILE}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, os.path.join(state_dir, STATE_FILE))


def cleanup(state_dir: str, *, timeout: float = 5.0) -> None:
    """Stop the supervisor and the helper recorded in *state_dir* (if still
    there) and remove this module's files. Safe to call any number of times.

    The supervisor gets SIGTERM first (it stops and reaps the helper itself);
    whatever is still there after a moment gets SIGKILL."""
    import signal
    info = _read_state(state_dir) or {}
    procs: dict[str, tuple[int, int]] = {}
    for key in ("supervisor", "helper"):
        entry = info.get(key)
        if entry:
            fd = _open_verified(int(entry[0]), int(entry[1]))
            if fd >= 0:
                procs[key] = (int(entry[0]), fd)
    try:
        if procs:
            first = procs.get("supervisor") or procs["helper"]
            try:
                signal.pidfd_send_signal(first[1], signal.SIGTERM)
            except OSError:
                pass
            alive = _wait_fds([fd for _, fd in procs.values()], min(timeout, STOP_TIMEOUT + 1))
            for fd in alive:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except OSError:
                    pass
            _wait_fds(alive, timeout)
            for pid, _ in procs.values():
                try:  # ours when run by the caller (hako run is a subreaper)
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
    finally:
        for _, fd in procs.values():
            os.close(fd)
    for name in (STATE_FILE, API_SOCKET, CTL_SOCKET, LOG_FILE, PASTA_LOG, RESOLV_FILE,
                 f"{RESOLV_FILE}.tmp", f".{STATE_FILE}.tmp"):
        try:
            os.unlink(os.path.join(state_dir, name))
        except OSError:
            pass
    if os.path.exists(os.path.join(state_dir, OWNED_MARK)):
        try:
            os.unlink(os.path.join(state_dir, OWNED_MARK))
            os.rmdir(state_dir)
        except OSError:
            pass


# ------------------------------------------------------------------ the hook
def default_state_dir(cid: str) -> str:
    """Where a plain hook keeps its files when not given --state-dir."""
    try:
        with open("/proc/self/uid_map") as f:
            initial = f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        initial = True
    if not initial:  # e.g. the createContainer hook, inside the container's user namespace
        raise NetworkError("inside a user namespace: give the same --state-dir to every "
                           "phase of this hook")
    if os.geteuid() == 0:
        base = "/run/hako-network"
    else:
        base = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/hako-{os.getuid()}",
                            "hako-network")
    return os.path.join(base, cid)


def _short(state_dir: str, name: str) -> str:
    """A socket path in *state_dir* as given to bind/connect: relative (the
    caller runs in state_dir) when the absolute one would not fit in sun_path."""
    path = os.path.join(state_dir, name)
    return path if len(path) < 100 else name


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
        # the target as a pid (as podman does): with --netns-type=path and
        # --userns-path, --enable-sandbox fails rootless (setegid(0))
        argv = [helper, "--configure", f"--mtu={opts.mtu}", f"--exit-fd={exit_r}",
                f"--ready-fd={ready_w}", "--enable-sandbox", "--enable-seccomp"]
        if not opts.host_loopback:
            argv.append("--disable-host-loopback")
        if opts.ports:
            argv += ["--api-socket", _short(state_dir, API_SOCKET)]
        return argv + [str(pid), IFNAME]
    argv = [helper, "--config-net", "--foreground", "--quiet", "--ipv4-only",
            "--ns-ifname", IFNAME, "--address", GUEST_IP, "--netmask", str(NETMASK_BITS),
            "--gateway", GATEWAY, "--dns-forward", DNS_IP, "--mtu", str(opts.mtu),
            "--log-file", os.path.join(state_dir, PASTA_LOG),
            "--pid", f"/proc/self/fd/{ready_w}", "-T", "none", "-U", "none"]
    for proto, flag in (("tcp", "-t"), ("udp", "-u")):
        specs = [f"{p.host_ip + '/' if p.host_ip else ''}{p.host_port}:{p.container_port}"
                 for p in opts.ports if p.proto == proto]
        for s in specs or ["none"]:
            argv += [flag, s]
    if not opts.host_loopback:
        argv.append("--no-map-gw")
    if os.geteuid() == 0:
        argv += ["--runas", "0:0"]  # as nobody it could not enter the namespace
    if userfd >= 0:
        argv += ["--userns", f"/proc/self/fd/{userfd}"]
    return argv + ["--netns", f"/proc/self/fd/{netfd}"]


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


def _add_forwards(opts: Options, state_dir: str, helper_alive) -> None:
    """slirp4netns: one add_hostfwd request per port on its API socket."""
    import socket
    import time
    deadline = time.monotonic() + READY_TIMEOUT
    while not os.path.exists(os.path.join(state_dir, API_SOCKET)):
        if not helper_alive():
            raise NetworkError("slirp4netns exited before its API socket appeared")
        if time.monotonic() > deadline:
            raise NetworkError("slirp4netns did not create its API socket in time")
        time.sleep(0.002)
    for p in opts.ports:
        req = {"execute": "add_hostfwd",
               "arguments": {"proto": p.proto, "host_addr": p.host_ip or "0.0.0.0",
                             "host_port": p.host_port, "guest_addr": GUEST_IP,
                             "guest_port": p.container_port}}
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(READY_TIMEOUT)
        try:
            s.connect(_short(state_dir, API_SOCKET))
            s.sendall(json.dumps(req).encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError as e:
            raise NetworkError(f'{ANN_PORTS}: "{p.text}": slirp4netns API: '
                               f"{e.strerror or e}") from None
        finally:
            s.close()
        try:
            reply = json.loads(data.decode() or "{}")
        except ValueError:
            reply = {"error": {"desc": data.decode(errors="replace")[:200]}}
        if "error" in reply or "return" not in reply:
            err = reply.get("error")
            desc = err.get("desc") if isinstance(err, dict) else err
            raise NetworkError(f'{ANN_PORTS}: "{p.text}": slirp4netns refused the forward: '
                               f"{desc or 'no reply'}")


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
            _add_forwards(opts, state_dir, h.alive)
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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    state_dir = None
    phase = None
    while args:
        a = args.pop(0)
        if a == "--state-dir" and args:
            state_dir = args.pop(0)
        elif a.startswith("--state-dir="):
            state_dir = a.split("=", 1)[1]
        elif a == "--phase" and args:
            phase = args.pop(0)
        elif a.startswith("--phase="):
            phase = a.split("=", 1)[1]
        elif a == "--cleanup":
            phase = "cleanup"
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            print(f"hako-network: unknown argument {a!r}", file=sys.stderr)
            return 2
    if phase not in (None, "runtime", "container", "cleanup"):
        print(f"hako-network: --phase: {phase!r}: runtime, container or cleanup",
              file=sys.stderr)
        return 2
    try:
        try:
            state = json.load(sys.stdin)
        except ValueError as e:
            raise NetworkError(f"the OCI state on stdin is not JSON: {e}") from None
        if phase is None:
            phase = "cleanup" if state.get("status") == "stopped" else "runtime"
        owned = state_dir is None
        if state_dir is None:
            cid = state.get("id") or ""
            if not cid or "/" in cid or cid in (".", ".."):
                raise NetworkError(f"bad container id {cid!r} in the state on stdin")
            state_dir = default_state_dir(cid)
        if phase == "cleanup":
            cleanup(state_dir)
            return 0
        annotations = state.get("annotations")
        if annotations is None and state.get("bundle"):
            try:
                with open(os.path.join(state["bundle"], "config.json")) as f:
                    annotations = json.load(f).get("annotations")
            except (OSError, ValueError):
                annotations = None
        opts = parse_annotations(annotations or {}) or Options()
        if opts.driver == "none":
            return 0
        if phase == "container":
            join(state_dir, opts)
            return 0
        if owned:
            os.makedirs(state_dir, mode=0o711, exist_ok=True)
            with open(os.path.join(state_dir, OWNED_MARK), "w"):
                pass
        try:
            start(state, state_dir, opts)
        except BaseException:
            if owned:
                cleanup(state_dir)
            raise
    except NetworkError as e:
        print(f"hako-network: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
