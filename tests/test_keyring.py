"""The container's session keyring, for real, root and rootless: runc's
``_ses.<id>`` for the init and for exec, the caller's with --no-new-keyring.

Every runtime call is made from a process that first joins a session keyring
of its own (the marker), which only its possessors may see (permission
3f000000: nothing for its owner's uid). A container that kept the caller's
session keyring lists the marker in /proc/keys; one that joined
``_ses.<id>`` does not, and lists that instead. runc's default config masks
/proc/keys: the bundles here unmask it.
"""

from __future__ import annotations

import errno
import json
import os
import sys

import pytest

# joins a new session keyring named argv[1], visible to its possessors only,
# then execs the rest of argv (its own code: the oracle owes nothing to hako's)
MARK = """
import ctypes, os, sys
nr = {"x86_64": 250, "aarch64": 219}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
ring = libc.syscall(nr, 1, sys.argv[1].encode())  # KEYCTL_JOIN_SESSION_KEYRING
if ring < 0 or libc.syscall(nr, 5, ring, 0x3f000000) != 0:  # KEYCTL_SETPERM
    sys.exit("marker keyring: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[2], sys.argv[2:])
"""

KEYS = ["cat", "/proc/keys"]
SECCOMP_NO_KEYCTL = {"defaultAction": "SCMP_ACT_ALLOW",
                     "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}]}


def unmask_keys(cfg: dict) -> None:
    masked = cfg["linux"].get("maskedPaths") or []
    cfg["linux"]["maskedPaths"] = [p for p in masked if p != "/proc/keys"]


def marked(rt, mark: str, argv: list, **kw):
    """``argv`` (a runtime call) from a process whose session keyring is ``mark``."""
    return rt.run([sys.executable, "-c", MARK, mark, *argv], **kw)


def view(text: str, cid: str, marks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The /proc/keys lines about this test: (perm, uid, gid, type, name),
    the container's id written ID and the markers MARK<n>, sorted."""
    out = []
    for line in text.splitlines():
        f = line.split(None, 8)
        if len(f) < 9:
            continue
        name = f[8].rsplit(":", 1)[0]
        if name == f"_ses.{cid}":
            name = "_ses.ID"
        elif name in marks:
            name = f"MARK{marks.index(name)}"
        else:
            continue
        out.append((f[4], f[5], f[6], f[7], name))
    return sorted(out)


def scenario(rt, runtime: str, *, no_new_keyring: bool = False, patch=None) -> dict:
    """With ``runtime`` (hako or runc): what the init of a container sees
    (run in the foreground), then what an exec'd process in a running
    container sees. Each view: view()'s lines."""
    argv = rt.hako_argv if runtime == "hako" else rt.runc_argv
    flag = ["--no-new-keyring"] if no_new_keyring else []

    def patched(cfg: dict) -> None:
        unmask_keys(cfg)
        if patch is not None:
            patch(cfg)

    cid = rt.new_id()
    marks = (f"hako-test-init-{cid}", f"hako-test-exec-{cid}")
    r = marked(rt, marks[0], argv("run", *flag, "--bundle", rt.bundle(KEYS, patch=patched), cid))
    assert r.returncode == 0, f"{runtime} run: {r.stderr}"
    init = view(r.stdout, cid, marks)

    cid = rt.new_id()
    marks = (f"hako-test-init-{cid}", f"hako-test-exec-{cid}")
    bundle = rt.bundle(["sleep", "60"], patch=patched)
    r = marked(rt, marks[0], argv("run", "-d", *flag, "--bundle", bundle, cid))
    assert r.returncode == 0, f"{runtime} run -d: {r.stderr}"
    try:
        r = marked(rt, marks[1], argv("exec", cid, *KEYS))
        assert r.returncode == 0, f"{runtime} exec: {r.stderr}"
        state = None
        if runtime == "hako":
            state = json.loads((rt.state_dir / cid / "state.json").read_text())["hako"]
    finally:
        rt.run(argv("delete", "--force", cid))
    return {"init": init, "exec": view(r.stdout, cid, marks), "state": state}


def own_ring(rt) -> tuple[str, str, str, str, str]:
    """The init's _ses.<id> line: owned by the container's root; searchable
    by its owner's uid, or by others in a user namespace (runc's rule)."""
    perm = "3f130008" if rt.rootless else "3f1b0000"
    return (perm, "0", "0", "keyring", "_ses.ID")


def test_keyring_is_ses_id_for_init_and_exec(rt):
    got = scenario(rt, "hako")
    assert got["init"] == [own_ring(rt)]
    assert got["state"]["no_new_keyring"] is False
    if rt.rootless:
        # in a user namespace its owner may not search the init's keyring: exec
        # makes a new one of the same name (as runc)
        assert got["exec"] == sorted([own_ring(rt),
                                      ("3f130000", "0", "0", "keyring", "_ses.ID")])
    else:
        assert got["exec"] == [own_ring(rt)]  # the init's own, joined by name


def test_no_new_keyring_keeps_the_callers_keyring(rt):
    got = scenario(rt, "hako", no_new_keyring=True)
    mark = ("3f000000", "0", "0", "keyring")
    assert got["init"] == [(*mark, "MARK0")]
    assert got["exec"] == [(*mark, "MARK1")]  # recorded by create, honoured by exec
    assert got["state"]["no_new_keyring"] is True


def test_keyring_is_joined_before_seccomp_and_the_user_switch(rt):
    """keyctl denied by the container's seccomp profile, a non-root user (where
    one is mapped): the keyring is still joined, and owned by root."""
    def patch(cfg: dict) -> None:
        cfg["linux"]["seccomp"] = SECCOMP_NO_KEYCTL
        if not rt.rootless:
            cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    got = scenario(rt, "hako", patch=patch)
    assert got["init"] == [own_ring(rt)]
    assert own_ring(rt) in got["exec"]


@pytest.mark.parametrize("no_new_keyring", [False, True], ids=["default", "no-new-keyring"])
def test_keyring_matches_runc(rt, no_new_keyring):
    if not os.access(rt.runc_path, os.X_OK):
        pytest.skip(f"reference runtime runc not found at {rt.runc_path}")
    ours = scenario(rt, "hako", no_new_keyring=no_new_keyring)
    theirs = scenario(rt, "runc", no_new_keyring=no_new_keyring)
    for k in ("init", "exec"):
        assert ours[k] == theirs[k], f"{k}: hako {ours[k]} runc {theirs[k]}"



# runs argv[2:] under a seccomp filter that answers keyctl with errno argv[1]
DENY_KEYCTL = """
import os, sys
from runtime import seccomp
from runtime.syscalls import PR_SET_NO_NEW_PRIVS, SYS
rule = {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": int(sys.argv[1])}
SYS.prctl(PR_SET_NO_NEW_PRIVS, 1)  # unprivileged, a filter needs it
seccomp.prepare({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}).install(sc=SYS)
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.parametrize("err", [errno.EDQUOT, errno.ENOSYS], ids=["EDQUOT", "ENOSYS"])
def test_a_keyring_error_fails_create_and_enosys_does_not(rt, err):
    """keyctl failing for the whole runtime (a filter hako itself runs under):
    a kernel without keyrings (ENOSYS) starts the container as before; any
    other error fails it with one line naming the keyring, leaving nothing."""
    cid = rt.new_id()
    bundle = rt.bundle(["echo", "started"])
    r = rt.run([sys.executable, "-c", DENY_KEYCTL, str(err),
                *rt.hako_argv("run", "--bundle", bundle, cid)])
    if err == errno.ENOSYS:
        assert (r.returncode, r.stdout) == (0, "started\n"), r.stderr
        return
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"hako: run: session keyring _ses.{cid}: joining it: "
                        f"{os.strerror(err)} (create/run --no-new-keyring keeps the caller's)\n")
    assert not (rt.state_dir / cid).exists()
    r = rt.run([sys.executable, "-c", DENY_KEYCTL, str(err),
                *rt.hako_argv("run", "--no-new-keyring", "--bundle", bundle, cid)])
    assert (r.returncode, r.stdout) == (0, "started\n"), r.stderr  # no keyctl at all
