"""runtime/residency.py: which mappings the waiting init may let go of."""

from __future__ import annotations


from runtime import residency

SMAPS = b"""\
00400000-0041f000 r--p 00000000 fe:00 1234    /usr/bin/python3.11
Size:                124 kB
Rss:                 124 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw
0041f000-006d2000 r-xp 0001f000 fe:00 1234    /usr/bin/python3.11
Size:               2764 kB
Anonymous:             0 kB
00a5b000-00b9a000 rw-p 0065b000 fe:00 1234    /usr/bin/python3.11
Anonymous:          1276 kB
7f0000000000-7f0000002000 r--p 001d5000 fe:00 99   /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             8 kB
7f0000010000-7f0000020000 r--s 00000000 00:05 7    /dev/zero (deleted)
Anonymous:             0 kB
7f0000020000-7f0000040000 rw-p 00000000 00:00 0
Anonymous:           128 kB
7f0000040000-7f0000041000 r--p 00000000 00:00 0    [vvar]
Anonymous:             0 kB
7f0000050000-7f0000060000 r-xp 00000000 fe:00 98   /usr/lib/x86_64-linux-gnu/libc.so.6
Size:                 64 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
"""


def test_only_clean_private_read_only_file_mappings():
    assert residency.clean_file_mappings(SMAPS) == [
        (0x400000, 0x1F000),             # read-only data of the interpreter
        (0x41F000, 0x6D2000 - 0x41F000),  # its text
        (0x7F0000050000, 0x10000),       # libc's text
    ]  # not: writable data, RELRO with copied pages, shared, anonymous, [vvar]


def test_garbage_is_skipped():
    assert residency.clean_file_mappings(b"zzz-yyy r--p 0 0 0 /x\nAnonymous: 0 kB\n") == []
    assert residency.clean_file_mappings(b"") == []


def test_drop_calls_madvise_dontneed_on_each(monkeypatch):
    calls = []

    class Sc:
        def madvise(self, addr, length, advice):
            calls.append((addr, length, advice))
            if addr == 0x400000:
                raise OSError(1, "refused")  # best effort: the others still go

    monkeypatch.setattr("builtins.open", lambda *a, **k: __import__("io").BytesIO(SMAPS))
    residency.drop_clean_pages(Sc())
    # highest address first: the interpreter's own text (non-PIE, low) last
    assert [(a, adv) for a, _, adv in calls] == [(0x7F0000050000, 4), (0x41F000, 4),
                                                 (0x400000, 4)]


def test_madvise_under_a_seccomp_profile():
    allow, kill, errno = "SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_ERRNO"
    assert residency.safe_under(None) and residency.safe_under({})
    assert residency.safe_under({"defaultAction": allow})
    assert residency.safe_under({"defaultAction": errno})  # an error, ignored
    assert not residency.safe_under({"defaultAction": kill})
    assert residency.safe_under({"defaultAction": kill,
                                 "syscalls": [{"names": ["read", "madvise"], "action": allow}]})
    assert not residency.safe_under({"defaultAction": allow,
                                     "syscalls": [{"names": ["madvise"], "action": "SCMP_ACT_TRAP"}]})
    assert not residency.safe_under({"defaultAction": allow, "syscalls": [
        {"names": ["madvise"], "action": allow, "args": [{"index": 2, "value": 4, "op": "SCMP_CMP_EQ"}]}]})
    assert not residency.safe_under({"defaultAction": "SCMP_ACT_NOTIFY"})
