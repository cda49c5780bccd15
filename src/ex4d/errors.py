"""Exceptions raised for bad user input.

The CLI turns an :class:`InputError` into one line on stderr and exit status 2; an ``OSError`` (unwritable
folder, full disk) into one line and status 1; anything else is reported as an internal error (status 1, the
traceback only with ``--debug``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InputError", "InputWarning", "about"]


class InputError(ValueError):
    """A user-supplied file, array or option is unusable; the message says which one and why.

    Attributes:
        argument: the Python argument the bad value came from (``"input_video"``, ``"depth"``, ``"cam"``, ...),
            or None when the message names it itself. The CLI shows it as the matching flag (``--input-video``).
    """

    def __init__(self, message: str, argument: str | None = None):
        super().__init__(message)
        self.argument = argument

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.argument}: {self.message}" if self.argument else self.message


class InputWarning(UserWarning):
    """Usable input that was changed on the way in (e.g. a very large video downscaled); the CLI prints one line."""


@contextmanager
def about(argument: str) -> Iterator[None]:
    """Attribute any :class:`InputError` raised inside the block to ``argument`` (unless already attributed).

    Why: low-level readers know the bad value but not which of the caller's arguments it came from.
    """
    try:
        yield
    except InputError as exc:
        if exc.argument is None:
            exc.argument = argument
        raise
