"""The one exception type the CLI turns into a one-line error and exit 1."""


class HakoError(Exception):
    """A failure the user can act on; str() is the whole message, one line."""

    def __init__(self, msg: str, code: int = 1) -> None:
        # one line whatever a message quotes (a config value may hold newlines)
        super().__init__(msg.replace("\r", "\\r").replace("\n", "\\n"))
        self.code = code


class ContainerNotExist(HakoError):
    def __init__(self, cid: str) -> None:
        super().__init__(f"container does not exist: {cid}")


def error_text(e: BaseException) -> str:
    """One line for any exception raised during setup."""
    if isinstance(e, OSError) and e.strerror:
        if len(e.args) == 2 and e.filename is None:
            return e.strerror  # our syscall layer: message already names the call
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}"
    return str(e) or type(e).__name__
