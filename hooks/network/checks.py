"""What the host must provide, checked before anything starts: the helper
executable and a tun device the caller may open.
"""

from __future__ import annotations

import os

from hooks.network.common import ANN_DRIVER, DEFAULT_PATH, PACKAGES, NetworkError


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
