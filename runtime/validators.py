"""Small checks of config values that the schema cannot express, with the
one-line message every refusal has: "<json path>: must be ..., not <value>".
Shared by the seccomp and process-attribute validation."""

from runtime.errors import HakoError
from runtime.fastjson import dumps as _dumps


def shown(v) -> str:
    """A config value as the user wrote it (JSON), for messages."""
    try:
        return _dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def as_int(v, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise HakoError(f"{where}: must be an integer, not {shown(v)}")
    if not lo <= v <= hi:
        raise HakoError(f"{where}: {v} is out of range ({lo} to {hi})")
    return v


def as_uint(v, where: str, bits: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise HakoError(f"{where}: must be an unsigned integer, not {shown(v)}")
    if not 0 <= v < (1 << bits):
        raise HakoError(f"{where}: {v} is out of range (0 to {(1 << bits) - 1})")
    return v


def as_str(v, where: str) -> str:
    if not isinstance(v, str):
        raise HakoError(f"{where}: must be a string, not {shown(v)}")
    return v


def as_list(v, where: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise HakoError(f"{where}: must be an array, not {shown(v)}")
    return v


def as_obj(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise HakoError(f"{where}: must be an object, not {shown(v)}")
    return v


def number_list(text, where: str, what: str, limit: int) -> set[int]:
    """A kernel list of CPUs or nodes ("0-3,7", "0-7:2") as a set; "" is the
    empty set. ``limit``: the first number the kernel refuses."""
    text = as_str(text, where)
    cpus: set[int] = set()
    bad = HakoError(f'{where}: {text!r} is not a {what} list (like "0-3,7")')
    for part in text.replace(" ", "").split(","):
        if not part:
            if text.strip():
                raise bad
            continue
        rng, _, stride = part.partition(":")
        lo, dash, hi = rng.partition("-")
        if not (lo.isdigit() and lo.isascii() and (not dash or (hi.isdigit() and hi.isascii()))
                and (not stride or (stride.isdigit() and stride.isascii()))):
            raise bad
        a, b = int(lo), int(hi) if dash else int(lo)
        step = int(stride) if stride else 1
        if a > b or step < 1 or (stride and not dash):
            raise bad
        if b >= limit:
            raise HakoError(f"{where}: {what} {b} is beyond the kernel's limit ({limit - 1})")
        cpus.update(range(a, b + 1, step))
    return cpus
