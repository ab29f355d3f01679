"""The container's session keyring (runtime.procsetup.join_keyring) through the
recording fake: which keyctl calls, in which order, with which permission
bits; ENOSYS ignored, every other error one line naming the keyring. Then the
real syscalls, in a forked child (a session keyring is per process: pytest's
own must not change), and the choice create hands to the init."""

from __future__ import annotations

import errno
import os

import pytest

import forked
from fakes import FakeSyscalls
from runtime.errors import HakoError
from runtime.procsetup import KEY_OTH_SEARCH, KEY_USR_SEARCH, join_keyring
from runtime.syscalls import Syscalls

KEYCTL = ("join_session_keyring", "describe_key", "set_key_perm")


def keyctl_calls(sc: FakeSyscalls) -> list[tuple]:
    return [(c.name, *c.args) for c in sc.calls if c.name in KEYCTL]


def test_no_new_keyring_makes_no_call():
    sc = FakeSyscalls()
    join_keyring(None, sc, KEY_USR_SEARCH)
    assert sc.calls == []


@pytest.mark.parametrize("bits,perm", [
    (KEY_USR_SEARCH, 0x3F1B0000),  # no user namespace: search by the owner's uid
    (KEY_OTH_SEARCH, 0x3F130008),  # in a user namespace: search by others
])
def test_init_joins_then_adds_search_to_the_read_permission(bits, perm):
    sc = FakeSyscalls()
    join_keyring("_ses.c1", sc, bits)
    assert keyctl_calls(sc) == [("join_session_keyring", "_ses.c1"), ("describe_key", 0x1000),
                                ("set_key_perm", 0x1000, perm)]


def test_every_other_bit_is_kept():
    sc = FakeSyscalls()
    sc.key_description = "keyring;0;0;01020304;{name}"
    join_keyring("_ses.c1", sc, KEY_OTH_SEARCH)
    assert sc.named("set_key_perm")[0].args == (0x1000, 0x0102030C)


def test_exec_only_joins():
    sc = FakeSyscalls()
    join_keyring("_ses.c1", sc)
    assert keyctl_calls(sc) == [("join_session_keyring", "_ses.c1")]


def test_a_kernel_without_keyrings_is_no_error():
    sc = FakeSyscalls(fail={"join_session_keyring": OSError(errno.ENOSYS, "keyctl: nope")})
    join_keyring("_ses.c1", sc, KEY_USR_SEARCH)
    assert keyctl_calls(sc) == [("join_session_keyring", "_ses.c1")]


@pytest.mark.parametrize("call,err,words", [
    ("join_session_keyring", errno.EDQUOT, "joining it: Disk quota exceeded"),
    ("join_session_keyring", errno.EPERM, "joining it: Operation not permitted"),
    ("describe_key", errno.EACCES, "making it searchable: Permission denied"),
    # keyrings exist once one was joined: ENOSYS later is an error like any other
    ("describe_key", errno.ENOSYS, "making it searchable: Function not implemented"),
    ("set_key_perm", errno.EACCES, "making it searchable: Permission denied"),
])
def test_other_errors_are_one_line_naming_the_keyring(call, err, words):
    sc = FakeSyscalls(fail={call: OSError(err, f"keyctl: {os.strerror(err)}")})
    with pytest.raises(HakoError) as e:
        join_keyring("_ses.c1", sc, KEY_USR_SEARCH)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"session keyring _ses.c1: {words} "
                   f"(create/run --no-new-keyring keeps the caller's)")
    if call != "set_key_perm":
        assert sc.named("set_key_perm") == []  # no keyring left with half-set bits


@pytest.mark.parametrize("description", ["keyring;0;0", "keyring;0;0;zz;_ses.c1"])
def test_an_unreadable_description_is_refused(description):
    sc = FakeSyscalls()
    sc.key_description = description
    with pytest.raises(HakoError, match=r"^session keyring _ses\.c1: making it searchable: "):
        join_keyring("_ses.c1", sc, KEY_USR_SEARCH)
    assert sc.named("set_key_perm") == []


def test_real_keyctl_in_a_child():
    """The syscall layer against the kernel: join a named session keyring, read
    its permission, set one bit, read it back; a missing key is ENOKEY."""
    name = f"_ses.hako-unit-{os.getpid()}"

    def body(w: int) -> int:
        sc = Syscalls()
        serial = sc.join_session_keyring(name)
        typ, uid, gid, perm, desc = sc.describe_key(serial).split(";", 4)
        assert (typ, desc, int(uid), int(gid)) == ("keyring", name, os.geteuid(), os.getegid())
        sc.set_key_perm(serial, int(perm, 16) | KEY_OTH_SEARCH)
        after = int(sc.describe_key(serial).split(";")[3], 16)
        try:
            sc.describe_key(0x7FFFFFF0)
        except OSError as e:
            missing = e.errno
        else:
            missing = 0
        os.write(w, f"{int(perm, 16):x} {after:x} {missing}".encode())
        return 0

    res = forked.run(body)
    assert res.code == 0, res
    perm, after, missing = res.output.decode().split()
    assert int(after, 16) == int(perm, 16) | KEY_OTH_SEARCH
    assert int(perm, 16) & KEY_OTH_SEARCH == 0  # a new keyring: the bit was ours
    assert int(missing) in (errno.ENOKEY, errno.EACCES)


def test_real_join_with_the_same_name_finds_a_searchable_keyring():
    """What exec relies on: a second join of the name, by the owner, lands in
    the first keyring once it is searchable (runc's rule without a user
    namespace); a new keyring otherwise (with one)."""
    name = f"_ses.hako-unit-{os.getpid()}-again"

    def body(w: int) -> int:
        sc = Syscalls()
        first = sc.join_session_keyring(name)
        plain = sc.join_session_keyring(name)  # not searchable by its owner: a new one
        perm = int(sc.describe_key(plain).split(";")[3], 16)
        sc.set_key_perm(plain, perm | KEY_USR_SEARCH)
        again = sc.join_session_keyring(name)
        os.write(w, f"{first} {plain} {again}".encode())
        return 0

    res = forked.run(body)
    assert res.code == 0, res
    first, plain, again = res.output.split()
    assert first != plain and again == plain


def test_create_hands_the_choice_to_the_init(tmp_path):
    from runtime.create import Creation
    from runtime.default_spec import default_spec

    def planned(no_new_keyring: bool) -> Creation:
        c = Creation({}, "c1", str(tmp_path), pid_file=None, console_socket=None,
                     no_pivot=False, preserve_fds=0, detach=True, subreaper=False,
                     verb="create", no_new_keyring=no_new_keyring)
        c.spec = default_spec()
        c.root = str(tmp_path)
        c.plan_launch()
        return c

    assert planned(False).launch.keyring == "_ses.c1"
    assert planned(True).launch.keyring is None
