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
