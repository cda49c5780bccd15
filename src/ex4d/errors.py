"""Exceptions raised for bad user input.

The CLI turns an :class:`InputError` into one line on stderr and exit status 2; an ``OSError`` (unwritable
folder, full disk) into one line and status 1; anything else is reported as an internal error (status 1, the
traceback only with ``--debug``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InputError", "InputWarning", "about", "load_failure", "option"]

# Marks an option named inside a message (see option()); a control character never found in paths or text.
_MARK = "\x1f"
_OPTION = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*)(?:=([^{_MARK}]*))?{_MARK}")


def option(name: str, value: object = None) -> str:
    """An option of the caller named inside an :class:`InputError` message, e.g. ``option("num_frames", 0)``.

    Why: the library knows its parameters (``num_frames``), a CLI user knows flags (``--num-frames``). The message
    keeps the name; ``str(exc)`` reads ``num_frames=0`` and the CLI renders ``--num-frames 0`` (``InputError.render``).
    """
    return f"{_MARK}{name}{'' if value is None else '=' + str(value)}{_MARK}"


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
        """The message with options as Python names (``num_frames=0``)."""
        return self.render(lambda name: None)

    def render(self, flag_of) -> str:
        """The message with each :func:`option` as ``flag_of(name)`` (e.g. ``--num-frames 0``); where that gives
        None, as the Python name (``num_frames=0``)."""
        text = str(self.args[0]) if self.args else ""

        def one(match: re.Match) -> str:
            name, value = match.group(1), match.group(2)
            flag = flag_of(name)
            if flag is None:
                return name if value is None else f"{name}={value}"
            return flag if value is None else f"{flag} {value}"

        return _OPTION.sub(one, text)

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
