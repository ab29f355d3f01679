"""Replaces PyInstaller's bootstrap module of the same name in hako's build.

PyInstaller's version imports ctypes on *every* start (~3 ms) to make
ctypes.CDLL("libfoo.so") look in the bundle first. hako loads only the C
library of the process (``ctypes.CDLL(None)``), so the hook is not needed
and hot verbs that never touch ctypes do not pay for it.
"""


def install():
    pass
