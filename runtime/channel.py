"""Sync messages between hako and its children: JSON lines over two pipes.

Pipes rather than a socketpair because ``import socket`` costs ~10 ms here,
and end-of-file on a pipe is exactly the signal we need: when every holder
of the other end is gone (the parent died, or the child died), the reader
sees EOF instead of waiting forever.
"""

from __future__ import annotations

import os

from runtime import fastjson  # json would import re: ~5 ms of create


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self._buf = b""

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        """(parent side, child side); each side closes the other's ends after fork."""
        a_r, b_w = os.pipe()
        b_r, a_w = os.pipe()
        return cls(a_r, a_w), cls(b_r, b_w)

    def send(self, **msg: object) -> None:
        data = (fastjson.dumps(msg) + "\n").encode()
        try:
            os.write(self.wfd, data)
        except BrokenPipeError:
            pass  # the reader is gone; it will find out from its own EOF

    def recv(self) -> dict | None:
        """The next message, or None at end of file."""
        while b"\n" not in self._buf:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return fastjson.loads(line)

    def fds(self) -> tuple[int, int]:
        return self.rfd, self.wfd

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.rfd = self.wfd = -1
