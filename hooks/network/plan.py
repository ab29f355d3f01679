"""What hako adds to a config for networking, decided before anything starts:
the hook pair that runs this package, and a resolv.conf bind mount.
"""

from __future__ import annotations

import os
import sys

from hooks.network.checks import check_tun, helper_path
from hooks.network.common import (
    ANN_DRIVER, ANN_LOOPBACK, ANN_PORTS, DEFAULT_PATH, MOUNTPOINT_MARK, PREFIX, READY_TIMEOUT,
    RESOLV_FILE, NetworkError,
)
from hooks.network.options import Options, parse_annotations
from hooks.network.ports import check_ports_free
from hooks.network.state import cleanup

#: what the hooks run (python3 -I -S SCRIPT ...): the package's __main__.py
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")


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
    script = SCRIPT
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
    script = SCRIPT
    python = shutil.which("python3", path=os.environ.get("PATH") or DEFAULT_PATH)
    if not python or not os.path.isfile(script):
        raise NetworkError("networking runs hooks/network/__main__.py with python3, and this "
                           "hako has no python3 or no hooks/network/__main__.py on disk")
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
        # (runtime/rootfs/mountpoints.py); other runtimes ignore the key
        mount = {"destination": "/etc/resolv.conf", "type": "bind",
                 "source": os.path.join(state_dir, RESOLV_FILE),
                 "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
                 MOUNTPOINT_MARK: "overlay"}
    return NetworkPlan(opts, state_dir, hooks, mount, replace, resolv_text)
