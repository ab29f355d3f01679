"""Signal names as runc accepts them: numbers, or names with or without
SIG, any case, and SIGRTMIN+n / SIGRTMAX-n. A table rather than the
``signal`` module, whose enum import the hot ``kill`` path need not pay for."""

from runtime.errors import HakoError

NAMES = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20,
    "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27,
    "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31, "UNUSED": 31,
}
RTMIN, RTMAX = 34, 64


def parse(raw: str) -> int:
    s = raw.strip()
    if s.isascii() and s.isdigit():
        n = int(s)
        if 1 <= n <= RTMAX:
            return n
        raise HakoError(f"invalid signal number {raw!r} (1 to {RTMAX})")
    name = s.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in NAMES:
        return NAMES[name]
    for base, val, sign in (("RTMIN", RTMIN, 1), ("RTMAX", RTMAX, -1)):
        if name == base:
            return val
        if name.startswith(base) and name[len(base):len(base) + 1] in "+-":
            off = name[len(base) + 1:]
            if off.isascii() and off.isdigit():
                n = val + int(off) * (1 if name[len(base)] == "+" else -1)
                if RTMIN <= n <= RTMAX:
                    return n
    raise HakoError(f"unknown signal {raw!r}")
