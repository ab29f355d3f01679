"""A real systemd, booted as PID 1 of a system container, for the systemd driver tests.

These machines do not run systemd, but its packages are installed. ``SystemdBox``
boots ``/lib/systemd/systemd`` in new pid/mount/uts/cgroup namespaces (unshare)
on a read-only bind of the host's / with tmpfs /etc (a copy without enabled
units), /run, /tmp, /var, /root and /dev, and a cgroup subtree of its own:

* ``hybrid`` (the host's layout): every v1 hierarchy plus name=systemd and the
  cgroup2 tree at /sys/fs/cgroup/unified, each rooted at the box's subtree;
* ``legacy``: the v1 hierarchies only;
* ``unified``: cgroup2 at /sys/fs/cgroup (on these hybrid hosts it has only
  the controllers not bound to v1 -- hugetlb -- but it is a real v2 systemd,
  with user managers that get delegated scopes).

Commands run in the box through ``nsenter`` after moving into the leaf cgroup
``/hako-test`` (a process outside a cgroup namespace's root cannot be moved
into it by systemd). The session's test directory is bound at the same path,
so bundles and state dirs are shared. ``close()`` SIGKILLs the box's PID 1 (the
pid namespace dies with it, and so do its mounts) and removes the subtree.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BOOT_TIMEOUT = 60.0
CALL_TIMEOUT = 30.0
SYSTEMD = "/lib/systemd/systemd"
CG = "/sys/fs/cgroup"
LEAF = "hako-test"

BOOT = r"""#!/bin/bash
# PID 1 of the box until it execs systemd. $1: base dir, $2: mode; $1/shared: dirs
# bound at the same path inside
set -eu
B=$1; MODE=$2
R=$B/root
mount --make-rprivate /
mkdir -p $R
mount --bind / $R
mount -o remount,bind,ro $R
mount -t proc proc $R/proc
mount --rbind /sys $R/sys
umount -R $R/sys/fs/cgroup
mount -o remount,bind,ro $R/sys
if [ $MODE = unified ]; then
  mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
  mkdir $R/sys/fs/cgroup/hako-test
else
  mount -t tmpfs -o mode=755 tmpfs $R/sys/fs/cgroup
  # the host's hierarchies, each with its own options, rooted at the box's subtree
  awk '{for (i = 1; i <= NF; i++) if ($i == "-") s = i;
        if ($(s+1) ~ /^cgroup2?$/ && $5 ~ "^/sys/fs/cgroup/") print $(s+1), $5, $(s+3)}' \
      /proc/self/mountinfo > $B/cgroups.txt
  while read -r fstype mp opts; do
    [ $fstype = cgroup2 ] && [ $MODE = legacy ] && continue
    opts=$(echo "$opts" | tr ',' '\n' | grep -v -x -e rw -e ro | paste -sd, -)
    mkdir -p $R$mp
    if [ $fstype = cgroup2 ]; then mount -t cgroup2 cgroup2 $R$mp
    else mount -t cgroup -o "${opts:-none}" cgroup $R$mp; fi
    mkdir $R$mp/hako-test
    if [ -e $R$mp/cpuset.cpus ]; then
      cat $R$mp/cpuset.cpus > $R$mp/hako-test/cpuset.cpus
      cat $R$mp/cpuset.mems > $R$mp/hako-test/cpuset.mems
    fi
  done < $B/cgroups.txt
  rm -f $B/cgroups.txt
fi
mount -t tmpfs -o mode=755 tmpfs $R/dev
for d in null zero full random urandom tty; do touch $R/dev/$d; mount --bind /dev/$d $R/dev/$d; done
touch $R/dev/console  # a plain file: systemd chowns/chmods its console (a bind of /dev/null made the host's 0620 root:tty)
mkdir $R/dev/pts $R/dev/shm $R/dev/mqueue $R/dev/net
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts $R/dev/pts
ln -s pts/ptmx $R/dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
ln -s /proc/self/fd $R/dev/fd
for d in run tmp var root home; do mount -t tmpfs -o mode=755 tmpfs $R/$d; done
chmod 1777 $R/tmp
awk -F: '$6 ~ "^/home/" {print $3, $4, $6}' /etc/passwd | while read -r u g h; do
  mkdir -p "$R$h"; chown "$u:$g" "$R$h"; done
mkdir -p $R/var/lib $R/var/log $R/var/tmp $R/var/cache $R/run/lock
chmod 1777 $R/var/tmp
mount -t tmpfs -o mode=755 tmpfs $R/etc
cp -a /etc/. $R/etc/
rm -rf $R/etc/systemd/system/*.wants $R/etc/systemd/user/*.wants
rm -f $R/etc/systemd/system/default.target
rm -f $R/etc/machine-id
head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n' > $R/etc/machine-id
echo hakobox > $R/etc/hostname
hostname hakobox
while read -r d; do mkdir -p $R$d; mount --bind $d $R$d; done < $B/shared
ln -sf /dev/null $R/etc/systemd/system/console-getty.service
cd $R
mkdir -p run/oldroot
pivot_root . run/oldroot
umount -l /run/oldroot
rmdir /run/oldroot
export container=hako-test-box
exec /lib/systemd/systemd --log-target=kmsg --log-level=notice </dev/null >/dev/null 2>&1
"""

ENTER = r"""#!/bin/sh
# run in the box: join its leaf cgroup /hako-test in every hierarchy (systemd
# trims empty cgroups it finds, so make it again), then exec "$@"
if [ -e /sys/fs/cgroup/cgroup.procs ]; then set -- /sys/fs/cgroup "$@"; n=1
else n=0; for h in /sys/fs/cgroup/*; do
  [ -L "$h" ] || [ ! -e "$h/cgroup.procs" ] && continue
  set -- "$h" "$@"; n=$((n + 1)); done
fi
while [ $n -gt 0 ]; do
  h=$1; shift; n=$((n - 1))
  mkdir -p "$h/hako-test"
  if [ -e "$h/cpuset.cpus" ] && [ -z "$(cat "$h/hako-test/cpuset.cpus")" ]; then
    cat "$h/cpuset.cpus" > "$h/hako-test/cpuset.cpus"
    cat "$h/cpuset.mems" > "$h/hako-test/cpuset.mems"
  fi
  echo $$ > "$h/hako-test/cgroup.procs"
done
cd "${HAKO_BOX_CWD:-/}" 2>/dev/null || cd /
exec "$@"
"""


def why_no_box() -> str | None:
    """A reason systemd cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "booting systemd in a system container needs root"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} is missing (install the systemd package)"
    if not os.path.exists("/usr/share/dbus-1/system.conf"):
        return "dbus is not installed (install the dbus package)"
    for tool in ("unshare", "nsenter", "pivot_root"):
        if not shutil.which(tool):
            return f"{tool} is missing (util-linux)"
    if not os.path.isdir(CG):
        return f"no cgroup filesystem at {CG}"
    return None


def _own_cgroups() -> dict[str, str]:
    """{hierarchy dir name under /sys/fs/cgroup: our cgroup in it}."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    with open("/proc/self/cgroup") as f:
        mine = [line.rstrip("\n").split(":", 2) for line in f]
    for fields in mounts:
        sep = fields.index("-")
        fstype, mp = fields[sep + 1], fields[4]
        if fstype not in ("cgroup", "cgroup2") or not mp.startswith(CG):
            continue
        root = fields[3]
        if fstype == "cgroup2":
            path = next((p for _, c, p in mine if c == ""), "/")
        else:
            opts = fields[sep + 3].split(",")
            path = next((p for _, c, p in mine if c and set(c.split(",")) & set(opts)), "/")
        if root != "/" and path.startswith(root):
            path = path[len(root):] or "/"
        out[mp] = path
    return out


def host_mode() -> str:
    mps = _own_cgroups()
    if CG in mps:
        return "unified"
    return "hybrid" if any(os.path.basename(m) == "unified" for m in mps) else "legacy"


class SystemdBox:
    """One booted systemd. Use as a context manager; see the module docstring."""

    def __init__(self, mode: str = "hybrid", shared: list[str] | None = None) -> None:
        self.mode = mode
        self.name = f"hako-sdbox-{secrets.token_hex(3)}"
        self.base = Path(tempfile.mkdtemp(prefix="hako-sdbox-", dir="/tmp"))
        self.shared = [str(p) for p in (shared or [])]
        self.subtrees: list[str] = []
        #: what each subtree's parent held before the box: close() reports more
        self.around: dict[str, set[str]] = {}
        self.proc: subprocess.Popen | None = None
        self.pid = 0

    # -- boot / teardown ------------------------------------------------------------
    def __enter__(self) -> "SystemdBox":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_subtrees(self) -> None:
        # one in EVERY hierarchy, also those the box does not mount: the box's
        # cgroup namespace is rooted where it stands, and systemd inside mounts
        # what it wants (cgroup2 at /sys/fs/cgroup/unified in a legacy box),
        # which would otherwise be the host's root (leftovers there)
        for mp, own in _own_cgroups().items():
            parent = os.path.join(mp, own.lstrip("/"))
            self.around[parent] = set(os.listdir(parent))
            d = os.path.join(parent, self.name)
            os.mkdir(d)
            self.subtrees.append(d)
            if os.path.basename(mp) == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(os.path.dirname(d), f)) as src:
                        value = src.read().strip()
                    with open(os.path.join(d, f), "w") as dst:
                        dst.write(value)

    def start(self) -> None:
        if self.mode == "unified" and host_mode() == "legacy":
            raise RuntimeError("no cgroup2 hierarchy on this host for a unified box")
        self._make_subtrees()
        boot = self.base / "boot.sh"
        boot.write_text(BOOT)
        boot.chmod(0o755)
        self.enter_script = self.base / "enter.sh"
        self.enter_script.write_text(ENTER)
        self.enter_script.chmod(0o755)
        (self.base / "shared").write_text("".join(p + "\n" for p in [str(self.base)] + self.shared))
        os.chmod(self.base, 0o755)
        subtrees = list(self.subtrees)

        def join():
            for d in subtrees:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
        self.log = open(self.base / "boot.log", "wb")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--cgroup", "--propagation",
             "private", str(boot), str(self.base), self.mode],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=join, start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.pid:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the box exited during boot: {self.boot_log()}")
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            except OSError:
                kids = ""
            for k in kids.split():
                if Path(f"/proc/{k}/comm").read_text().strip() == "systemd":
                    self.pid = int(k)
            if time.monotonic() > deadline:
                raise RuntimeError(f"systemd did not start within {BOOT_TIMEOUT:g}s: "
                                   f"{self.boot_log()}")
            time.sleep(0.05)
        state = ""
        while time.monotonic() < deadline:
            r = self.run(["systemctl", "is-system-running"], timeout=10, check=False)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"systemd in the box did not come up within {BOOT_TIMEOUT:g}s "
                           f"(is-system-running: {state!r}): {self.boot_log()}")

    def boot_log(self) -> str:
        try:
            return (self.base / "boot.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            if self.proc.poll() is None and not self.pid:
                os.killpg(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=CALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=CALL_TIMEOUT)
            self.log.close()
        for d in self.subtrees:
            _rmtree_cgroup(d)
        shutil.rmtree(self.base, ignore_errors=True)

    def cgroups_left_outside(self) -> list[str]:
        """Cgroups that appeared beside the box's subtrees while it ran (a box
        must make everything inside its own): call after close()."""
        out = []
        for parent, before in self.around.items():
            try:
                now = set(os.listdir(parent))
            except OSError:
                continue
            out += [os.path.join(parent, n) for n in sorted(now - before)
                    if os.path.isdir(os.path.join(parent, n))]
        return out

    # -- running things inside --------------------------------------------------------
    def prefix(self, cwd: str | None = None) -> list[str]:
        """argv prefix that runs a command in the box (as root)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-p", "-C", "-r", "--",
                str(self.enter_script)]

    def run(self, argv: list, *, timeout: float = CALL_TIMEOUT, check: bool = True,
            env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        e.update(env or {})
        r = subprocess.run(self.prefix() + [str(a) for a in argv], capture_output=True,
                           text=True, timeout=timeout, env=e, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"in the box: {' '.join(map(str, argv))}: exit {r.returncode}\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def show(self, unit: str, *props: str, user: int | None = None) -> dict[str, str]:
        """``systemctl show`` of a unit (``user``: through that user's manager)."""
        argv = ["systemctl", "show", unit, "--no-pager"] + [f"--property={p}" for p in props]
        env = None
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + \
                argv[:1] + ["--user"] + argv[1:]
            env = {"XDG_RUNTIME_DIR": f"/run/user/{user}",
                   "DBUS_SESSION_BUS_ADDRESS": f"unix:path=/run/user/{user}/bus"}
        r = self.run(argv, env=env)
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def cgroup_root(self, hierarchy: str = "") -> str:
        """The host directory of the box's root cgroup in a hierarchy
        ("" = the cgroup2 tree, else a v1 mount name like "memory")."""
        for d in self.subtrees:
            parent = d
            while os.path.dirname(parent) != CG and parent != CG:
                parent = os.path.dirname(parent)
            name = os.path.basename(parent) if parent != CG else ""
            if (hierarchy == "" and name in ("", "unified")) or name == hierarchy:
                return d
        raise KeyError(hierarchy)


def _rmtree_cgroup(path: str, tries: int = 50) -> None:
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _rmtree_cgroup(entry.path, tries)
    for i in range(tries):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02 * (i + 1))
    os.rmdir(path)
