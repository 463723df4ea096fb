"""The base of every expected failure: bad input, a missing server or extra. The CLI prints
these as one line and exits non-zero; anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """A failure the user can fix; the message says what is wrong and, if it can, how."""


class MissingExtra(UserError):
    """An optional part of the project is not installed."""

    def __init__(self, extra: str, module: str | None) -> None:
        super().__init__(
            f"this needs the '{extra}' extra ({module or 'a module'} is missing): "
            f"pip install 'fraudstream[{extra}]'"
        )
