"""Exceptions raised for bad user input.

The CLI turns an :class:`InputError` into one line on stderr and exit status 2; an ``OSError`` (unwritable
folder, full disk) into one line and status 1; anything else is reported as an internal error (status 1, the
traceback only with ``--debug``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InputError", "InputWarning", "about", "load_failure"]


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


def load_failure(exc: BaseException) -> str:
    """A short reason for a failed ``np.load`` / ``torch.load`` of a user's file, for an error message.

    Why: both libraries answer a file that is not theirs with advice to load it unsafely (allow_pickle=True,
    weights_only=False) — the one thing a user must not do with a file of unknown origin.
    """
    text = " ".join(str(exc).split())
    if "pickled (object) data" in text:  # numpy: neither .npy nor .npz, so it guessed a pickle
        return "not an .npy/.npz file (numpy would have to unpickle it, which can run code: refused)"
    if "WeightsUnpickler error:" in text:  # torch weights_only: objects other than tensors and containers
        detail = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0].strip()
        return f"holds pickled objects other than tensors, refused without running them ({detail})"
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    if isinstance(exc, KeyError) or "invalid load key" in text:  # torch's legacy reader on a foreign file
        return f"not a PyTorch checkpoint: neither a zip archive nor a pickle ({type(exc).__name__}: {text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
