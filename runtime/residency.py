"""What the waiting container init keeps resident.

The init is a fork of ``create``: it maps the interpreter, libc and hako's
frozen modules, and has touched several megabytes of their code while
setting the container up. Then it blocks on exec.fifo, possibly for a long
time (engines create containers well before starting them), and at the end
it execs the user's program, which replaces all of it. Until then those
clean file pages are resident only because they were used once: they are
in the page cache anyway, and a page the init needs again after ``start``
is a minor fault away. Dropping them (MADV_DONTNEED on the private,
read-only file mappings that hold no private copy of anything) leaves the
init with its own memory only, less than runc's waiting init.

Never a page that holds data: a mapping that is writable, shared, not
backed by a file, or has anonymous (copied-on-write) pages, such as a
library's relocated RELRO segment, is left alone.
"""

MADV_DONTNEED = 4
#: seccomp actions under which the init's own madvise is harmless (an error
#: at worst); any other (kill, trap, trace, a user notification) is not
_HARMLESS = frozenset(("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_ERRNO"))


def safe_under(seccomp: dict | None) -> bool:
    """May the init call madvise once the container's seccomp filter is
    loaded? The action madvise resolves to must be harmless; a rule with
    argument conditions counts as not harmless (not worth evaluating)."""
    if not seccomp:
        return True
    for rule in seccomp.get("syscalls") or ():
        if "madvise" in (rule.get("names") or ()):
            return rule.get("action") in _HARMLESS and not rule.get("args")
    return seccomp.get("defaultAction") in _HARMLESS


def clean_file_mappings(smaps: bytes) -> list[tuple[int, int]]:
    """(start, length) of the mappings of /proc/self/smaps *smaps* that may go."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and b"-" in head[0]:
            # "start-end perms offset dev inode [path]" opens a mapping's block
            try:
                lo, hi = (int(x, 16) for x in head[0].split(b"-"))
                inode = int(head[4])
            except ValueError:
                current = None
                continue
            perms = head[1]
            path = head[5] if len(head) > 5 else b""
            ok = (inode != 0 and perms[1:2] == b"-" and perms[3:4] == b"p"
                  and path.startswith(b"/"))
            current = (lo, hi - lo) if ok else None
        elif current is not None and line.startswith(b"Anonymous:"):
            if line.split()[1] == b"0":
                out.append(current)
            current = None
    return out


def drop_clean_pages(sc) -> None:
    """Best effort: without /proc, or where madvise is refused, nothing changes."""
    try:
        with open("/proc/self/smaps", "rb") as f:
            smaps = f.read()
    except OSError:
        return
    # highest first: the (non-PIE) interpreter's text, which runs this loop,
    # goes last, so that little of it comes back before the init blocks
    for start, length in sorted(clean_file_mappings(smaps), reverse=True):
        try:
            sc.madvise(start, length, MADV_DONTNEED)
        except OSError:
            pass
