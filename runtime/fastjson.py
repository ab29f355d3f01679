"""JSON for the hot verbs without ``import json``.

``json`` imports ``re`` (and with it enum, functools, collections): about
5 ms here, more than runc needs for a whole ``state``. Parsing drives the C
scanner ``_json`` that ``json`` itself uses, loaded on the first ``loads``
(an extension module: a dlopen, which ``state`` does not need since it
reads state.bin). Writing is plain Python. Output matches ``json.dumps``
(with ``indent``) for the types hako writes: dict, list, str, int, bool,
None (and finite floats).
"""

_scan = None


class _Context:
    """What _json.make_scanner reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"invalid JSON constant {name}")


_WS = " \t\n\r"


def loads(s: str | bytes) -> object:
    global _scan
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8")
    if _scan is None:
        import _json
        _scan = _json.make_scanner(_Context())
    i = 0
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at offset {e.value}") from None
    except SystemError:
        # the scanner raises json.decoder.JSONDecodeError only when json.decoder
        # is already imported (it looks in sys.modules); otherwise it fails so
        raise ValueError("invalid JSON") from None
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"extra data in JSON at offset {end}")
    return obj


#: json.dumps' escapes (ensure_ascii): the short forms, else \uXXXX
_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
        "\f": "\\f"}


def _enc(s: str) -> str:
    """A JSON string literal, as json.dumps writes it."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'  # nearly every string hako writes
    out = ['"']
    for ch in s:
        if " " <= ch <= "~":
            out.append(_ESC.get(ch, ch))
            continue
        short = _ESC.get(ch)
        if short is not None:
            out.append(short)
            continue
        n = ord(ch)
        if n > 0xFFFF:  # a surrogate pair, as json does
            n -= 0x10000
            out.append(f"\\u{0xD800 | (n >> 10):04x}\\u{0xDC00 | (n & 0x3FF):04x}")
        else:
            out.append(f"\\u{n:04x}")
    out.append('"')
    return "".join(out)


def dumps(obj: object, indent: int | str | None = None) -> str:
    parts: list[str] = []
    ind = " " * indent if isinstance(indent, int) else indent
    _encode(obj, parts, ind, 0)
    return "".join(parts)


def _encode(o: object, out: list[str], ind: str | None, level: int) -> None:
    if o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, str):
        out.append(_enc(o))
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        if o != o or o in (float("inf"), float("-inf")):
            raise ValueError("out of range float values are not JSON compliant")
        out.append(float.__repr__(o))
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k, v in o.items():
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
            if not first:
                out.append("," if ind is not None else ", ")
            first = False
            if ind is not None:
                out.append("\n" + ind * (level + 1))
            out.append(_enc(k))
            out.append(": ")
            _encode(v, out, ind, level + 1)
        if ind is not None:
            out.append("\n" + ind * level)
        out.append("}")
    elif isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(o):
            if i:
                out.append(",")
            if ind is not None:
                out.append("\n" + ind * (level + 1))
            else:
                out.append(" " if i else "")
            _encode(v, out, ind, level + 1)
        if ind is not None:
            out.append("\n" + ind * level)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
